"""rows_from_cursor over sqlite3, DuckDB and any PEP 249 cursor: fetchmany only, names from description."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.spec import CustomEventMapping
from mparticle_feed._source.rows import rows_from_cursor
from mparticle_feed._source.sources import rows_from


class ListCursor:
    """A minimal PEP 249 cursor over fixed rows; fetchall is forbidden."""

    def __init__(self, names: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
        self.description = [(name, None, None, None, None, None, None) for name in names]
        self._rows = list(rows)
        self.fetch_sizes: list[int] = []

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        self.fetch_sizes.append(size)
        chunk, self._rows = self._rows[:size], self._rows[size:]
        return chunk

    def fetchall(self) -> list[tuple[Any, ...]]:
        raise AssertionError("rows_from_cursor must never call fetchall")


@given(rows=st.lists(st.tuples(st.integers(), st.text()), max_size=30), chunk=st.integers(1, 7))
def test_every_row_comes_back_once_in_order_in_chunks(
    rows: list[tuple[int, str]], chunk: int
) -> None:
    cursor = ListCursor(["id", "name"], rows)
    out = list(rows_from_cursor(cursor, chunk_size=chunk))
    assert out == [{"id": i, "name": n} for i, n in rows]
    assert set(cursor.fetch_sizes) == {chunk}


def test_rows_are_fetched_lazily() -> None:
    cursor = ListCursor(["x"], [(i,) for i in range(10)])
    rows = rows_from_cursor(cursor, chunk_size=3)
    assert next(rows) == {"x": 0}
    assert cursor.fetch_sizes == [3]


def test_sqlite3_cursor() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, str(i)) for i in range(2500)])
    rows = list(rows_from_cursor(db.execute("SELECT a, b AS bee FROM t ORDER BY a")))
    assert len(rows) == 2500
    assert rows[-1] == {"a": 2499, "bee": "2499"}


def test_sqlite3_row_factory_rows_work_too() -> None:
    db = sqlite3.connect(":memory:")
    db.row_factory = sqlite3.Row
    assert list(rows_from_cursor(db.execute("SELECT 1 AS one, 'x' AS ex"))) == [
        {"one": 1, "ex": "x"}
    ]


def test_duckdb_cursor_through_map_rows() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE views AS SELECT range AS id, 'u' || (range % 3) AS email, "
        "TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_seconds(range) AS at, "
        "[range, range + 1] AS tags FROM range(10)"
    )
    cursor = con.execute("SELECT * FROM views ORDER BY email, id")
    rows = list(rows_from_cursor(cursor, chunk_size=4))
    assert len(rows) == 10
    assert rows[0]["tags"] == [0, 1]
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"email": "email"},
        event_name="email",
        timestamp_unixtime_ms="at",
    )
    run = map_rows(rows_from_cursor(con.execute("SELECT * FROM views ORDER BY email, id")), mapping)
    batches = list(run)
    assert run.rows_mapped == 10
    assert len(batches) == 3
    assert batches[0].batch.events is not None
    event = batches[0].batch.events[0]
    assert isinstance(event, mpf.CustomEvent)
    assert event.timestamp_unixtime_ms == 1704067200000


def test_a_cursor_without_a_result_set_is_refused() -> None:
    db = sqlite3.connect(":memory:")
    cursor = db.execute("CREATE TABLE t (a)")
    with pytest.raises(mpf.MappingError, match="no result set"):
        list(rows_from_cursor(cursor))


def test_duplicate_column_names_are_refused() -> None:
    db = sqlite3.connect(":memory:")
    with pytest.raises(mpf.MappingError, match="several columns named 'a'"):
        list(rows_from_cursor(db.execute("SELECT 1 AS a, 2 AS a")))


def test_chunk_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(rows_from_cursor(ListCursor(["a"], []), chunk_size=0))


def test_a_row_of_the_wrong_width_is_an_error() -> None:
    cursor = ListCursor(["a", "b"], [(1, 2), (3,)])
    with pytest.raises(mpf.MappingError, match="row 2 has 1 values for 2 columns"):
        list(rows_from_cursor(cursor))


def test_rows_from_accepts_cursors_and_iterables_of_dicts() -> None:
    records = [{"a": 1}, {"a": 2}]
    assert list(rows_from(records)) == records
    assert list(rows_from(iter(records))) == records
    assert list(rows_from(ListCursor(["a"], [(1,), (2,)]))) == records
