"""Rows the state holds as they are are not mapped again (source digests), and skipping
them never changes what a sync sends or stores."""

from __future__ import annotations

import ipaddress
import json
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_data import (
    EVENTS,
    NOW,
    PROFILES,
    check_invariant,
    event_rows,
    profile_rows,
    sent_keys,
)

from mparticle_feed import Attributes, Computed, CustomEventMapping
from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._mapping.compile import CompiledMapping
from mparticle_feed._mapping.unchanged import SourceDigest, digestible
from mparticle_feed._sync.run import plan, sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer

_NOW_MS = int(NOW.timestamp() * 1000) - 60_000


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every row the compiled mapping maps, in order."""
    calls: list[Any] = []
    original = CompiledMapping.map_row

    def counting(self: CompiledMapping, row: Any) -> Any:
        calls.append(row)
        return original(self, row)

    monkeypatch.setattr(CompiledMapping, "map_row", counting)
    return calls


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as store:
        yield store


def test_a_second_run_maps_no_unchanged_row(
    server: FakeEventsServer, client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    rows = event_rows(40, users=9)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    mapped.clear()
    rows[5] = {**rows[5], "value": -5}
    before = len(server.requests)
    report = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert [row["id"] for row in mapped] == ["r0005"]
    assert sent_keys(server, start=before) == ["r0005"]
    assert (report.sent, report.unchanged, report.accepted) == (1, 39, 40)
    check_invariant(report)


def test_a_key_repeated_across_slices_is_rejected_on_a_first_run_and_the_next(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    """A key accepted earlier in the same run, two look-up chunks before its repeat: the
    repeat is rejected naming the first row, on the first run and when skipped on the next."""
    rows = event_rows(1200, users=30)
    rows.append(dict(rows[10]))
    first = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert [(p.row.row_number, p.reason) for p in first.rejects] == [
        (1201, "duplicate primary key, first seen at row 11")
    ]
    assert (first.sent, first.unchanged) == (1200, 0)
    second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert (second.sent, second.unchanged) == (0, 1200)
    assert [p.reason for p in second.rejects] == ["duplicate primary key, first seen at row 11"]


def test_a_change_outside_the_mapping_is_mapped_once_then_skipped(
    server: FakeEventsServer, client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    rows = event_rows(10, users=3)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    rows = [{**row, "note": "not mapped"} for row in rows]
    mapped.clear()
    before = len(server.requests)
    second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert len(mapped) == 10  # a new column: every digest is new, nothing else is
    assert len(server.requests) == before
    assert second.unchanged == 10
    mapped.clear()
    third = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert mapped == []  # the digests were stored although nothing was sent
    assert third.unchanged == 10


@pytest.mark.parametrize("engine", ["rows", "arrow"])
def test_json_attributes_in_another_key_order_are_not_sent_again(
    server: FakeEventsServer, client: EventsClient, state: StateStore, engine: str
) -> None:
    """The state's event hashes ignore key order; the bytes sent keep the source's order.

    So a hash of the bytes packing writes cannot stand in for them: the reordered row
    would go again, a second copy of the same event in mParticle.
    """
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="at",
        custom_attributes=Attributes(json_column="props"),
    )

    def rows(props: dict[str, Any]) -> Any:
        found = [{"id": "r1", "user": "u1", "name": "e", "at": _NOW_MS, "props": json.dumps(props)}]
        if engine == "rows":
            return found
        pa = pytest.importorskip("pyarrow")
        return pa.Table.from_pylist(found)

    first = sync(
        rows({"a": 1, "b": "x", "c": True}), mapping, client, state=state, name="j", now=NOW
    )
    assert first.sent == 1, first.rejects
    assert b'"custom_attributes":{"a":1,"b":"x","c":true}' in server.requests[-1].body
    before = len(server.requests)
    again = sync(
        rows({"c": True, "a": 1, "b": "x"}), mapping, client, state=state, name="j", now=NOW
    )
    assert (again.sent, again.unchanged) == (0, 1)
    assert len(server.requests) == before
    changed = sync(
        rows({"c": True, "a": 2, "b": "x"}), mapping, client, state=state, name="j", now=NOW
    )
    assert changed.sent == 1
    assert b'"custom_attributes":{"c":true,"a":2,"b":"x"}' in server.requests[-1].body


def test_values_that_flip_back_are_sent_each_time(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(6, users=2)
    original = dict(rows[3])
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    for value in (777, original["value"], 777):
        rows[3] = {**original, "value": value}
        before = len(server.requests)
        report = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
        assert sent_keys(server, start=before) == ["r0003"]
        assert report.sent == 1


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (1, "1"),
        (1, 1.0),
        (1, True),
        (None, float("nan")),
        ("2026-03-01", date(2026, 3, 1)),
        (datetime(2026, 10, 25, 2, 30), datetime(2026, 10, 25, 2, 30, fold=1)),
        (Decimal("1.0"), Decimal("1.00")),
        (b"\x00", b"\x00\x00"),
    ],
)
def test_a_value_of_another_type_has_another_digest(before: Any, after: Any) -> None:
    digest = SourceDigest("salt")
    assert digest({"a": before}) != digest({"a": after})


def test_digests_are_salted_and_stable() -> None:
    row = {
        "id": "k",
        "at": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "amount": Decimal("1.10"),
        "blob": b"\x00\x01",
        "nested": {"a": [1, 2]},
    }
    assert SourceDigest("one")(row) == SourceDigest("one")(dict(row))
    assert SourceDigest("one")(row) != SourceDigest("two")(row)
    assert SourceDigest("one")(row) != SourceDigest("one")({**row, "amount": Decimal("1.1")})


@pytest.mark.parametrize(
    "values",
    [
        [None, float("nan"), float("inf"), float("-inf"), 0.0],
        [[1.0, None], [1.0, float("nan")], [1.0, float("inf")], [1.0, float("-inf")]],
        [{"a": None}, {"a": float("nan")}, {"a": "NaN"}, {"a": "null"}],
        [[[None]], [[float("nan")]], [[]]],
    ],
)
def test_floats_json_writes_as_null_keep_their_digests_apart(
    values: list[Any],
) -> None:
    """JSON writes NaN and the infinities as null, and inside a list or an object the types
    are not hashed: a NaN that becomes an infinity, or a null in an Arrow list column, is a
    change."""
    digest = SourceDigest("salt")
    digests = [digest({"id": "k", "nested": value}) for value in values]
    assert None not in digests
    assert len(set(digests)) == len(values)


_CELLS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.datetimes(),
    st.decimals(allow_nan=False, places=2),
    st.lists(st.one_of(st.none(), st.floats(), st.integers(0, 9)), max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=3), min_size=1, max_size=4, unique=True),
    data=st.data(),
)
def test_column_digests_are_the_row_digests(names: list[str], data: st.DataObject) -> None:
    """The Arrow engine digests a slice column by column; the row path digests dicts:
    the same rows give the same keys and digests."""
    from mparticle_feed._mapping.unchanged import column_keys, keyed_column_digests, keyed_digests

    key = data.draw(st.sampled_from(names))
    drawn = data.draw(st.lists(st.fixed_dictionaries(dict.fromkeys(names, _CELLS)), max_size=6))
    rows = [{name: row[name] for name in names} for row in drawn]  # in the columns' order
    compiled = attrs.evolve(EVENTS, primary_key=key)._compiled
    digest = SourceDigest("salt")
    columns = [[row[name] for row in rows] for name in names]
    keys = column_keys(columns[names.index(key)], compiled)
    by_columns = keyed_column_digests(tuple(names), columns, keys, digest)
    assert by_columns == keyed_digests(rows, compiled, digest)


def test_addresses_are_digested_by_their_text_and_type() -> None:
    # psycopg reads inet and cidr as ipaddress objects: digested, so unchanged rows skip.
    digest = SourceDigest("salt")
    address = digest({"ip": ipaddress.ip_address("192.168.0.1")})
    assert address is not None
    assert address == digest({"ip": ipaddress.ip_address("192.168.0.1")})
    assert address != digest({"ip": ipaddress.ip_address("192.168.0.2")})
    assert address != digest({"ip": "192.168.0.1"})  # the type counts too
    assert digest({"net": ipaddress.ip_network("10.0.0.0/8")}) is not None


@pytest.mark.parametrize("value", [2**70, object(), "\ud800"])
def test_a_value_without_exact_text_is_not_digested(value: Any) -> None:
    assert SourceDigest("salt")({"a": value}) is None


def test_a_duplicate_of_a_skipped_row_is_rejected_naming_the_first(
    client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(5, users=2)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    again = [*rows[:3], dict(rows[1]), *rows[3:]]
    report = sync(again, EVENTS, client, state=state, name="things", now=NOW)
    assert [(p.row.row_number, p.reason) for p in report.rejects] == [
        (4, "duplicate primary key, first seen at row 2")
    ]
    assert report.unchanged == 5
    check_invariant(report)


def test_a_changed_row_before_its_duplicate_keeps_mapping_order(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(4, users=2)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    # The first occurrence changed (mapped), the second is the stored one (skippable).
    again = [{**rows[0], "value": 50}, rows[1], dict(rows[0]), rows[2], rows[3]]
    before = len(server.requests)
    report = sync(again, EVENTS, client, state=state, name="things", now=NOW)
    assert sent_keys(server, start=before) == ["r0000"]
    assert [(p.row.row_number, p.reason) for p in report.rejects] == [
        (3, "duplicate primary key, first seen at row 1")
    ]


def test_a_kept_mapping_change_maps_every_row(
    client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    rows = event_rows(8, users=3)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    changed = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name=EVENTS.event_name,
        timestamp_unixtime_ms="ts",
        custom_attributes={"value": "value", "row_id": "id", "again": "value"},
    )
    mapped.clear()
    report = sync(
        rows, changed, client, state=state, name="things", now=NOW, on_mapping_change="keep"
    )
    assert len(mapped) == 8
    assert report.sent == 8


def test_a_computed_source_maps_every_row(
    client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    computed = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name=Computed(lambda row: f"Thing {row['value'] % 2}"),
        timestamp_unixtime_ms="ts",
        custom_attributes={"row_id": "id"},
    )
    assert not digestible(computed)
    assert digestible(EVENTS)
    rows = event_rows(6, users=2)
    sync(rows, computed, client, state=state, name="computed", now=NOW)
    mapped.clear()
    report = sync(rows, computed, client, state=state, name="computed", now=NOW)
    assert len(mapped) == 6
    assert report.unchanged == 6


def test_user_attribute_rows_are_skipped_and_changes_still_sent(
    server: FakeEventsServer, client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    rows = profile_rows()
    sync(rows, PROFILES, client, state=state, name="profiles", now=NOW)
    mapped.clear()
    rows[1] = {**rows[1], "plan": "enterprise"}
    report = sync(rows, PROFILES, client, state=state, name="profiles", now=NOW)
    assert [row["user"] for row in mapped] == [rows[1]["user"]]
    assert report.sent == 1
    assert report.unchanged == len(rows) - 1


def test_a_plan_skips_too_and_writes_nothing(
    client: EventsClient, state: StateStore, mapped: list[Any], tmp_path: Path
) -> None:
    rows = event_rows(10, users=3)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    mapped.clear()
    reviewed = plan(rows, EVENTS, state=state, name="things", now=NOW)
    assert mapped == []
    assert reviewed.unchanged == 10
    assert not reviewed.requests


def test_a_state_file_without_digests_gets_them(
    client: EventsClient, tmp_path: Path, mapped: list[Any]
) -> None:
    path = tmp_path / "old.sqlite"
    rows = event_rows(12, users=4)
    with StateStore(path) as store:
        sync(rows, EVENTS, client, state=store, name="things", now=NOW)
    # A file from before digests: the column is missing.
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE accepted DROP COLUMN source")
    with StateStore(path, read_only=True) as reader:
        assert all(entry.source is None for entry in reader.entries("things"))
    mapped.clear()
    first = sync(rows, EVENTS, client, state=path, name="things", now=NOW)
    assert len(mapped) == 12
    assert first.sent == 0
    assert first.unchanged == 12
    mapped.clear()
    second = sync(rows, EVENTS, client, state=path, name="things", now=NOW)
    assert mapped == []
    assert second.unchanged == 12


def _edited(rows: list[dict[str, Any]], edits: list[tuple[int, str]]) -> list[dict[str, Any]]:
    out = [dict(row) for row in rows]
    for index, edit in edits:
        row = out[index % len(out)]
        number = int(row["value"])
        if edit == "value":
            row["value"] = number + 1000
        elif edit == "flip":
            row["value"] = -number - 1
        elif edit == "unmapped":
            row["note"] = "x"
        elif edit == "type":
            row["value"] = str(number) if isinstance(row["value"], int) else number
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 25),
    rounds=st.lists(
        st.lists(
            st.tuples(st.integers(0, 30), st.sampled_from(["value", "flip", "unmapped", "type"])),
            max_size=6,
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_skipping_sends_and_stores_what_comparing_content_does(
    count: int, rounds: list[list[tuple[int, str]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """One user a row (no batch mixes rows): the rows sent and the hashes stored, round
    after round of edits, are those of a state that keeps no digests."""
    folder = tmp_path_factory.mktemp("skip")
    skipping, comparing = folder / "skipping.sqlite", folder / "comparing.sqlite"
    rows = event_rows(count)
    with (
        FakeEventsServer(now=lambda: NOW) as fake,
        EventsClient(
            "test-key", "test-secret", base_url=fake.url, max_workers=1, rate_limit=None
        ) as events,
    ):
        sync(rows, EVENTS, events, state=skipping, name="t", now=NOW)
        shutil.copyfile(skipping, comparing)
        for edits in rounds:
            rows = _edited(rows, edits)
            with sqlite3.connect(comparing) as conn:
                conn.execute("UPDATE accepted SET source = NULL")
            sent = []
            for path in (skipping, comparing):
                start = len(fake.requests)
                report = sync(rows, EVENTS, events, state=path, name="t", now=NOW)
                assert report.ok
                sent.append(sorted(sent_keys(fake, start=start)))
            assert sent[0] == sent[1]
            stored = []
            for path in (skipping, comparing):
                with StateStore(path, read_only=True) as store:
                    stored.append({e.key: e.hash for e in store.entries("t")})
            assert stored[0] == stored[1]
            # Every row's own digest is stored with its key (sent, or found unchanged).
            digest = SourceDigest(f"{EVENTS.fingerprint()} report")
            with StateStore(skipping, read_only=True) as store:
                sources = {e.key: e.source for e in store.entries("t")}
            assert sources == {row["id"]: digest(row) for row in rows}


def test_arrow_rows_are_skipped_with_their_row_numbers(
    server: FakeEventsServer, client: EventsClient, state: StateStore, mapped: list[Any]
) -> None:
    pa = pytest.importorskip("pyarrow")
    rows = event_rows(1200, users=50)
    sync(pa.Table.from_pylist(rows), EVENTS, client, state=state, name="things", now=NOW)
    again = [dict(row) for row in rows]
    again[700]["value"] = -1  # changed: the only row sent
    again.insert(1000, dict(rows[3]))  # a duplicate of a skipped row, in the second chunk
    before = len(server.requests)
    report = sync(pa.Table.from_pylist(again), EVENTS, client, state=state, name="things", now=NOW)
    assert sent_keys(server, start=before) == ["r0700"]
    assert [(p.row.row_number, p.reason) for p in report.rejects] == [
        (1001, "duplicate primary key, first seen at row 4")
    ]
    assert (report.sent, report.unchanged, report.rows_in) == (1, 1199, 1201)
    check_invariant(report)
    # The row path reads the same rows with the same digests: nothing is mapped.
    mapped.clear()
    third = sync(again, EVENTS, client, state=state, name="things", now=NOW)
    assert third.unchanged == 1200
    assert mapped == []


class _EverythingStored:
    """A KnownRows whose state holds every row as it is."""

    def __init__(self, digest: SourceDigest, compiled: CompiledMapping) -> None:
        self.digest, self.compiled = digest, compiled
        self.skipped_rows: list[int] = []
        self.rows: dict[str, dict[str, Any]] = {}

    def stored_sources(self, keys: list[str]) -> dict[str, str]:
        return {key: self.digest(self.rows[key]) or "" for key in keys}

    def skipped(self, numbers: Sequence[int], keys: list[str]) -> None:
        self.skipped_rows.extend(numbers)

    def kept(self, row_number: int, digest: str) -> None:
        raise AssertionError("no row is kept")

    def known_slice(self, digest: str) -> str | None:
        return None  # every slice is digested row by row

    def stored_span(self, first: str, last: str, count: int) -> str | None:
        raise AssertionError("no slice is known")

    def saw_slice(self, digest: str, rows: str) -> None:
        pass


def test_an_arrow_run_of_unchanged_rows_holds_a_slice_at_most() -> None:
    pa = pytest.importorskip("pyarrow")
    from mparticle_feed._mapping.arrow_skip import ArrowSkip
    from mparticle_feed._mapping.unchanged import SKIP_CHUNK

    rows = event_rows(5 * SKIP_CHUNK + 7, users=40)
    digest = SourceDigest("salt")
    compiled = EVENTS._compiled
    known = _EverythingStored(digest, compiled)
    known.rows = {row["id"]: row for row in rows}
    held: list[int] = []

    def on_skip(first: int, keys: list[str]) -> None:
        held.append(len(skip._queue) + len(keys))
        known.skipped(list(range(first, first + len(keys))), keys)

    skip = ArrowSkip(compiled, digest, known, on_skip)
    reader = pa.Table.from_pylist(rows).to_reader(max_chunksize=2 * SKIP_CHUNK)
    assert list(skip.numbered(iter(()))) == []  # nothing was read yet
    assert list(skip.filtered(reader)) == []  # every row left out, none for the engine
    assert known.skipped_rows == list(range(1, len(rows) + 1))
    assert max(held) <= SKIP_CHUNK
