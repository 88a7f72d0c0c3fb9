"""Map generated order rows into batches and report throughput and peak memory.

    python benchmarks/map_rows_memory.py [--rows N] [--sqlite] [--serialise]

Rows come from a generator (or, with --sqlite, from a temporary SQLite table read through
rows_from_cursor), so nothing but the current batch is ever held. Peak memory is the
process's maximum resident set size (resource.getrusage); the target (benchmarks/README.md) is under 150 MB for
1,000,000 rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mparticle_feed import dumps
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.sources import Attributes, Constant
from mparticle_feed._mapping.spec import CommerceEventMapping
from mparticle_feed._source.rows import rows_from_cursor

MAPPING = CommerceEventMapping(
    primary_key="order_id",
    timezone="UTC",
    user_identities={"customer_id": "customer_id", "email": "email"},
    timestamp_unixtime_ms="ordered_at",
    currency_code=Constant("USD"),
    product_action={
        "action": Constant("purchase"),
        "transaction_id": "order_id",
        "total_amount": "total",
        "products": "products",
    },
    custom_attributes=Attributes(columns={"channel": "channel"}),
)

COLUMNS = ("order_id", "customer_id", "email", "ordered_at", "total", "channel", "products")


def generated_rows(count: int) -> Iterator[dict[str, Any]]:
    """Orders of 1-3 products; each customer places 1-4 consecutive orders."""
    base_ms = 1_700_000_000_000
    for n in range(count):
        customer = n // 3
        items = n % 3 + 1
        products = json.dumps(
            [
                {"id": f"SKU-{(n + i) % 500}", "name": "Item", "price": 9.5, "quantity": i + 1}
                for i in range(items)
            ]
        )
        yield {
            "order_id": n,
            "customer_id": customer,
            "email": f"user{customer}@example.com",
            "ordered_at": base_ms + n * 1000,
            "total": 9.5 * items,
            "channel": "web" if n % 2 else "app",
            "products": products,
        }


def sqlite_rows(count: int, directory: Path) -> Iterator[dict[str, Any]]:
    db = sqlite3.connect(directory / "orders.db")
    db.execute(f"CREATE TABLE orders ({', '.join(COLUMNS)})")
    db.executemany(
        f"INSERT INTO orders VALUES ({', '.join('?' * len(COLUMNS))})",
        (tuple(row[c] for c in COLUMNS) for row in generated_rows(count)),
    )
    db.commit()
    yield from rows_from_cursor(db.execute("SELECT * FROM orders ORDER BY order_id"))
    db.close()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows to map (default 1,000,000)"
    )
    parser.add_argument("--sqlite", action="store_true", help="read the rows from a SQLite table")
    parser.add_argument("--serialise", action="store_true", help="also dumps() every batch")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        rows = sqlite_rows(args.rows, Path(tmp)) if args.sqlite else generated_rows(args.rows)
        start = time.perf_counter()
        run = map_rows(rows, MAPPING)
        batches = events = size = 0
        for sourced in run:
            batches += 1
            events += len(sourced.event_rows)
            if args.serialise:
                size += len(dumps(sourced.batch))
        elapsed = time.perf_counter() - start

    assert run.rows_in == run.rows_mapped + run.rows_rejected
    print(
        f"rows:        {run.rows_in:,} ({run.rows_mapped:,} mapped, {run.rows_rejected:,} rejected)"
    )
    print(f"batches:     {batches:,} holding {events:,} events")
    if args.serialise:
        print(f"serialised:  {size / 1e6:,.1f} MB of JSON")
    print(f"elapsed:     {elapsed:.1f} s")
    print(f"throughput:  {run.rows_in / elapsed:,.0f} rows/s")
    peak = peak_rss_mb()
    print(f"peak RSS:    {peak:.1f} MB")
    return 0 if peak < 150 else 1


if __name__ == "__main__":
    raise SystemExit(main())
