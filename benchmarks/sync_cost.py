"""(n) What a sync costs beyond its rows: CPU of a sync with a state file against the bare pipeline.

    python benchmarks/sync_cost.py [--batches N] [--repeat N] [--profile first|second]

The rows of (e) (custom events and purchases, in a SQLite file) go through

- (n0) the bare pipeline: ``map_rows`` → ``route`` → ``pack`` to request bodies, as (e);
- (n1) a first ``sync`` of each table with a fresh state file (outbox, state entries,
  duplicate-key set), delivered by an ``EventsClient`` (4 workers, no pacing) to a
  ``FakeEventsServer`` that runs in a child process, so its CPU is not counted;
- (n2) a second ``sync`` against the same state file: every row unchanged, nothing sent;
- (n3) a ``sync`` without a state (``state=None``), delivered as (n1): no outbox, no
  entries, no digests. Not a target: it shows what delivery alone costs, so (n1) less (n3)
  is what the state (exactly-once and the later runs' skipping) costs.

Each figure is the CPU time of this process (the client's threads included: delivery is
part of a sync; the sink's is not), median of ``--repeat``, the three interleaved; the
calling thread's share is printed beside it (the rest is the client's worker threads). Garbage collection's share is timed with
``gc.callbacks`` around the same runs. ``--profile`` prints a cProfile of one run instead.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import inspect
import multiprocessing
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline

import mparticle_feed as mpf


def _serve(conn: Connection) -> None:
    from mparticle_feed.testing import FakeEventsServer

    # The sink checks nothing and answers 202: its CPU is its own process's, not counted.
    with FakeEventsServer(api_key="bench-key", api_secret="bench-secret", validate=False) as fake:
        conn.send(fake.url)
        conn.recv()


@contextmanager
def running_sink() -> Iterator[str]:
    """A FakeEventsServer in a child process; yields its base URL."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(theirs,), daemon=True)
    process.start()
    try:
        yield str(ours.recv())
    finally:
        ours.send("stop")
        process.join(10)


def _client(url: str) -> mpf.EventsClient:
    options: dict[str, Any] = {"base_url": url, "max_workers": 4}
    if "rate_limit" in inspect.signature(mpf.EventsClient).parameters:
        options["rate_limit"] = None  # pacing off: this measures CPU, not the account's limit
    return mpf.EventsClient("bench-key", "bench-secret", **options)


