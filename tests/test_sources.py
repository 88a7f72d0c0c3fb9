"""rows_from(): every source kind gives the same rows, hence the same exact JSON.

The same three rows (a NULL text, a nullable integer, an aware timestamp, a NULL timestamp)
come from each kind of source; each must map to one expected document, byte for byte.
"""

from __future__ import annotations

import collections
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import duckdb
import orjson
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import sqlalchemy
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.arrow import arrow_source_reader
from mparticle_feed._source.sources import arrow_reader, is_cursor

AT = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
COLUMNS = ["id", "customer", "plan", "visits", "at", "seen"]
ROWS: list[tuple[Any, ...]] = [
    (1, "c1", "gold", 5, AT, AT - timedelta(days=1)),
    (2, "c1", None, None, AT + timedelta(hours=1), None),
    (3, "c2", "free", 7, AT + timedelta(hours=2), AT),
]
MAPPING = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "customer"},
    event_name=mpf.Constant("Page Viewed"),
    custom_event_type=mpf.Constant("navigation"),
    timestamp_unixtime_ms="at",
    custom_attributes={"plan": "plan", "visits": "visits", "seen": "seen"},
)
EXPECTED = [
    {
        "events": [
            {
                "data": {
                    "custom_attributes": {
                        "plan": "gold",
                        "seen": "2024-02-29T12:00:00+00:00",
                        "visits": 5,
                    },
                    "custom_event_type": "navigation",
                    "event_name": "Page Viewed",
                    "timestamp_unixtime_ms": 1709294400000,
                },
                "event_type": "custom_event",
            },
            {
                "data": {
                    "custom_event_type": "navigation",
                    "event_name": "Page Viewed",
                    "timestamp_unixtime_ms": 1709298000000,
                },
                "event_type": "custom_event",
            },
        ],
        "environment": "development",
        "user_identities": {"customer_id": "c1"},
    },
    {
        "events": [
            {
                "data": {
                    "custom_attributes": {
                        "plan": "free",
                        "seen": "2024-03-01T12:00:00+00:00",
                        "visits": 7,
                    },
                    "custom_event_type": "navigation",
                    "event_name": "Page Viewed",
                    "timestamp_unixtime_ms": 1709301600000,
                },
                "event_type": "custom_event",
            }
        ],
        "environment": "development",
        "user_identities": {"customer_id": "c2"},
    },
]


def _records() -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]


def _without_ids(document: Any) -> Any:
    for batch in document:
        batch.pop("source_request_id", None)
    return document


def _mapped(source: object) -> Any:
    run = mpf.map_rows(source, MAPPING)
    batches = [sourced.batch for sourced in run]
    assert run.rows_in == 3
    assert run.rows_rejected == 0, run.rejected
    return _without_ids(orjson.loads(mpf.dumps(batches)))


class FakeCursor:
    """A PEP 249 cursor whose rows are built by ``make``; ``late`` hides description until a fetch."""

    def __init__(self, make: Callable[[tuple[Any, ...]], Any], *, late: bool = False) -> None:
        self._description = [(name, None, None, None, None, None, None) for name in COLUMNS]
        self._rows = [make(row) for row in ROWS]
        self._late = late

    @property
    def description(self) -> Any:
        return None if self._late else self._description

    def fetchmany(self, size: int = 1) -> list[Any]:
        self._late = False
        chunk, self._rows = self._rows[:size], self._rows[size:]
        return chunk


def _sqlite(row_factory: Any = None) -> sqlite3.Cursor:
    db = sqlite3.connect(":memory:")
    if row_factory is not None:
        db.row_factory = row_factory
    db.execute(
        "CREATE TABLE t (id INTEGER, customer TEXT, plan TEXT, visits INTEGER, at TEXT, seen TEXT)"
    )
    db.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)",
        [(*row[:4], row[4].isoformat(), row[5] and row[5].isoformat()) for row in ROWS],
    )
    return db.execute("SELECT * FROM t ORDER BY id")


