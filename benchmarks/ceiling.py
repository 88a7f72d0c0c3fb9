"""Delivery at the account's ceiling (issue 13): pacing against a rate limit, and full batches.

    python benchmarks/ceiling.py [--batches N] [--rates 270,1000] [--contrast]

- **Delivery**: ``EventsClient.upload`` of the workload's batches (10 events each, one user
  each) to a loopback ``FakeEventsServer`` in its own process that enforces a token bucket
  of N batches a second (burst N) and answers 429 with ``Retry-After`` beyond it. The
  client paces to N (at 270 that is its default). Figures: batches a second at the sink
  (first request to last acceptance) as a share of N, 429s as a share of requests, the
  upload's wall time against the ideal ``batches / N``; every batch must be accepted
  exactly once. ``--contrast`` adds the same upload without pacing (the old behaviour).
- **Events per batch**: 5,000 users x 10 events mapped with ``map_rows`` in four row
  orders (by user; by time, each user's events in a session; at random; each user's rows
  shuffled within blocks of 1,000 rows), with the window off (0) and at its default, and the
  time-ordered rows with other windows beside the peak memory the mapping took.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline
import variants
import workload

import mparticle_feed as mpf
from mparticle_feed._mapping.regroup import DEFAULT_GROUP_WINDOW

API_KEY = "bench-key"
API_SECRET = "bench-secret"
USERS = 5_000
EVENTS_PER_USER = 10
BLOCK_ROWS = 1_000
ORDERS = ("by user", "by time", "at random", "blocks of 1,000")

MAPPING = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name="name",
    timestamp_unixtime_ms="at",
    custom_attributes={"screen": "screen"},
)


# --- delivery ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    rate: float
    paced: bool
    batches: int
    seconds: float
    requests: int
    limited: int
    exactly_once: bool

    #: The sink's clock from the first request to the last accepted one.
    span: float

    @property
    def achieved(self) -> float:
        """Batches a second as the account sees them (client start-up left out)."""
        return self.batches / self.span

    @property
    def share_of_rate(self) -> float:
        return self.achieved / self.rate

    @property
    def ideal_seconds(self) -> float:
        return self.batches / self.rate

    @property
    def limited_share(self) -> float:
        return self.limited / self.requests if self.requests else 0.0


def deliver(rate: float, batches: Sequence[mpf.Batch], *, paced: bool = True) -> Delivery:
    """Upload ``batches`` to a sink enforcing ``rate`` batches a second; how it went."""
    # An hour after the last event, as (f) does: every batch goes to /v2/bulkevents.
    now = pipeline.routing_now(len(batches))
    with _sink(rate) as (url, finish):
        with mpf.EventsClient(
            API_KEY, API_SECRET, base_url=url, rate_limit=rate if paced else None
        ) as client:
            started = time.perf_counter()
            report = client.upload(batches, now=now)
            seconds = time.perf_counter() - started
        seen = finish()
    counts: dict[str, int] = seen["accepted_ids"]
    exactly_once = (
        report.count("accepted") == len(batches)
        and len(counts) == len(batches)
        and set(counts.values()) == {1}
    )
    return Delivery(
        rate=rate,
        paced=paced,
        batches=len(batches),
        seconds=seconds,
        requests=seen["requests"],
        limited=seen["limited"],
        exactly_once=exactly_once,
        span=seen["last"] - seen["first"],
    )


_SINK = """
import json, sys
from mparticle_feed.testing import FakeEventsServer
with FakeEventsServer(api_key=sys.argv[1], api_secret=sys.argv[2], rate_limit=float(sys.argv[3])) as server:
    print(server.url, flush=True)
    sys.stdin.read()
    requests = server.requests
    print(json.dumps({
        "requests": len(requests),
        "limited": sum(1 for r in requests if r.status == 429),
        "accepted_ids": dict(server.accepted_ids()),
        # time.monotonic() is the system's monotonic clock: comparable across processes.
        "first": min(r.received_at for r in requests),
        "last": max(r.received_at for r in requests if r.accepted),
    }), flush=True)
