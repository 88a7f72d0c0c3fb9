"""Arrow second runs: slices of rows read before are checked against the state at once.

A slice whose content was seen before is skipped whole only when the state's stored keys
and digests still give the digest recorded with it; every other slice is digested row by
row. Whatever happens in between, a sync over Arrow must send, reject, count and store
what the row path does over the same rows.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_data import EVENTS, NOW, PROFILES, check_invariant, event_rows, sent_keys

from mparticle_feed import SyncReport
from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._mapping import arrow_skip
from mparticle_feed._mapping.unchanged import SourceDigest, rows_text
from mparticle_feed._sync.run import plan, sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer

pa = pytest.importorskip("pyarrow")

#: Rows per slice in these tests (500 in use): a few dozen rows make several slices.
SLICE = 7


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrow_skip, "SKIP_CHUNK", SLICE)


@pytest.fixture
def digested(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows were digested one by one."""
    calls: list[int] = []
    original = SourceDigest.of_values

    def counting(self: SourceDigest, names: Any, values: Any) -> str | None:
        calls.append(1)
        return original(self, names, values)

    monkeypatch.setattr(SourceDigest, "of_values", counting)
    return calls


def _synced(rows: list[dict[str, Any]], client: EventsClient, tmp_path: Path) -> Path:
    """A state file after a first sync of ``rows`` as an Arrow table."""
    path = tmp_path / "state.sqlite"
    sync(pa.Table.from_pylist(rows), EVENTS, client, state=path, name="t", now=NOW)
    return path


