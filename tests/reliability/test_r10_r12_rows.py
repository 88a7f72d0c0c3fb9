"""R10 (hostile rows), R11 (stable ids across runs), R12 (one rejects record per row)."""

from __future__ import annotations

import io
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from builders import NOW
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import Scorecard, fake_server
from scenario import client_for
from sync_support import (
    EVENT_MS,
    MAPPING,
    event_rows_at_server,
    good_rows,
    sqlite_source,
    sync_figures,
)

from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._mapping.provenance import Stage
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._sync.run import sync
from mparticle_feed.testing import FakeClock, FakeEventsServer, ReceivedRequest, Reply

MakeServer = Callable[..., FakeEventsServer]

# --- R10 ------------------------------------------------------------------------------

_hostile_values = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.text(min_size=300, max_size=400),
    st.binary(max_size=10),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(),
    st.datetimes(timezones=st.just(timezone.utc)),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
    st.just("\x00\ud800 \u202e"[0:1] + "\u202e"),
)

_columns = ["id", "user", "name", "ts", "v"]


@st.composite
def _hostile_row(draw: st.DrawFn, number: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"h{number}",
        "user": f"hu{number}",
        "name": "n",
        "ts": EVENT_MS,
        "v": 1,
    }
    for column in draw(st.sets(st.sampled_from(_columns), min_size=1)):
        if draw(st.booleans()):
            row[column] = draw(_hostile_values)
        else:
            row.pop(column)
    return row


def _good_row(number: int) -> dict[str, Any]:
    return {
        "id": f"g{number}",
        "user": f"u{number % 3}",
        "name": f"event {number}",
        "ts": EVENT_MS + number,
        "v": number,
    }


@st.composite
def _mixed_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for number in range(draw(st.integers(min_value=1, max_value=25))):
        if draw(st.booleans()):
            rows.append(_good_row(number))
        else:
            rows.append(draw(_hostile_row(number)))
    return rows


@settings(max_examples=150, deadline=None)
@given(rows=_mixed_rows())
def test_R10_hostile_rows_never_crash_and_are_rejected_with_key_field_and_reason(
    rows: list[dict[str, Any]],
) -> None:
    # Good rows are the generator's own (a hostile id can also be text starting with "g").
    good = [row for number, row in enumerate(rows) if row == _good_row(number)]
    run = map_rows(iter(rows), MAPPING)
    batches = list(run)  # must not raise, whatever the rows hold
    mapped = {row.row_number for b in batches for row in b.rows}
    rejected = {p.row.row_number for p in run.rejected}
    assert mapped.isdisjoint(rejected)
    assert mapped | rejected == set(range(1, len(rows) + 1))  # every row accounted for
    assert run.rows_in == len(rows)
    for problem in run.rejected:
        assert problem.stage is Stage.MAPPING
        assert problem.reason
        assert problem.field  # the field path
        source = rows[problem.row.row_number - 1]
        if isinstance(source.get("id"), str) and source["id"]:
            assert problem.row.primary_key == source["id"]  # the row key
    # Good rows are unaffected by their hostile neighbours.
    events = {
        b_row.primary_key: event
        for b in batches
        for b_row, event in zip(b.event_rows, b.batch.events or (), strict=True)
    }
    for number, row in enumerate(rows, start=1):
        if row in good:
            assert number in mapped
            event = events[row["id"]]
            assert event.event_name == row["name"]  # type: ignore[union-attr]
            assert event.timestamp_unixtime_ms == row["ts"]


def _hostile_fixed() -> list[dict[str, Any]]:
    bad: list[Any] = [
        None,
        "",
        "x" * 5000,
        b"\xff\xfe",
        math.nan,
        math.inf,
        Decimal("NaN"),
        -1,
        2**80,
        object(),
        datetime(2020, 1, 1),
        [1],
        {"a": 1},
    ]
    rows = good_rows(40)
    for i, value in enumerate(bad):
        rows.append({"id": 1000 + i, "user": "hostile", "name": "x", "ts": value, "v": 1})
        rows.append({"id": 2000 + i, "user": value, "name": "x", "ts": EVENT_MS, "v": 1})
    return rows


