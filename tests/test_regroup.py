"""The regroup window: fuller batches from unordered rows, every row kept, each user in order."""

from __future__ import annotations

import logging
import math
import random
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed import ConfigurationError, CustomEventMapping, map_rows, plan
from mparticle_feed._cli import main
from mparticle_feed._mapping.run import ordering_advice
from mparticle_feed.testing import FakeEventsServer

MAPPING = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name="name",
    timestamp_unixtime_ms="at",
)


def _rows(users: list[int]) -> list[dict[str, Any]]:
    """One row per entry: the user, and a timestamp increasing with the position."""
    return [
        {"id": f"r{n}", "user": f"u{user}", "name": "seen", "at": 1_700_000_000_000 + n}
        for n, user in enumerate(users)
    ]


@settings(deadline=None)
@given(
    users=st.lists(st.integers(0, 6), max_size=80),
    window=st.integers(0, 30),
    per_batch=st.integers(1, 5),
)
def test_every_row_once_each_users_order_kept_batches_bounded(
    users: list[int], window: int, per_batch: int
) -> None:
    run = map_rows(_rows(users), MAPPING, group_window=window, max_events_per_batch=per_batch)
    batches = []
    for sourced in run:
        # Memory: what was read and not handed out stays within the window (or one batch).
        held = run.rows_mapped - sum(len(b.rows) for b in batches) - len(sourced.rows)
        assert held <= max(window, per_batch)
        batches.append(sourced)
    numbers = [ref.row_number for b in batches for ref in b.event_rows]
    assert sorted(numbers) == list(range(1, len(users) + 1))
    per_user: dict[str, list[int]] = defaultdict(list)
    for b in batches:
        assert b.batch.user_identities is not None
        user = b.batch.user_identities.customer_id
        assert all(users[ref.row_number - 1] == int(user[1:]) for ref in b.event_rows)  # type: ignore[index]
        assert 1 <= len(b.event_rows) <= per_batch
        assert b.rows == b.event_rows
        per_user[str(user)].extend(ref.row_number for ref in b.event_rows)
    assert all(rows == sorted(rows) for rows in per_user.values())
    assert run.events_out == len(users)
    assert run.batches_out == len(batches)


def test_the_window_is_shared_by_every_users_open_batch() -> None:
    """The Mapping page's figures: how far apart a user's rows may lie and still share a
    batch depends on how many users take turns, not on a distance in rows."""
    few = map_rows(_rows([n % 50 for n in range(50_000)]), MAPPING)
    assert sum(1 for _ in few) == 500  # 50 users over 50,000 rows: full batches of 100
    many = map_rows(_rows([n % 5_000 for n in range(50_000)]), MAPPING)
    batches = sum(1 for _ in many)
    # Rows 5,000 apart, well within the 10,000-row window, yet about two a user are held.
    assert 2.9 < many.events_per_batch < 3.1
    assert many.split_users == batches - 5_000  # every batch after a user's first
    advice = ordering_advice(many)
    assert advice is not None
    assert "earlier batch had already left the regroup window unfilled" in advice


@given(users=st.lists(st.integers(0, 6), max_size=80), per_batch=st.integers(1, 5))
def test_a_window_as_large_as_the_input_fills_every_batch(users: list[int], per_batch: int) -> None:
    batches = list(
        map_rows(_rows(users), MAPPING, group_window=len(users), max_events_per_batch=per_batch)
    )
    expected = sum(math.ceil(n / per_batch) for n in Counter(users).values())
    assert len(batches) == expected


@given(users=st.lists(st.integers(0, 6), max_size=60))
def test_window_zero_groups_consecutive_rows_only(users: list[int]) -> None:
    batches = list(map_rows(_rows(users), MAPPING, group_window=0))
    runs = sum(1 for n, user in enumerate(users) if n == 0 or users[n - 1] != user)
    assert len(batches) == runs


def test_a_users_changed_attributes_still_split_the_batch() -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        user_attributes={"plan": "plan"},
        stamp_arrival_time=True,
    )
    rows = [
        {"id": 1, "user": "a", "name": "x", "plan": "free"},
        {"id": 2, "user": "b", "name": "x", "plan": "pro"},
        {"id": 3, "user": "a", "name": "y", "plan": "free"},
        {"id": 4, "user": "a", "name": "z", "plan": "pro"},  # a later value: a new batch
    ]
    batches = list(map_rows(rows, mapping))
    shown = [
        ([r.row_number for r in b.rows], (b.batch.user_attributes or {}).get("plan"))
        for b in batches
    ]
    assert shown == [([1, 3], "free"), ([2], "pro"), ([4], "pro")]


def test_unhashable_batch_fields_still_group() -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        stamp_arrival_time=True,
        application_info=mpf.Constant(
            {"application_name": "a", "apple_search_ads_attributes": {"x": {"y": "z"}}}
        ),
    )
    rows = [{"id": n, "user": u, "name": "n"} for n, u in enumerate("abab")]
    assert len(list(map_rows(rows, mapping))) == 2


@pytest.mark.parametrize("window", [-1, 1.5, "10", True])
def test_group_window_must_be_a_row_count(window: Any) -> None:
    with pytest.raises(ConfigurationError, match="group_window"):
        map_rows([], MAPPING, group_window=window)


def _time_ordered(users: int, events: int, seed: int = 7) -> list[int]:
    order = [user for user in range(users) for _ in range(events)]
    random.Random(seed).shuffle(order)
    return order


