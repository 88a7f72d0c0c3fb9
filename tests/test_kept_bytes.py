"""Bytes the library keeps (batch headers, written events, plan bodies, ``dumps``) hold no
more memory than their length.

orjson 3.12 and later hand back the buffer they wrote into: 4 KB at the least, grown by
doubling. A small header kept with each batch of a plan, or an event held in the regroup
window, would hold all of it; the library copies what it keeps into a buffer of its size.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import mparticle_feed as mpf
from mparticle_feed._mapping.compile import _Mapped
from mparticle_feed._mapping.written import CUSTOM_EVENT_TYPE, write_events
from mparticle_feed._mapping.written_header import written_header
from mparticle_feed._wire.enums import Environment

COUNT = 300
#: What a bytes object may cost beyond its length: its header, the allocator's rounding,
#: its slot in the list that keeps it, and caches a call may fill (orjson over-allocates 4 KB).
SLACK = 256


def _assert_own_size(build: Callable[[], list[bytes]]) -> None:
    build()  # first use: imports, caches and generated code are not what is kept
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    length = sum(map(len, kept))
    assert kept
    assert used < length + len(kept) * SLACK, (
        f"{used:,} bytes held for {len(kept)} items of {length:,} bytes"
    )


def test_dumps_hands_back_bytes_of_their_own_size() -> None:
    batch = mpf.Batch(environment=mpf.Environment.DEVELOPMENT, mpid=1)
    _assert_own_size(lambda: [mpf.dumps(batch) for _ in range(COUNT)])


def test_a_written_header_and_user_key_are_their_own_size() -> None:
    def header(n: int) -> tuple[bytes, bytes]:
        identities = (("customer_id", f"u{n}"),)
        first = _Mapped(identities, identities, (), None, None, None, None, None, {}, None, 0)
        written = written_header(Environment.DEVELOPMENT, first, {"plan": "pro"})
        assert written is not None
        return written

    _assert_own_size(lambda: [part for n in range(COUNT) for part in header(n)])


def test_written_events_are_their_own_size() -> None:
    fields = [
        ("event_name", None, [f"Event {n}" for n in range(COUNT)]),
        ("timestamp_unixtime_ms", None, list(range(COUNT))),
    ]

    def events() -> list[bytes]:
        written = write_events(fields, set(), CUSTOM_EVENT_TYPE)  # type: ignore[arg-type]
        return [event for event in written if event is not None]

    _assert_own_size(events)


def test_the_batches_of_a_plan_read_back_are_their_own_size(tmp_path: Path) -> None:
    mapping = mpf.CustomEventMapping(
        primary_key="id",
        event_name="name",
        user_identities={"customer_id": "user"},
        timestamp_unixtime_ms="ts",
    )
    rows = [
        {"id": n, "name": "Viewed", "user": f"u{n}", "ts": 1_780_000_000_000} for n in range(COUNT)
    ]
    path = tmp_path / "plan.jsonl"
    mpf.plan(rows, mapping, now=datetime(2026, 6, 1, tzinfo=timezone.utc)).write_jsonl(path)

    def bodies() -> list[bytes]:
        read = mpf.Plan.read_jsonl(path)
        return [batch.body for request in read.requests for batch in request.batches]

    _assert_own_size(bodies)