"""


@contextlib.contextmanager
def _sink(rate: float) -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    """A FakeEventsServer enforcing ``rate`` in its own process: its parsing (every body
    becomes models) must not take the client's interpreter lock, as mParticle would not."""
    with subprocess.Popen(
        [sys.executable, "-c", _SINK, API_KEY, API_SECRET, str(rate)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        stdin, stdout = process.stdin, process.stdout

        def finish() -> dict[str, Any]:
            stdin.close()
            result: dict[str, Any] = json.loads(stdout.readline())
            return result

        try:
            yield stdout.readline().strip(), finish
        finally:
            if not stdin.closed:
                stdin.close()
            process.wait(timeout=60)


def delivery_batches(count: int) -> list[mpf.Batch]:
    return variants.feed_batches(workload.make_workload(count))


# --- events per batch --------------------------------------------------------------------


def rows_in_order(order: str, users: int = USERS, seed: int = 13) -> list[dict[str, Any]]:
    """``users`` users x 10 events, one row per event, in ``order``."""
    rng = random.Random(seed)
    base = 1_704_067_200_000
    rows = []
    for user in range(users):
        # A session somewhere in the day; its events 10-60 s apart.
        at = base + rng.randrange(86_400_000)
        for number in range(EVENTS_PER_USER):
            at += rng.randrange(10_000, 60_000)
            rows.append(
                {
                    "id": f"{user}-{number}",
                    "user": f"user-{user}",
                    "name": "viewed",
                    "screen": f"screen-{number}",
                    "at": at,
                }
            )
    if order == "by time":
        rows.sort(key=lambda row: row["at"])
    elif order == "at random":
        rng.shuffle(rows)
    elif order == "blocks of 1,000":
        # Each user's rows lie within one block of 1,000 rows, shuffled inside it.
        blocks = [rows[i : i + BLOCK_ROWS] for i in range(0, len(rows), BLOCK_ROWS)]
        rows = []
        for block in blocks:
            rng.shuffle(block)
            rows.extend(block)
    return rows


@dataclass(frozen=True)
class Grouping:
    order: str
    window: int
    batches: int
    events: int
    seconds: float
    peak_mb: float | None = None

    @property
    def events_per_batch(self) -> float:
        return self.events / self.batches


def group(rows: list[dict[str, Any]], order: str, window: int, *, memory: bool = False) -> Grouping:
    """Map ``rows`` with ``group_window=window``; batches out, and the peak memory if asked."""
    if memory:
        tracemalloc.start()
    started = time.perf_counter()
    run = mpf.map_rows(rows, MAPPING, group_window=window)
    batches = sum(1 for _ in run)
    seconds = time.perf_counter() - started
    peak = None
    if memory:
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    return Grouping(order, window, batches, run.events_out, seconds, peak)


def groupings(users: int = USERS) -> list[Grouping]:
    results = []
    for order in ORDERS:
        rows = rows_in_order(order, users)
        for window in (0, DEFAULT_GROUP_WINDOW):
            results.append(group(rows, order, window))
    return results


def window_memory(users: int = USERS) -> list[Grouping]:
    rows = rows_in_order("by time", users)
    return [group(rows, "by time", w, memory=True) for w in (0, 1_000, 10_000, 50_000)]


# --- sync CPU -----------------------------------------------------------------------------


class AcceptAll:
    """A Sender that accepts every batch at once: a sync's own CPU, without the network."""

    historical_after = mpf.EventsClient.__init__.__kwdefaults__["historical_after"]
    historical_min_age = mpf.EventsClient.__init__.__kwdefaults__["historical_min_age"]
    max_batches = 100
    max_request_bytes = 256_000
    max_batch_bytes = 128_000

    def send(
        self,
        requests: Iterable[mpf.pipeline.Request | mpf.pipeline.RowProblem],
        *,
        on_outcome: Callable[[mpf.BatchOutcome], None] | None = None,
    ) -> mpf.UploadReport:
        outcomes = []
        for request in requests:
            if not isinstance(request, mpf.pipeline.Request):
                continue
            for packed in request.batches:
                outcome = mpf.BatchOutcome(
                    status="accepted",
                    endpoint=request.endpoint,
                    source_request_id=packed.source_request_id,
                    rows=packed.sourced.rows,
                    sourced=packed.sourced,
                )
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        return mpf.UploadReport(outcomes=tuple(outcomes))


def sync_cpu(users: int = USERS, repeat: int = 3) -> dict[str, float]:
    """CPU seconds (best of ``repeat``) of the bare pipeline and of a first and second sync."""
    rows = rows_in_order("by user", users)
    now = datetime(2024, 1, 2, tzinfo=timezone.utc)

    def bare() -> None:
        for _ in mpf.pipeline.pack(mpf.pipeline.route(mpf.map_rows(rows, MAPPING), now=now)):
            pass

    best: dict[str, float] = {}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            state = Path(folder) / "state.db"
            synced = functools.partial(mpf.sync, rows, MAPPING, AcceptAll(), state=state, now=now)
            for name, run in (("bare", bare), ("first", synced), ("second", synced)):
                started = time.process_time()
                run()
                spent = time.process_time() - started
                best[name] = min(best.get(name, spent), spent)
    return best


# --- standalone ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3_000)
    parser.add_argument("--rates", default="270,1000")
    parser.add_argument("--contrast", action="store_true", help="also upload without pacing")
    args = parser.parse_args(argv)
    data = delivery_batches(args.batches)
    print(
        "| N | pacing | batches/s at the sink | % of N | 429s / requests | wall / ideal | exactly once |"
    )
    print("|---:|---|---:|---:|---:|---:|---|")
    for rate in (float(r) for r in args.rates.split(",")):
        for paced in (True, False) if args.contrast else (True,):
            d = deliver(rate, data, paced=paced)
            print(
                f"| {rate:,.0f} | {'on' if paced else 'off'} | {d.achieved:,.0f} | "
                f"{100 * d.share_of_rate:.1f}% | {d.limited} / {d.requests} | "
                f"{d.seconds / d.ideal_seconds:.2f} | {d.exactly_once} |"
            )
    print("\n| rows | window | batches | events a batch | seconds |\n|---|---:|---:|---:|---:|")
    for g in groupings():
        print(
            f"| {g.order} | {g.window:,} | {g.batches:,} | {g.events_per_batch:.2f} | "
            f"{g.seconds:.2f} |"
        )
    print("\n| rows | window | batches | events a batch | peak MB |\n|---|---:|---:|---:|---:|")
    for g in window_memory():
        print(
            f"| {g.order} | {g.window:,} | {g.batches:,} | {g.events_per_batch:.2f} | "
            f"{g.peak_mb or 0:.1f} |"
        )
    cpu = sync_cpu()
    print(
        f"\nsync CPU / bare pipeline ({USERS * EVENTS_PER_USER:,} rows, state file): first run "
        f"{cpu['first'] / cpu['bare']:.2f}x, second run (nothing to send) "
        f"{cpu['second'] / cpu['bare']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