def test_plan_warns_with_the_order_by_when_batches_are_thin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = _rows(_time_ordered(50, 10))
    with caplog.at_level(logging.WARNING, logger="mparticle_feed"):
        thin = plan(rows, MAPPING, group_window=5)
    assert thin.advice is not None
    assert "ORDER BY user, at" in thin.advice
    assert "ORDER BY user, at" in caplog.text
    assert "advice: " in thin.summary()
    assert thin.events_per_batch < 2
    full = plan(rows, MAPPING)  # the default window holds all 500 rows
    assert full.advice is None
    assert full.events_per_batch == 10
    assert "10.0 events a batch" in full.summary()


def test_sync_reports_events_per_batch_and_the_advice() -> None:
    rows = _rows(_time_ordered(50, 10))
    with (
        FakeEventsServer() as server,
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, rate_limit=None) as client,
    ):
        thin = mpf.sync(rows, MAPPING, client, group_window=0)
        full = mpf.sync(rows, MAPPING, client)
    assert thin.advice is not None
    assert thin.events_per_batch < 2
    assert full.advice is None
    assert full.events_per_batch == 10
    assert "10.0 events a batch" in full.summary()
    assert full.ok


def test_cli_plan_takes_group_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = tmp_path / "events.db"
    with sqlite3.connect(database) as connection:
        connection.execute("create table events (id, user, name, at)")
        connection.executemany(
            "insert into events values (:id, :user, :name, :at)", _rows(_time_ordered(30, 4))
        )
    mapping = tmp_path / "events.toml"
    mapping.write_text(
        'kind = "custom_event"\nprimary_key = "id"\nevent_name = "name"\n'
        'timestamp_unixtime_ms = "at"\n[user_identities]\ncustomer_id = "user"\n'
    )
    common = ["plan", "--db", str(database), "--query", "select * from events"]
    assert main([*common, "--mapping", str(mapping), "--group-window", "0"]) == 0
    consecutive = capsys.readouterr().out
    assert main([*common, "--mapping", str(mapping)]) == 0
    regrouped = capsys.readouterr().out
    assert "4.0 events a batch" in regrouped
    assert "4.0 events a batch" not in consecutive


@settings(deadline=None, max_examples=30)
@given(users=st.lists(st.integers(0, 6), max_size=60), window=st.integers(0, 20))
def test_the_arrow_engine_regroups_as_the_row_path_does(users: list[int], window: int) -> None:
    pa = pytest.importorskip("pyarrow")
    rows = _rows(users)
    table = pa.Table.from_pylist(rows) if rows else None
    if table is None:
        return
    arrow = mpf.map_rows(table, MAPPING, group_window=window, max_events_per_batch=3)
    row_path = mpf.map_rows(rows, MAPPING, group_window=window, max_events_per_batch=3)
    assert arrow.engine == "arrow"
    got = [[r.row_number for r in b.event_rows] for b in arrow]
    assert got == [[r.row_number for r in b.event_rows] for b in row_path]
    assert arrow.events_per_batch == row_path.events_per_batch


class _Recorder:
    """A group that records its rows: (user, row number) pairs, in the order added."""

    def __init__(self) -> None:
        self.user: Any = None
        self.rows: list[tuple[Any, int]] = []

    def row_count(self) -> int:
        return len(self.rows)

    def accepts(self, item: Any, limit: int) -> bool:
        return self.user is None or (item == self.user and len(self.rows) < limit)

    def add(self, item: Any, ref: Any) -> None:
        self.user = item
        self.rows.append((item, ref.row_number))

    def add_event(self, event: Any, ref: Any) -> None:
        self.rows.append((self.user, ref.row_number))

    def add_events(self, events: Any, numbers: Any, keys: Any) -> None:
        self.rows.extend((self.user, number) for number in numbers)

    def start(self, first: Any, events: Any, numbers: Any, keys: Any) -> None:
        self.user = first
        self.rows.extend((first, number) for number in numbers)

    def room(self, limit: int) -> int:
        return limit - len(self.rows)

    def full(self, limit: int) -> bool:
        return len(self.rows) >= limit

    def flush(self) -> Any:
        return tuple(self.rows)


def _fed(runs: list[tuple[int, int]], window: int, limit: int, *, whole: bool) -> list[Any]:
    """The batches a window lets go of, fed runs of (user, rows) row by row as ``push`` and
    ``push_more`` take them, or (``whole``) starting each run with ``push_run``."""
    from mparticle_feed._mapping.provenance import RowRef
    from mparticle_feed._mapping.regroup import RegroupWindow

    regroup: RegroupWindow[Any] = RegroupWindow(window, _Recorder, limit)
    out: list[Any] = []
    number = 0
    for user, count in runs:
        numbers = list(range(number + 1, number + count + 1))
        number += count
        events, keys = [None] * count, [None] * count
        position = regroup.push_run(user, user, events, numbers, keys) if whole else 0
        if not position:
            regroup.push(user, user, RowRef(numbers[0]))
            position = 1
        while position < count:
            position = regroup.push_more(events, numbers, keys, position)
            if position < count:
                regroup.push(user, user, RowRef(numbers[position]))
                position += 1
        out.extend(regroup.take())
    out.extend(regroup.drain())
    return out


@given(
    runs=st.lists(st.tuples(st.integers(0, 5), st.integers(1, 9)), max_size=40),
    window=st.integers(0, 30),
    limit=st.integers(1, 6),
)
def test_a_run_pushed_whole_makes_the_batches_its_rows_make_one_by_one(
    runs: list[tuple[int, int]], window: int, limit: int
) -> None:
    """``push_run`` is ``push`` of the run's first row then ``push_more``: the same batches,
    in the same order, whatever the window, the batch limit and the users' runs."""
    assert _fed(runs, window, limit, whole=True) == _fed(runs, window, limit, whole=False)
