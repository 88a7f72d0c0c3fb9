"""Peak memory and speed of a whole ``sync`` with a state file, in this (fresh) process.

    python benchmarks/sync_memory.py --rows 1000000 [--source sqlite|arrow] [--json]

N generated rows (one custom event each, three consecutive rows per user) are written to a
SQLite file in a temporary folder, then synced with a state file — outbox, state entries,
duplicate-key set and all — by an EventsClient to a loopback sink that answers 202 and
keeps nothing (so the figure is the sync's, not the sink's). With ``--source arrow`` they go
to a DuckDB file instead, and the sync reads the query as a DuckDB relation: the Arrow
engine, its slice records included. Peak memory is the process's high-water mark (VmHWM on
Linux, ru_maxrss elsewhere), imports and the load included. run_all.py starts one process
per row count so the figures do not share a heap.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline_memory import peak_rss_mb

from mparticle_feed import CustomEventMapping, EventsClient, sync
from mparticle_feed._mapping.sources import Constant

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
MAPPING = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user", "email": "email"},
    event_name=Constant("Page Viewed"),
    timestamp_unixtime_ms="ts",
    custom_attributes={"page": "page", "referrer": "referrer"},
)


class _Sink(BaseHTTPRequestHandler):
    """Reads each request and answers 202 with mParticle's empty body; keeps nothing."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _rows(count: int) -> Iterator[tuple[Any, ...]]:
    base_ms = int(NOW.timestamp() * 1000) - 3_600_000
    for n in range(count):
        user = n // 3
        yield (
            f"r{n}",
            f"u{user}",
            f"user{user}@example.com",
            base_ms + n,
            f"/products/{n % 997}",
            "https://example.com/" if n % 2 else None,
        )


@contextmanager
def _source(folder: Path, rows: int, kind: str) -> Iterator[Any]:
    """The generated rows as a query over a database in ``folder``: an SQLite cursor, or a
    DuckDB relation (Arrow), in insertion order either way."""
    if kind == "sqlite":
        db = sqlite3.connect(folder / "rows.db")
        try:
            db.execute("CREATE TABLE views (id, user, email, ts, page, referrer)")
            db.executemany("INSERT INTO views VALUES (?, ?, ?, ?, ?, ?)", _rows(rows))
            db.commit()
            yield db.execute("SELECT * FROM views ORDER BY rowid")
        finally:
            db.close()
        return
    import duckdb

    path = str(folder / "rows.duckdb")
    # Loaded by another process, so this one's peak is the sync's (DuckDB keeps the memory
    # a load used): the rows _rows generates, written by DuckDB itself.
    base_ms = int(NOW.timestamp() * 1000) - 3_600_000
    load = (
        "import duckdb, sys\n"
        "with duckdb.connect(sys.argv[1]) as db:\n"
        "    db.execute(\"CREATE TABLE views AS SELECT 'r' || n AS id, 'u' || (n // 3) AS user, "
        f"'user' || (n // 3) || '@example.com' AS email, {base_ms} + n AS ts, "
        "'/products/' || (n % 997) AS page, "
        "CASE WHEN n % 2 = 1 THEN 'https://example.com/' END AS referrer "
        f'FROM range({rows}) t(n) ORDER BY n")\n'
    )
    subprocess.run([sys.executable, "-c", load, path], check=True)
    db = duckdb.connect(path, read_only=True)
    try:
        # DuckDB keeps insertion order for a plain scan (preserve_insertion_order).
        yield db.sql("SELECT * FROM views")
    finally:
        db.close()


def measure(rows: int, source: str = "sqlite") -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory(prefix="mparticle-feed-bench-") as folder,
        _source(Path(folder), rows, source) as query,
    ):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            with EventsClient(
                "bench-key",
                "bench-secret",
                base_url=f"http://127.0.0.1:{server.server_address[1]}",
                max_workers=4,
                rate_limit=None,  # memory, not pacing: 333,334 batches at 270/s take 20 min
            ) as client:
                start = time.perf_counter()
                report = sync(
                    query, MAPPING, client, state=Path(folder) / "state.db", name="views", now=NOW
                )
                seconds = time.perf_counter() - start
        finally:
            server.shutdown()
            server.server_close()
    if not report.ok or report.sent != rows:
        msg = f"the benchmark's sync did not send every row: {report.summary()}"
        raise SystemExit(msg)
    return {
        "rows": report.rows_in,
        "requests": report.requests_sent,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows (default 1,000,000)")
    parser.add_argument(
        "--source", choices=("sqlite", "arrow"), default="sqlite", help="what the rows come from"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    result = measure(args.rows, args.source)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"rows:        {result['rows']:,} in {result['requests']:,} requests")
    print(f"elapsed:     {result['seconds']:.1f} s")
    print(f"throughput:  {result['rows'] / result['seconds']:,.0f} rows/s")
    print(f"peak RSS:    {result['peak_rss_mb']:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