def test_R10_hostile_rows_through_a_whole_sync(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    rows = _hostile_fixed()
    server = make_server(clock=clock.monotonic)
    with client_for(server, clock) as client:
        report = sync(rows, MAPPING, client, now=NOW)
    rejected_keys = {p.row.primary_key for p in report.rejects}
    assert len(rejected_keys) == report.rejected  # one problem per rejected row
    delivered = sorted(r["id"] for r in rows if str(r["id"]) not in rejected_keys)
    assert sorted(event_rows_at_server(server)) == delivered  # the rest went through, once
    assert report.accepted == len(delivered)
    assert all(str(r["id"]) not in rejected_keys for r in rows[:40])  # good rows unaffected
    assert all(p.field and p.reason and p.row.primary_key for p in report.rejects)
    scorecard.record(sync_figures("R10 hostile rows through sync", [report], server, len(rows)))


# --- R11 ------------------------------------------------------------------------------


def test_R11_ids_are_identical_across_chunk_sizes_and_worker_counts(
    tmp_path: Path, scorecard: Scorecard
) -> None:
    rows = good_rows(300, users=11)
    db = tmp_path / "warehouse.db"
    sqlite_source(db, rows)
    runs: list[list[str]] = []
    batch_counts = []
    for chunk_size, workers, max_batches in [(1, 1, 100), (7, 4, 100), (1000, 3, 9), (64, 2, 1)]:
        clock = FakeClock()
        with fake_server(clock=clock.monotonic) as server:
            connection = sqlite3.connect(db)
            try:
                cursor = connection.execute("SELECT id, user, name, ts, v FROM events ORDER BY id")
                with client_for(
                    server, clock, max_workers=workers, max_batches=max_batches
                ) as client:
                    report = sync(cursor, MAPPING, client, now=NOW, chunk_size=chunk_size)
            finally:
                connection.close()
            ids = [i for r in server.requests for i in r.source_request_ids]
            batch_counts.append(sum(len(r.batches or ()) for r in server.requests))
        assert report.accepted == 300
        runs.append(ids)
    first = runs[0]
    assert all(sorted(ids) == sorted(first) for ids in runs)  # identical across runs
    assert len(set(first)) == len(first) == batch_counts[0]  # no collisions between batches
    scorecard.record(
        sync_figures(
            "R11 ids across chunk sizes and workers",
            [report],
            None,
            300,
            note=f"{len(first)} batches, identical ids in 4 runs",
        )
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=30),
)
def test_R11_distinct_batches_never_share_an_id(names: list[str]) -> None:
    from mparticle_feed._delivery.packing import Request, pack
    from mparticle_feed._delivery.routing import route

    rows = [
        {
            "id": i,
            "user": "same-user" if i % 2 else f"user{i}",
            "name": name,
            "ts": EVENT_MS,
            "v": 1,
        }
        for i, name in enumerate(names, start=1)
    ]
    run = map_rows(rows, MAPPING, max_events_per_batch=1)
    requests = [r for r in pack(route(run, now=NOW)) if isinstance(r, Request)]
    ids = [b.source_request_id for r in requests for b in r.batches]
    assert len(set(ids)) == len(ids)


# --- R12 ------------------------------------------------------------------------------


def _mixed_server(request: ReceivedRequest) -> Reply | None:
    users = {
        b.user_identities.customer_id or "" if b.user_identities else ""
        for b in request.batches or ()
    }
    if any(u.startswith("refuse") for u in users):
        return Reply(status=400, body=b'{"errors":[{"code":"BAD_REQUEST","message":"no"}]}')
    if any(u.startswith("flaky") for u in users):
        return Reply(status=503)
    return None  # the normal answer


def test_R12_one_rejects_record_per_row_reconciling_with_the_invariant(
    make_server: MakeServer, clock: FakeClock, tmp_path: Path, scorecard: Scorecard
) -> None:
    rows = good_rows(30, users=5)
    rows += [
        {"id": 100 + i, "user": f"refuse{i}", "name": "x", "ts": EVENT_MS, "v": 1} for i in range(4)
    ]  # R2/R3
    rows += [
        {"id": 200, "user": "huge", "name": "x", "ts": EVENT_MS, "v": "é" * 70_000}
    ]  # too long
    rows += [
        {"id": 300 + i, "user": None, "name": "x", "ts": "garbage", "v": 1} for i in range(3)
    ]  # R10
    rows += [
        {"id": 400, "user": "flaky0", "name": "x", "ts": EVENT_MS, "v": 1}
    ]  # exhausted retries
    server = make_server(responder=_mixed_server, clock=clock.monotonic)
    with client_for(server, clock, max_batches=4, retry=RetryPolicy(max_attempts=3)) as client:
        report = sync(rows, MAPPING, client, now=NOW)
    out = io.StringIO()
    lines = report.write_rejects(out)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines == len(records)
    per_row = Counter(r["row_number"] for r in records)
    assert set(per_row.values()) == {1}, "a row has more than one rejects record"
    for record in records:
        assert {"outcome", "row_number", "primary_key", "stage", "reason"} <= set(record)
        if record["stage"] == "delivery":
            assert "source_request_id" in record
            assert "status" in record
    by_outcome = Counter(r["outcome"] for r in records)
    assert by_outcome["rejected"] == report.rejected
    assert by_outcome["failed"] == report.failed
    assert (
        len(rows)
        == report.accepted + by_outcome["rejected"] + by_outcome["failed"] + report.pending
    )
    stages = Counter(r["stage"] for r in records if r["outcome"] == "rejected")
    assert stages["mapping"] == 4  # three unmappable rows, one value over 4096 characters
    assert stages["delivery"] == 4  # bisected out of their requests
    # A failed request takes its request-mates with it (5xx is not bisected): all listed.
    assert 1 <= by_outcome["failed"] <= 4
    assert report.accepted >= 30 - 3
    scorecard.record(sync_figures("R12 mixed rejects, JSON Lines", [report], server, len(rows)))


@pytest.mark.parametrize("stage", ["mapping", "delivery"])
def test_R12_rejects_records_name_row_and_reason(
    stage: str, make_server: MakeServer, clock: FakeClock
) -> None:
    rows = [
        {
            "id": 1,
            "user": None if stage == "mapping" else "refuse",
            "name": "x",
            "ts": EVENT_MS,
            "v": 1,
        }
    ]
    server = make_server(responder=_mixed_server, clock=clock.monotonic)
    with client_for(server, clock) as client:
        report = sync(rows, MAPPING, client, now=NOW)
    (record,) = report.problem_records()
    assert record["row_number"] == 1
    assert record["primary_key"] == "1"
    assert record["stage"] == stage
    assert record["reason"]
