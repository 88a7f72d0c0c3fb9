"""Peak memory of (e) over N generated rows, in this (fresh) process.

    python benchmarks/pipeline_memory.py --rows 1000000 [--json]

The benchmark workload (workload.py), extended to ``rows / 10`` batches, is streamed into a SQLite file in a
temporary folder (never held in memory), then read back through the whole pipeline:
rows_from_cursor → map_rows → route → pack → request bodies, of which only the sizes are
kept. Peak memory is the process's maximum resident set size (VmHWM on Linux, where
getrusage's ru_maxrss would include the parent's peak; ru_maxrss elsewhere), so it covers
the whole run, imports and the SQLite load included. run_all.py starts one process
per row count so the figures do not share a heap.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline
from workload import EVENTS_PER_BATCH


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB."""
    # Linux carries ru_maxrss across fork and exec, so a child started by a larger parent
    # would report the parent's peak; VmHWM is the high-water mark of this process alone.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(rows: int) -> dict[str, float]:
    batches = -(-rows // EVENTS_PER_BATCH)
    with tempfile.TemporaryDirectory(prefix="mparticle-feed-bench-") as folder:
        db = pipeline.build_database(batches, Path(folder) / "rows.db")
        try:
            count = pipeline.row_count(db)
            start = time.perf_counter()
            requests = body_bytes = 0
            for request in pipeline.feed_requests(db, pipeline.routing_now(batches)):
                requests += 1
                body_bytes += len(request.body)
            seconds = time.perf_counter() - start
        finally:
            db.close()
    return {
        "rows": count,
        "requests": requests,
        "body_bytes": body_bytes,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate and send")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.rows)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['rows']:,.0f} rows → {result['requests']:,.0f} requests, "
            f"{result['body_bytes'] / 1e6:,.1f} MB of JSON in {result['seconds']:.1f} s "
            f"({result['rows'] / result['seconds']:,.0f} rows/s); "
            f"peak RSS {result['peak_rss_mb']:.1f} MB"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
