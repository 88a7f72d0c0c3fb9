"""Keep mParticle profiles in step with a users table: only changed attributes are sent,
and attributes that became NULL are sent in ``deleted_user_attributes``.

Runs offline against a loopback FakeEventsServer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mparticle_feed as mpf
from mparticle_feed.testing import FakeEventsServer

users = [
    {"user_id": "u1", "email": "ada@example.com", "plan": "pro", "city": "London"},
    {"user_id": "u2", "email": "grace@example.com", "plan": "free", "city": "New York"},
]
mapping = mpf.UserAttributeMapping(
    primary_key="user_id",
    user_identities={"customer_id": "user_id", "email": "email"},
    user_attributes={"plan": "plan", "$City": "city"},
)
state = Path(tempfile.mkdtemp()) / "state.sqlite"

with (
    FakeEventsServer() as server,
    mpf.EventsClient("test-key", "test-secret", base_url=server.url) as client,
):
    print(mpf.sync(users, mapping, client, state=state, name="profiles").summary())
    users[0]["plan"] = "enterprise"  # one attribute changes
    users[1]["city"] = None  # one attribute disappears
    report = mpf.sync(users, mapping, client, state=state, name="profiles")
    print(report.summary())
    for batch in server.requests[-1].batches or ():
        who = batch.user_identities.customer_id if batch.user_identities else None
        print(who, batch.user_attributes, batch.deleted_user_attributes)
    assert report.sent == 2
