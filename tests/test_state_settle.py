"""Settling accepted outbox batches: entries upserted from their stored JSON inside SQLite
give the same state as entries parsed in Python (the path without SQLite's JSON functions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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
