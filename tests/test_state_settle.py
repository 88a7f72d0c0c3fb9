"""Settling accepted outbox batches: entries upserted from their stored JSON inside SQLite
give the same state as entries parsed in Python (the path without SQLite's JSON functions)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mparticle_feed._errors import StateError
from mparticle_feed._sync.state import OutboxBatch, StateEntry, StateStore

# Keys and attribute names as a sync may hold them: any valid Unicode text.
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_entries = st.lists(
    st.builds(
        StateEntry,
        key=_text,
        hash=st.text("0123456789abcdef", min_size=1, max_size=32),
        attributes=st.none() | st.dictionaries(_text, _text, max_size=3),
    ),
    max_size=8,
    unique_by=lambda e: e.key,
)


def _settled(
    path: Path, earlier: list[StateEntry], batches: list[list[StateEntry]], *, json: bool
) -> tuple[dict[str, StateEntry], int]:
    with StateStore(path) as store:
        store._json = json
        store.begin_sync("s", kind="custom_event", fingerprint="f")
        store.record_accepted("s", earlier)
        store.outbox_add(
            "s",
            [
                (
                    "/v2/bulkevents",
                    [
                        OutboxBatch(
                            source_request_id=f"r{number}",
                            body=b"{}",
                            rows=(),
                            event_rows=(),
                            entries=tuple(entries),
                        )
                        for number, entries in enumerate(batches)
                    ],
                )
            ],
        )
        outcomes = [
            (f"r{number}", "accepted" if number % 3 else "rejected")
            for number in range(len(batches))
        ]
        store.settle_many("s", outcomes)
        keys = [e.key for e in earlier] + [e.key for entries in batches for e in entries]
        assert not store.outbox("s")
        return store.get_many("s", keys), store.count("s")


@settings(max_examples=60, deadline=None)
# SQLite's JSON functions cut text at a NUL: such entries must still be stored whole.
@example(earlier=[], batches=[[], [StateEntry(key="a\x00b", hash="0", attributes={"\x00": "1"})]])
@given(
    earlier=_entries,
    batches=st.lists(_entries, max_size=5).filter(
        lambda batches: len({e.key for b in batches for e in b}) == sum(map(len, batches))
    ),
)
def test_sql_and_python_settle_store_the_same(
    tmp_path_factory: pytest.TempPathFactory,
    earlier: list[StateEntry],
    batches: list[list[StateEntry]],
) -> None:
    folder = tmp_path_factory.mktemp("settle")
    in_sql = _settled(folder / "sql.db", earlier, batches, json=True)
    in_python = _settled(folder / "python.db", earlier, batches, json=False)
    assert in_sql == in_python
    expected = {e.key: e for e in earlier}
    for number, entries in enumerate(batches):
        if number % 3:
            expected.update({e.key: e for e in entries})
    assert in_sql == (expected, len(expected))


def test_this_sqlite_settles_inside_sqlite(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.db") as store:
        assert store._json


def _request(number: int, bodies: list[bytes]) -> tuple[str, list[OutboxBatch]]:
    return (
        "/v2/bulkevents",
        [
            OutboxBatch(
                source_request_id=f"id-{number}-{position}",
                body=body,
                rows=((position + 1, f"k{number}-{position}"),),
                event_rows=((position + 1, f"k{number}-{position}"),),
                entries=(StateEntry(key=f"k{number}-{position}", hash="h", source="s"),),
            )
            for position, body in enumerate(bodies)
        ],
    )


@settings(max_examples=30, deadline=None)
@given(
    requests=st.lists(
        st.lists(
            st.binary(min_size=0, max_size=40).map(lambda b: b'{"b":"' + b.hex().encode() + b'"}'),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    ),
    data=st.data(),
)
def test_the_outbox_hands_back_each_batch_s_bytes(
    requests: list[list[bytes]], data: st.DataObject, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Bodies are kept whole per request; every unsettled batch's slice is its own bytes."""
    path = tmp_path_factory.mktemp("outbox") / "s.sqlite"
    with StateStore(path) as store:
        store.begin_sync("t", kind="custom_event", fingerprint="f")
        store.outbox_add("t", [_request(n, bodies) for n, bodies in enumerate(requests)])
        ids = [f"id-{n}-{p}" for n, bodies in enumerate(requests) for p in range(len(bodies))]
        settled = data.draw(st.sets(st.sampled_from(ids)))
        store.settle_many("t", [(rid, "accepted") for rid in sorted(settled)])
        left = {b.source_request_id: b.body for r in store.outbox("t") for b in r.batches}
        expected = {
            f"id-{n}-{p}": body
            for n, bodies in enumerate(requests)
            for p, body in enumerate(bodies)
            if f"id-{n}-{p}" not in settled
        }
        assert left == expected
        for request in store.outbox("t"):
            assert request.body == b"[" + b",".join(b.body for b in request.batches) + b"]"
        assert {e.key: e.source for e in store.entries("t")} == {
            f"k{rid.split('-')[1]}-{rid.split('-')[2]}": "s" for rid in settled
        }


def test_an_outbox_written_before_whole_request_bodies_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with StateStore(path) as store:
        store.begin_sync("t", kind="custom_event", fingerprint="f")
        store.outbox_add("t", [_request(0, [b'{"a":1}', b'{"b":2}'])])
    with sqlite3.connect(path) as conn:  # as an older build wrote it: each batch its bytes
        conn.execute(
            "UPDATE outbox_batches SET body = CASE position WHEN 0 THEN ? ELSE ? END, body_start = NULL, body_end = NULL",
            (b'{"a":1}', b'{"b":2}'),
        )
        conn.execute("UPDATE outbox SET body = NULL")
    with StateStore(path) as store:
        (request,) = store.outbox("t")
        assert request.body == b'[{"a":1},{"b":2}]'


def test_a_batch_whose_request_lost_its_bytes_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with StateStore(path) as store:
        store.begin_sync("t", kind="custom_event", fingerprint="f")
        store.outbox_add("t", [_request(0, [b'{"a":1}'])])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE outbox SET body = NULL")
    with StateStore(path) as store, pytest.raises(StateError, match="lost its request's bytes"):
        store.outbox("t")