class GcTimer:
    """Time spent in garbage collection while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            self.seconds += time.process_time() - self._started
            self.collections += 1

    @contextmanager
    def installed(self) -> Iterator[GcTimer]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def bare(db_path: Path, now: datetime) -> Callable[[], int]:
    def run() -> int:
        db = pipeline.connect(db_path)
        try:
            return len(pipeline.variant_e_pipeline(db, now))
        finally:
            db.close()

    return run


def syncing(db_path: Path, state: Path | None, url: str, now: datetime) -> Callable[[], int]:
    """Both tables synced with ``state`` (None: without one); returns how many requests were
    sent."""

    def run() -> int:
        db = pipeline.connect(db_path)
        requests = 0
        try:
            with _client(url) as client:
                for name, query, mapping in (
                    ("custom", pipeline.CUSTOM_QUERY, pipeline.CUSTOM_MAPPING),
                    ("purchases", pipeline.PURCHASE_QUERY, pipeline.PURCHASE_MAPPING),
                ):
                    report = mpf.sync(
                        db.execute(query), mapping, client, state=state, name=name, now=now
                    )
                    if not report.ok or report.failed or report.pending:
                        raise SystemExit(f"the benchmark's sync failed: {report.summary()}")
                    requests += report.requests_sent
        finally:
            db.close()
        return requests

    return run


#: What each run is, in the order they take turns.
LABELS = {
    "n0": "bare pipeline",
    "n1": "first sync",
    "n2": "second sync",
    "n3": "sync without a state",
}


def _cpu(run: Callable[[], int], timer: GcTimer) -> tuple[float, float, float, int]:
    """CPU seconds of one run, the part spent collecting garbage, the part of this (the
    calling) thread, and the run's result. The rest is the client's worker threads."""
    gc.collect()
    before_gc = timer.seconds
    start, start_thread = time.process_time(), time.thread_time()
    result = run()
    return (
        time.process_time() - start,
        timer.seconds - before_gc,
        time.thread_time() - start_thread,
        result,
    )


def measure(batches: int, repeat: int) -> dict[str, Any]:
    now = pipeline.routing_now(batches)
    with tempfile.TemporaryDirectory(prefix="mparticle-feed-sync-cost-") as folder:
        db_path = Path(folder) / "rows.db"
        pipeline.build_database(batches, db_path).close()
        with pipeline.connect(db_path) as db:
            rows = pipeline.row_count(db)
        seconds: dict[str, list[float]] = {label: [] for label in LABELS}
        gc_seconds: dict[str, list[float]] = {label: [] for label in LABELS}
        main_seconds: dict[str, list[float]] = {label: [] for label in LABELS}
        sent = {"n1": 0, "n2": 0, "n3": 0}
        timer = GcTimer()
        with running_sink() as url, timer.installed():
            bare(db_path, now)()  # warm-up: imports, compiled mappings
            for number in range(repeat):
                state = Path(folder) / f"state-{number}.db"
                for label, run in (
                    ("n0", bare(db_path, now)),
                    ("n1", syncing(db_path, state, url, now)),
                    ("n2", syncing(db_path, state, url, now)),
                    ("n3", syncing(db_path, None, url, now)),
                ):
                    cpu, in_gc, in_main, result = _cpu(run, timer)
                    seconds[label].append(cpu)
                    gc_seconds[label].append(in_gc)
                    main_seconds[label].append(in_main)
                    if label in sent:
                        sent[label] = result
    if sent["n3"] != sent["n1"]:
        raise SystemExit(f"(n3) sent {sent['n3']} requests where (n1) sent {sent['n1']}")
    medians = {label: statistics.median(values) for label, values in seconds.items()}
    gc_medians = {label: statistics.median(values) for label, values in gc_seconds.items()}
    main_medians = {label: statistics.median(values) for label, values in main_seconds.items()}
    return {
        "rows": rows,
        "seconds": medians,
        "gc_seconds": gc_medians,
        "main_seconds": main_medians,
        "requests_first": sent["n1"],
        "requests_second": sent["n2"],
        "requests_stateless": sent["n3"],
        "first_ratio": medians["n1"] / medians["n0"],
        "second_ratio": medians["n2"] / medians["n0"],
        "stateless_ratio": medians["n3"] / medians["n0"],
    }


def profile(batches: int, which: str, top: int) -> None:
    now = pipeline.routing_now(batches)
    with tempfile.TemporaryDirectory(prefix="mparticle-feed-sync-cost-") as folder:
        db_path = Path(folder) / "rows.db"
        pipeline.build_database(batches, db_path).close()
        state = Path(folder) / "state.db"
        with running_sink() as url:
            bare(db_path, now)()
            run = syncing(db_path, state, url, now)
            if which == "second":
                run()
            profiler = cProfile.Profile()
            profiler.runcall(run)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2_000, help="workload batches (2,000)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--profile", choices=("first", "second"), help="profile one run instead")
    parser.add_argument("--top", type=int, default=30, help="functions the profile lists")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args.batches, args.profile, args.top)
        return 0
    result = measure(args.batches, args.repeat)
    s, g, m = result["seconds"], result["gc_seconds"], result["main_seconds"]
    print(
        f"rows: {result['rows']:,}; requests: first run {result['requests_first']:,}, "
        f"second run {result['requests_second']:,}"
    )
    for label, what in LABELS.items():
        print(
            f"({label}) {what}: {s[label]:.3f} CPU s (calling thread {m[label]:.3f} s, "
            f"client workers {max(s[label] - m[label], 0.0):.3f} s), gc {g[label]:.3f} s "
            f"({g[label] / s[label]:.0%})"
        )
    print(f"(n1)/(n0) = {result['first_ratio']:.2f} (target <= 1.5)")
    print(f"(n2)/(n0) = {result['second_ratio']:.2f} (target <= 0.9)")
    print(
        f"(n3)/(n0) = {result['stateless_ratio']:.2f} (no target: delivery alone; the state "
        f"adds (n1)-(n3) = {(s['n1'] - s['n3']) / s['n0']:.2f} of (n0))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
