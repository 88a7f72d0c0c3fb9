"""Backfill a year of events to /v2/bulkevents/historical, reviewing the plan first.

``plan`` shows the exact requests without sending; ``plan.send`` then delivers those very
bytes. Runs offline against a loopback FakeEventsServer.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import mparticle_feed as mpf
from mparticle_feed.testing import FakeEventsServer

now = datetime.now(timezone.utc)
rows = [
    {
        "id": f"e{n}",
        "user": f"user-{n % 40}",
        "at": now - timedelta(days=30 + n % 335, minutes=n),
        "kind": "signup" if n % 10 == 0 else "login",
    }
    for n in range(2000)
]
mapping = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name="kind",
    timestamp_unixtime_ms="at",
)

reviewed = mpf.plan(rows, mapping, historical_only=True, now=now)
print(reviewed)  # what would be sent, where, and what was turned away
with (
    FakeEventsServer() as server,
    mpf.EventsClient("test-key", "test-secret", base_url=server.url) as client,
):
    report = reviewed.send(client)
    # The very bytes reviewed; requests of different users may arrive in any order.
    assert sorted(r.body for r in server.requests) == sorted(r.body for r in reviewed.requests)
print(report.summary())
assert report.historical_rows() == 2000
