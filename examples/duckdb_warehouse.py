"""Sync purchases from a DuckDB warehouse as commerce events; products come from JSON.

Runs offline against a loopback FakeEventsServer. Needs ``pip install duckdb``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import duckdb

import mparticle_feed as mpf
from mparticle_feed.testing import FakeEventsServer

now = datetime.now(timezone.utc)
con = duckdb.connect()
con.execute(
    "CREATE TABLE orders (order_id VARCHAR, email VARCHAR, ordered_at TIMESTAMPTZ, "
    "revenue DOUBLE, products VARCHAR)"
)
for n in range(20):
    products = [{"id": f"SKU-{n % 4}", "name": "Shoe", "price": 50.0, "quantity": 1 + n % 2}]
    con.execute(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        [
            f"o{n}",
            f"buyer{n % 6}@example.com",
            now - timedelta(days=n * 3),
            50.0 * (1 + n % 2),
            json.dumps(products),
        ],
    )

mapping = mpf.CommerceEventMapping(
    primary_key="order_id",
    user_identities={"email": "email"},
    timestamp_unixtime_ms="ordered_at",
    currency_code=mpf.Constant("EUR"),
    product_action={
        "action": mpf.Constant("purchase"),
        "transaction_id": "order_id",
        "total_amount": "revenue",
        "products": "products",
    },
)

cursor = con.cursor()
cursor.execute("SELECT * FROM orders ORDER BY email, ordered_at")
with (
    FakeEventsServer() as server,
    mpf.EventsClient("test-key", "test-secret", base_url=server.url) as client,
):
    report = mpf.sync(cursor, mapping, client)
print(report.summary())
assert report.ok
assert report.historical_rows() > 0
assert report.live_rows() > 0