def _duckdb() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(
        'CREATE TABLE t (id INTEGER, customer TEXT, plan TEXT, visits BIGINT, "at" TIMESTAMPTZ, seen TIMESTAMPTZ)'
    )
    con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", ROWS)
    return con


def _pandas() -> pd.DataFrame:
    frame = pd.DataFrame(_records())
    # What a warehouse read gives: nullable integers, NULL text as NaN, NULL timestamps as NaT.
    frame["visits"] = frame["visits"].astype("Int64")
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    frame["seen"] = pd.to_datetime(frame["seen"], utc=True)
    return frame


def _arrow() -> pa.Table:
    return pa.Table.from_pylist(
        _records(),
        schema=pa.schema(
            [
                ("id", pa.int64()),
                ("customer", pa.string()),
                ("plan", pa.string()),
                ("visits", pa.int64()),
                ("at", pa.timestamp("us", tz="UTC")),
                ("seen", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )


def _sqlalchemy() -> Iterator[Any]:
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as connection:
        connection.execute(
            sqlalchemy.text(
                "CREATE TABLE t (id INTEGER, customer TEXT, plan TEXT, visits INTEGER, at TEXT, seen TEXT)"
            )
        )
        connection.execute(
            sqlalchemy.text("INSERT INTO t VALUES (:id, :customer, :plan, :visits, :at, :seen)"),
            [
                {
                    **record,
                    "at": record["at"].isoformat(),
                    "seen": record["seen"] and record["seen"].isoformat(),
                }
                for record in _records()
            ],
        )
        yield connection.execution_options(stream_results=True).execute(
            sqlalchemy.text("SELECT * FROM t ORDER BY id")
        )
    engine.dispose()


class ArrowStream:
    """Any object exporting the Arrow C stream interface (as nanoarrow or Polars do)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        return self.table.__arrow_c_stream__(requested_schema)


Row = collections.namedtuple("Row", COLUMNS)

SOURCES: dict[str, Callable[[], Any]] = {
    "list of dicts": _records,
    "generator of dicts": lambda: iter(_records()),
    "sqlite3 tuples": _sqlite,
    "sqlite3.Row": lambda: _sqlite(sqlite3.Row),
    "named-tuple rows": lambda: FakeCursor(lambda row: Row(*row)),
    "dict rows": lambda: FakeCursor(lambda row: dict(zip(COLUMNS, row, strict=True))),
    "description after the first fetch": lambda: FakeCursor(tuple, late=True),
    "duckdb cursor": lambda: _duckdb().execute("SELECT * FROM t ORDER BY id"),
    "duckdb relation": lambda: _duckdb().sql("SELECT * FROM t ORDER BY id"),
    "pandas DataFrame": _pandas,
    "polars DataFrame": lambda: pl.from_arrow(_arrow()),
    "pyarrow Table": _arrow,
    "pyarrow RecordBatch": lambda: _arrow().to_batches()[0],
    "pyarrow RecordBatchReader": lambda: _arrow().to_reader(max_chunksize=1),
    "Arrow C stream": lambda: ArrowStream(_arrow()),
}


def test_the_expected_document_is_the_one_from_plain_dicts() -> None:
    assert _mapped(_records()) == EXPECTED


@pytest.mark.parametrize("kind", list(SOURCES))
def test_every_source_kind_maps_to_the_same_exact_json(kind: str) -> None:
    assert _mapped(SOURCES[kind]()) == EXPECTED


def test_a_sqlalchemy_result_maps_to_the_same_exact_json() -> None:
    for result in _sqlalchemy():
        assert _mapped(result) == EXPECTED


@pytest.mark.parametrize("kind", ["sqlite3 tuples", "pandas DataFrame", "pyarrow Table"])
@pytest.mark.parametrize("chunk_size", [1, 2, 1000])
def test_chunk_size_changes_nothing(kind: str, chunk_size: int) -> None:
    rows = list(mpf.rows_from(SOURCES[kind](), chunk_size=chunk_size))
    assert [row["id"] for row in rows] == [1, 2, 3]
    assert rows[1]["plan"] is None
    assert rows[1]["visits"] is None
    assert rows[1]["seen"] is None


def test_pandas_nulls_are_none_and_nullable_integers_stay_integers() -> None:
    frame = _pandas()
    frame["score"] = [1.5, float("nan"), 2.0]
    rows = list(mpf.rows_from(frame))
    assert rows[1] == {
        "id": 2,
        "customer": "c1",
        "plan": None,
        "visits": None,
        "at": AT + timedelta(hours=1),
        "seen": None,
        "score": None,
    }
    assert type(rows[0]["visits"]) is int
    assert type(rows[0]["at"]) is datetime
    assert rows[0]["at"].tzinfo is not None


def test_pandas_nanoseconds_are_cut_to_microseconds_without_a_warning() -> None:
    frame = pd.DataFrame({"at": pd.to_datetime(["2026-11-30 10:00:00.123456789"], utc=True)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warns when it drops nanoseconds unless told not to
        (row,) = mpf.rows_from(frame)
    assert row["at"] == datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=timezone.utc)


def test_pandas_object_columns_with_pd_na_and_decimals() -> None:
    frame = pd.DataFrame({"a": pd.Series([Decimal("1.10"), pd.NA], dtype=object)})
    assert list(mpf.rows_from(frame)) == [{"a": Decimal("1.10")}, {"a": None}]


def test_an_arrow_nan_is_a_value_and_is_rejected_as_today() -> None:
    table = _arrow().append_column("score", pa.array([1.0, float("nan"), None]))
    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "customer"},
        event_name=mpf.Constant("x"),
        custom_attributes={"score": "score"},
    )
    run = mpf.map_rows(table, mapping)
    list(run)
    assert [problem.row.row_number for problem in run.rejected] == [2]
    assert "nan is not a finite number" in run.rejected[0].reason


def test_arrow_time_zones_are_kept() -> None:
    paris = pa.array([AT], pa.timestamp("us", tz="Europe/Paris"))
    (row,) = mpf.rows_from(pa.table({"at": paris}))
    assert row["at"] == AT
    assert row["at"].utcoffset() == timedelta(hours=1)


def test_arrow_reader_is_none_for_other_sources() -> None:
    assert arrow_reader(_records()) is None
    assert arrow_reader(_pandas()) is None
    assert arrow_reader(pl.from_arrow(_arrow())) is None
    assert isinstance(arrow_reader(_arrow()), pa.RecordBatchReader)
    assert isinstance(arrow_reader(_duckdb().sql("SELECT 1 AS a")), pa.RecordBatchReader)


def test_rows_that_are_not_mappings_are_rejected_one_by_one() -> None:
    run = mpf.map_rows([(1, "c1"), *_records()], MAPPING)
    assert len(list(run)) == 2
    assert run.rows_in == 4
    assert [problem.row.row_number for problem in run.rejected] == [1]
    assert "a row must be a mapping of column → value, got tuple" in run.rejected[0].reason


def test_columns_are_known_before_the_first_row() -> None:
    assert mpf.rows_from(_arrow()).columns == COLUMNS
    assert mpf.rows_from(_pandas()).columns == COLUMNS
    assert mpf.rows_from(_sqlite()).columns == COLUMNS
    assert mpf.rows_from(_records()).columns is None  # dict rows may differ from row to row
    cursor = FakeCursor(tuple, late=True)
    rows = mpf.rows_from(cursor)
    assert rows.columns == COLUMNS  # fetched the first chunk to learn them, and kept it
    assert [row["id"] for row in rows] == [1, 2, 3]


@pytest.mark.parametrize(
    ("source", "says"),
    [
        (pd.DataFrame({"a": [1]})["a"], "pass a DataFrame"),
        (pl.DataFrame({"a": [1]}).lazy(), "collect the LazyFrame"),
        (sqlite3.connect(":memory:"), "execute a query on a cursor"),
        (sqlalchemy.create_engine("sqlite://"), "execute the query and pass its Result"),
        ({"a": 1}, "an iterable of dicts"),
        ("SELECT 1", "an iterable of dicts"),
        (42, "an iterable of dicts"),
    ],
    ids=lambda value: type(value).__name__,
)
def test_the_wrong_kind_of_source_is_refused_once_naming_its_type(
    source: object, says: str
) -> None:
    with pytest.raises(mpf.ConfigurationError, match=says) as caught:
        mpf.map_rows(source, MAPPING)
    assert type(source).__name__ in str(caught.value)


def test_the_check_happens_before_any_row_is_read() -> None:
    cursor = FakeCursor(tuple)
    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="idd",
        user_identities={"customer_id": "customer"},
        event_name=mpf.Constant("x"),
    )
    with pytest.raises(mpf.MappingError, match="'idd' is not in the source"):
        mpf.map_rows(cursor, mapping)
    assert len(cursor._rows) == 3


@given(
    st.lists(
        st.tuples(st.integers(-(2**62), 2**62) | st.none(), st.text(max_size=5) | st.none()),
        max_size=20,
    ),
    st.integers(1, 5),
)
def test_pandas_and_arrow_give_back_what_went_in(rows: list[tuple[Any, Any]], chunk: int) -> None:
    records = [{"n": n, "s": s} for n, s in rows]
    frame = pd.DataFrame(
        {
            "n": pd.array([n for n, _ in rows], dtype="Int64"),
            "s": pd.array([s for _, s in rows], dtype=object),
        }
    )
    table = pa.table(
        {
            "n": pa.array([n for n, _ in rows], pa.int64()),
            "s": pa.array([s for _, s in rows], pa.string()),
        }
    )
    assert list(mpf.rows_from(frame, chunk_size=chunk)) == records
    assert list(mpf.rows_from(table, chunk_size=chunk)) == records
    assert list(mpf.rows_from(pl.from_arrow(table), chunk_size=chunk)) == records


def test_ordering_by_user_makes_fewer_batches() -> None:
    """The figures docs/sources.md quotes: 200 page views of 40 users, by user or by time."""
    views = [{"id": n, "customer": f"c{n % 40}"} for n in range(200)]  # by time: users interleave
    by_user = sorted(views, key=lambda row: (row["customer"], row["id"]))
    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "customer"},
        event_name=mpf.Constant("Page Viewed"),
    )
    assert len(list(mpf.map_rows(by_user, mapping, group_window=0))) == 40
    assert len(list(mpf.map_rows(views, mapping, group_window=0))) == 200
    # The regroup window (10,000 rows by default) gathers the interleaved users again.
    assert len(list(mpf.map_rows(views, mapping))) == 40


class _MappingWithCursorNames(dict[str, Any]):
    description = (("id",),)

    def fetchmany(self, size: int = 1) -> list[Any]:
        return []


class _OnlyFetchmany:
    def fetchmany(self, size: int = 1) -> list[Any]:
        return []


def test_both_engines_tell_a_cursor_by_one_rule() -> None:
    """rows_from and the Arrow engine ask is_cursor: a DuckDB cursor is read as a cursor."""
    sqlite_cursor = sqlite3.connect(":memory:").execute("SELECT 1 AS id")
    duck = duckdb.connect()
    duck_cursor = duck.execute("SELECT 1 AS id")
    engine = sqlalchemy.create_engine("sqlite://")
    with engine.connect() as connection:
        result = connection.execute(sqlalchemy.text("SELECT 1 AS id"))
        assert is_cursor(result)
        assert arrow_source_reader(result) is None
        result.close()
    for cursor in (sqlite_cursor, duck_cursor):
        assert is_cursor(cursor)
        assert arrow_source_reader(cursor) is None
    for other in (
        _MappingWithCursorNames(),
        _OnlyFetchmany(),
        [{"id": 1}],
        "id",
        duck.sql("SELECT 1"),
    ):
        assert not is_cursor(other)
    assert list(mpf.rows_from(duck.execute("SELECT 1 AS id"))) == [{"id": 1}]
