"""Sync page views from a SQLite warehouse as custom events, incrementally.

Runs offline: it starts a loopback FakeEventsServer in place of mParticle. Against the
real API, build the client with your key and secret instead of the fake's.
"""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mparticle_feed as mpf
from mparticle_feed.testing import FakeEventsServer

now = datetime.now(timezone.utc)
folder = Path(tempfile.mkdtemp())
db = sqlite3.connect(folder / "warehouse.sqlite")
db.execute("CREATE TABLE page_views (view_id TEXT, user_id TEXT, viewed_at TEXT, page TEXT)")
db.executemany(
    "INSERT INTO page_views VALUES (?, ?, ?, ?)",
    [
        (f"v{n}", f"user-{n % 5}", (now - timedelta(hours=n)).isoformat(), f"/page/{n % 3}")
        for n in range(50)
    ],
)

mapping = mpf.CustomEventMapping(
    primary_key="view_id",
    user_identities={"customer_id": "user_id"},
    event_name=mpf.Constant("Page Viewed"),
    custom_event_type=mpf.Constant("navigation"),
    timestamp_unixtime_ms="viewed_at",
    custom_attributes={"page": "page"},
)

with (
    FakeEventsServer() as server,
    mpf.EventsClient("test-key", "test-secret", base_url=server.url) as client,
):
    state = folder / "state.sqlite"
    first = mpf.sync(
        db.execute("SELECT * FROM page_views"), mapping, client, state=state, name="views"
    )
    print(first.summary())
    db.execute("UPDATE page_views SET page = '/changed' WHERE view_id = 'v7'")
    second = mpf.sync(
        db.execute("SELECT * FROM page_views"), mapping, client, state=state, name="views"
    )
    print(second.summary())
    assert first.sent == 50
    assert second.sent == 1
    assert second.unchanged == 49
