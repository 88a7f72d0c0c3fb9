"""(i) and (j): the same DuckDB rows read as Arrow and as a cursor, side by side.

    python benchmarks/arrow_source.py [--rows 100000] [--sync-rows 1000000] [--repeat 3]

The issue's workload (``pipeline.py``: custom events and purchases, one row per event) is
loaded into an in-memory DuckDB database. Then:

- (i0) ``map_rows`` over the DuckDB cursor (``connection.execute(query)``), ``route``,
  ``pack``, request bytes; (i) the same from ``connection.sql(query)`` (an Arrow stream:
  the Arrow engine). Both must send byte-identical bodies, checked before timing.
- (j0) and (j): the second run of ``sync`` over unchanged rows (custom events only), from
  the cursor and from the Arrow stream, each with its own state filled by a first run
  against a loopback fake server. Nothing is sent in the second run: the time is mapping,
  hashing and state look-ups.

Run alone or through ``run_all.py`` (section ``arrow_section``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline
from workload import make_batch_row

import mparticle_feed as mpf
from mparticle_feed import pipeline as mpf_pipeline
from mparticle_feed.testing import FakeEventsServer

QUERIES = {
    "custom_events": (pipeline.CUSTOM_COLUMNS, pipeline.CUSTOM_MAPPING),
    "purchases": (pipeline.PURCHASE_COLUMNS, pipeline.PURCHASE_MAPPING),
}
READER_BATCH = 10_000


def _arrow_type(pa: Any, column: str) -> Any:
    if column == "newsletter":
        return pa.bool_()
    if column in ("lifetime_value", "total"):
        return pa.float64()
    if column in ("age", "timestamp_ms", "position", "duration_ms"):
        return pa.int64()
    return pa.string()


def build_duckdb(rows: int) -> Any:
    """The workload's first ``rows`` rows (7 custom events and 3 purchases a user) in DuckDB."""
    import duckdb
    import pyarrow as pa

    batches = -(-rows // 10)
    connection = duckdb.connect()
    for table, generate in (
        ("custom_events", pipeline.custom_rows),
        ("purchases", pipeline.purchase_rows),
    ):
        columns, _ = QUERIES[table]
        schema = pa.schema([(name, _arrow_type(pa, name)) for name in columns])
        generated = generate(make_batch_row(index) for index in range(batches))
        chunks = []
        while chunk := list(itertools.islice(generated, 50_000)):
            chunks.append(
                pa.RecordBatch.from_pylist(
                    [dict(zip(columns, row, strict=True)) for row in chunk], schema
                )
            )
        loaded = pa.Table.from_batches(chunks, schema)  # noqa: F841 - read by DuckDB by name
        connection.execute(f"CREATE TABLE {table} AS SELECT * FROM loaded")
    return connection


def _query(table: str) -> str:
    return f"SELECT * FROM {table} ORDER BY event_id"


def cursor_source(connection: Any, table: str) -> Any:
    return connection.cursor().execute(_query(table))


def arrow_source(connection: Any, table: str) -> Any:
    return connection.cursor().sql(_query(table)).to_arrow_reader(READER_BATCH)


def requests(connection: Any, source: Callable[[Any, str], Any], now: datetime) -> list[bytes]:
    runs = [
        mpf.map_rows(source(connection, table), mapping) for table, (_, mapping) in QUERIES.items()
    ]
    bodies = []
    for item in mpf_pipeline.pack(mpf_pipeline.route(itertools.chain(*runs), now=now)):
        if not isinstance(item, mpf_pipeline.Request):
            raise SystemExit(f"a row was turned away: {item}")
        bodies.append(item.body)
    if any(run.rows_rejected for run in runs):
        raise SystemExit("rows were rejected")
    return bodies


def median_cpu(contenders: list[tuple[str, Callable[[], object]]], repeat: int) -> dict[str, float]:
    """Median CPU seconds of each callable (the machine may be shared); interleaved."""
    for _, run in contenders:
        run()
    times: dict[str, list[float]] = {label: [] for label, _ in contenders}
    for _ in range(repeat):
        for label, run in contenders:
            gc.collect()
            start = time.process_time()
            run()
            times[label].append(time.process_time() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def rows_to_bytes(rows: int, repeat: int) -> tuple[dict[str, float], int, str]:
    connection = build_duckdb(rows)
    count = sum(connection.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in QUERIES)
    now = pipeline.routing_now(-(-rows // 10))
    expected = requests(connection, cursor_source, now)
    if requests(connection, arrow_source, now) != expected:
        raise SystemExit("(i) and (i0) do not send byte-identical bodies")
    medians = median_cpu(
        [
            ("i0", lambda: requests(connection, cursor_source, now)),
            ("i", lambda: requests(connection, arrow_source, now)),
        ],
        repeat,
    )
    note = f"{len(expected):,} request bodies, byte-identical"
    return medians, count, note


def second_sync(rows: int, repeat: int) -> tuple[dict[str, float], int]:
    connection = build_duckdb(rows)
    count = connection.execute("SELECT count(*) FROM custom_events").fetchone()[0]
    now = pipeline.routing_now(-(-rows // 10))
    mapping = QUERIES["custom_events"][1]
    seconds: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as directory,
        FakeEventsServer(now=lambda: now) as server,
        # Pacing off: the first run only fills the state; the timed second run sends nothing.
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, rate_limit=None) as client,
    ):
        for label, source in (("j0", cursor_source), ("j", arrow_source)):
            state = Path(directory) / f"{label}.sqlite"
            first = mpf.sync(
                source(connection, "custom_events"), mapping, client, state=state, name="e", now=now
            )
            if first.sent != count:
                raise SystemExit(f"({label}) first run sent {first.sent} of {count} rows")

            def again(label: str = label, source: Any = source, state: Path = state) -> None:
                report = mpf.sync(
                    source(connection, "custom_events"),
                    mapping,
                    client,
                    state=state,
                    name="e",
                    now=now,
                )
                if report.unchanged != count:
                    raise SystemExit(
                        f"({label}) second run: {report.unchanged} of {count} unchanged"
                    )

            seconds.update(median_cpu([(label, again)], repeat))
    return seconds, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--sync-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    medians, count, note = rows_to_bytes(args.rows, args.repeat)
    print(f"rows → request bytes, {count:,} rows ({note}), CPU s, median of {args.repeat}")
    for label, value in medians.items():
        print(f"  ({label}) {value:.3f} s, {count / value:,.0f} rows/s")
    print(f"  (i0) / (i): {medians['i0'] / medians['i']:.2f}x (target >= 5)")
    if args.sync_rows:
        seconds, synced = second_sync(args.sync_rows, args.repeat)
        print(f"second sync over {synced:,} unchanged rows, CPU s")
        for label, value in seconds.items():
            print(f"  ({label}) {value:.3f} s")
        print(f"  (j0) / (j): {seconds['j0'] / seconds['j']:.2f}x (target >= 4)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