def _slices(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM source_slices").fetchone()[0])


@pytest.mark.parametrize("order", ["by key", "shuffled"])
def test_a_second_run_digests_no_row_of_a_slice_seen_before(
    client: EventsClient, tmp_path: Path, digested: list[int], order: str
) -> None:
    rows = event_rows(60, users=7)
    if order == "shuffled":  # each slice's keys spread over the key range: looked up
        random.Random(4).shuffle(rows)
    table = pa.Table.from_pylist(rows)
    path = tmp_path / "state.sqlite"
    first = sync(table, EVENTS, client, state=path, name="t", now=NOW)
    assert (first.sent, len(digested)) == (60, 60)
    assert _slices(path) == -(-60 // SLICE)
    digested.clear()
    second = sync(table, EVENTS, client, state=path, name="t", now=NOW)
    assert (second.sent, second.unchanged, len(digested)) == (0, 60, 0)
    check_invariant(second)
    with StateStore(path) as store:  # forgetting a sync forgets its slices too
        store.forget("t")
    assert _slices(path) == 0


def test_a_plan_over_arrow_skips_slices_and_writes_nothing(
    client: EventsClient, tmp_path: Path, digested: list[int]
) -> None:
    rows = event_rows(30, users=4)
    path = _synced(rows, client, tmp_path)
    with sqlite3.connect(path) as conn:
        before = conn.execute("SELECT slice, rows, version FROM source_slices").fetchall()
    changed = [dict(row) for row in rows]
    changed[20]["value"] = -20  # its slice is digested; the plan must not record it
    digested.clear()
    with StateStore(path, read_only=True) as store:
        reviewed = plan(pa.Table.from_pylist(changed), EVENTS, state=store, name="t", now=NOW)
    assert (reviewed.unchanged, len(digested)) == (29, SLICE)
    with sqlite3.connect(path) as conn:
        after = conn.execute("SELECT slice, rows, version FROM source_slices").fetchall()
    assert sorted(after) == sorted(before)


def test_a_changed_slice_is_digested_alone_and_old_slices_are_forgotten(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path, digested: list[int]
) -> None:
    rows = event_rows(30, users=4)
    path = _synced(rows, client, tmp_path)
    rows[9] = {**rows[9], "value": -9}  # in the second slice
    digested.clear()
    before = len(server.requests)
    report = sync(pa.Table.from_pylist(rows), EVENTS, client, state=path, name="t", now=NOW)
    assert sent_keys(server, start=before) == ["r0009"]
    assert (report.unchanged, len(digested)) == (29, SLICE)
    # The slice as it was is gone; the one seen now is kept.
    assert _slices(path) == -(-30 // SLICE)


def test_a_stale_slice_is_not_trusted_after_a_run_that_stopped(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path
) -> None:
    """A run that changed a key and stopped before forgetting old slices leaves one that
    vouches for the key's old value: the value flips back, and is sent again."""
    rows = event_rows(20, users=3)
    path = _synced(rows, client, tmp_path)
    with sqlite3.connect(path) as conn:
        kept = conn.execute("SELECT name, slice, rows, version FROM source_slices").fetchall()
    changed = [dict(row) for row in rows]
    changed[3]["value"] = 999
    sync(pa.Table.from_pylist(changed), EVENTS, client, state=path, name="t", now=NOW)
    with sqlite3.connect(path) as conn:  # as if the run had stopped before its end
        conn.executemany("INSERT OR REPLACE INTO source_slices VALUES (?, ?, ?, ?)", kept)
    before = len(server.requests)
    report = sync(pa.Table.from_pylist(rows), EVENTS, client, state=path, name="t", now=NOW)
    assert sent_keys(server, start=before) == ["r0003"]
    assert (report.sent, report.unchanged) == (1, 19)


def test_a_dictionary_column_is_read_through_its_dictionary(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path
) -> None:
    """A record batch's Arrow bytes hold a dictionary column's indices, not its dictionary:
    a new dictionary with the same indices is a change, and is sent."""
    rows = event_rows(10, users=2)
    path = tmp_path / "state.sqlite"

    def table(words: list[str]) -> Any:
        plain = pa.Table.from_pylist(rows)
        notes = pa.DictionaryArray.from_arrays(pa.array([n % 2 for n in range(10)]), words)
        return plain.append_column("value_note", notes)

    mapping = attrs.evolve(EVENTS, custom_attributes={"value": "value_note", "row_id": "id"})
    sync(table(["a", "b"]), mapping, client, state=path, name="t", now=NOW)
    before = len(server.requests)
    report = sync(table(["a", "c"]), mapping, client, state=path, name="t", now=NOW)
    assert sorted(sent_keys(server, start=before)) == [f"r{n:04d}" for n in range(1, 10, 2)]
    assert (report.sent, report.unchanged) == (5, 5)


def test_a_slice_with_a_key_twice_is_not_vouched_for(
    client: EventsClient, tmp_path: Path, digested: list[int]
) -> None:
    rows = event_rows(SLICE, users=2)
    rows[5] = dict(rows[1])
    path = tmp_path / "state.sqlite"
    for _ in range(2):
        report = sync(pa.Table.from_pylist(rows), EVENTS, client, state=path, name="t", now=NOW)
        assert [(p.row.row_number, p.reason) for p in report.rejects] == [
            (6, "duplicate primary key, first seen at row 2")
        ]
    assert _slices(path) == 0
    assert len(digested) == 2 * SLICE


def test_a_changed_row_before_an_unchanged_repeat_of_its_key_is_the_one_sent(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path
) -> None:
    """The engine maps rows 1 and 3 in one run; row 2 between them is skipped (its value
    is the stored one). Row 1 comes first, so it is sent and rows 2 and 3 are turned away
    (the engine once rejected row 1 and counted row 2 unchanged: the new value was lost)."""
    path = tmp_path / "state.sqlite"
    row = event_rows(1)[0]
    for values in ([0], [1000, 0], [2000, 1000, 0]):
        rows = [{**row, "value": value} for value in values]
        before = len(server.requests)
        report = sync(pa.Table.from_pylist(rows), EVENTS, client, state=path, name="t", now=NOW)
        assert [e["value"] for e in _sent_values(server, before)] == [values[0]]
        assert [(p.row.row_number, p.reason) for p in report.rejects] == [
            (number, "duplicate primary key, first seen at row 1")
            for number in range(2, len(values) + 1)
        ]


def _sent_values(server: FakeEventsServer, start: int) -> list[dict[str, Any]]:
    return [
        event.custom_attributes  # type: ignore[attr-defined]
        for request in server.requests[start:]
        for batch in request.batches or ()
        for event in batch.events or ()
    ]


def test_the_span_text_is_the_rows_text(tmp_path: Path) -> None:
    keys = ["a", "b:c", "é", "日本", "10", "9", "z" * 40]
    with StateStore(tmp_path / "state.sqlite") as store:
        store.begin_sync("t", kind="custom_event", fingerprint="f")
        with store._transaction() as conn:
            conn.executemany(
                "INSERT INTO accepted (name, key, hash, accepted_at, source) "
                "VALUES ('t', ?, 'h', 0, ?)",
                [(key, f"{n:032x}") for n, key in enumerate(keys)],
            )
        pairs = [(key, f"{n:032x}") for n, key in enumerate(keys)]
        assert store.source_span("t", min(keys), max(keys), len(keys)) == rows_text(pairs)
        inner = sorted(keys)[1:-1]
        assert store.source_span("t", inner[0], inner[-1], len(inner)) == rows_text(
            [pair for pair in pairs if pair[0] in inner]
        )
        # Another count of entries in the span, or none: nothing to compare.
        assert store.source_span("t", min(keys), max(keys), len(keys) - 1) is None
        assert store.source_span("t", min(keys), max(keys), len(keys) + 1) is None
        assert store.source_span("t", "zz", "zzz", 0) is None


def _report(report: SyncReport, server: FakeEventsServer, start: int) -> tuple[Any, ...]:
    return (
        sorted(map(repr, _sent(server, start))),
        [(p.row.row_number, p.reason) for p in report.rejects],
        report.unchanged,
        report.rows_in,
    )


def _sent(server: FakeEventsServer, start: int) -> list[Any]:
    """Each accepted batch's events, or its user attributes (and those it deletes)."""
    out: list[Any] = []
    for request in server.requests[start:]:
        if request.accepted:
            for batch in request.batches or ():
                if batch.events:
                    out.extend(event.custom_attributes for event in batch.events)  # type: ignore[attr-defined]
                else:
                    out.append((batch.user_attributes, batch.deleted_user_attributes))
    return out


def _profiles(count: int) -> list[dict[str, Any]]:
    return [
        {"user": f"u{n:04d}", "plan": "pro" if n % 2 else "free", "city": "Lyon", "score": n}
        for n in range(count)
    ]


_KINDS = {
    "events": (EVENTS, lambda count: event_rows(count, users=3), "id"),
    # One user: the engine maps long runs of rows, with skipped rows between.
    "one user's events": (EVENTS, lambda count: event_rows(count, users=1), "id"),
    "profiles": (PROFILES, _profiles, "user"),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(_KINDS)),
    count=st.integers(1, 24),
    rounds=st.lists(
        st.tuples(
            st.lists(
                st.tuples(st.integers(0, 40), st.sampled_from(["value", "flip", "twice", "drop"])),
                max_size=5,
            ),
            st.sampled_from(["keep", "shuffle", "reverse"]),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_arrow_runs_send_reject_count_and_store_what_rows_do(
    kind: str,
    count: int,
    rounds: list[tuple[list[tuple[int, str]], str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Round after round of edits (values changed and flipped back, keys repeated, rows
    dropped, reordered), the Arrow sync and the row sync over the same values agree."""
    folder = tmp_path_factory.mktemp("slices")
    arrow_state, row_state = folder / "arrow.sqlite", folder / "rows.sqlite"
    mapping, make_rows, key = _KINDS[kind]
    rows = make_rows(count)
    original = [dict(row) for row in rows]
    shuffler = random.Random(count)
    with (
        FakeEventsServer(now=lambda: NOW) as fake,
        EventsClient(
            "test-key", "test-secret", base_url=fake.url, max_workers=1, rate_limit=None
        ) as events,
    ):
        table = pa.Table.from_pylist(rows)
        sync(table, mapping, events, state=arrow_state, name="t", now=NOW)
        shutil.copyfile(arrow_state, row_state)
        for edits, order in rounds:
            rows = _edited(rows, original, edits, key)
            if order == "shuffle":
                shuffler.shuffle(rows)
            elif order == "reverse":
                rows.reverse()
            table = pa.Table.from_pylist(rows)
            outcomes = []
            for path, source in ((arrow_state, table), (row_state, table.to_pylist())):
                start = len(fake.requests)
                report = sync(source, mapping, events, state=path, name="t", now=NOW)
                check_invariant(report)
                outcomes.append(_report(report, fake, start))
            assert outcomes[0] == outcomes[1]
            stored = []
            for path in (arrow_state, row_state):
                with StateStore(path, read_only=True) as store:
                    stored.append({e.key: (e.hash, e.source) for e in store.entries("t")})
            assert stored[0] == stored[1]


def _edited(
    rows: list[dict[str, Any]],
    original: list[dict[str, Any]],
    edits: list[tuple[int, str]],
    key: str,
) -> list[dict[str, Any]]:
    out = [dict(row) for row in rows]
    for index, edit in edits:
        position = index % len(out)
        row = out[position]
        if edit == "value":
            field = "value" if "value" in row else "score"
            row[field] = int(row[field]) + 1000
        elif edit == "flip":  # back to what the first run sent
            row.update(next(r for r in original if r[key] == row[key]))
        elif edit == "twice":
            out.insert((index * 7) % (len(out) + 1), dict(row))
        elif len(out) > 1:  # an empty table has no columns to map
            del out[position]
    return out
