"""The CLI reads a DuckDB query as Arrow when that changes nothing but the speed.

``--db duckdb:///...`` hands the Arrow engine a DuckDB relation when pyarrow is installed and
every column's type gives, through Arrow, the very values the cursor gives; any other column
type keeps the cursor. Checked here value by value for each such type, then end to end: the
same rows planned both ways give identical requests and rejects.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._cli import main
from mparticle_feed._source import connect
from mparticle_feed._source.connect import open_query

pytest.importorskip("pyarrow")

#: Each type the CLI reads as Arrow, with values that stress it (NULL among them).
ARROW_TYPES = {
    "BOOLEAN": ["true", "false", "NULL"],
    "TINYINT": ["-128", "127", "NULL"],
    "SMALLINT": ["-32768", "32767"],
    "INTEGER": ["-2147483648", "2147483647"],
    "BIGINT": ["-9223372036854775808", "9223372036854775807", "NULL"],
    "UTINYINT": ["0", "255"],
    "USMALLINT": ["65535"],
    "UINTEGER": ["4294967295"],
    "UBIGINT": ["18446744073709551615", "0"],
    "FLOAT": ["1.5", "'nan'", "'inf'", "'-inf'", "-0.0", "3.4e38"],
    "DOUBLE": ["0.1", "'nan'", "'-inf'", "-0.0", "1e308", "5e-324", "NULL"],
    "DECIMAL(4,1)": ["-999.9", "0.0", "NULL"],
    "DECIMAL(18,6)": ["123456789012.123456", "-0.000001"],
    "DECIMAL(38,10)": ["1234567890123456789012345678.0123456789", "-1"],
    "VARCHAR": ["''", "'é\U0001f600'", "'a\"b\\\\c'", "chr(0)", "NULL"],
    "JSON": ["'{\"a\": [1, 2]}'", "'null'"],
    "BLOB": ["'\\xff\\x00'::BLOB", "''::BLOB"],
    "DATE": ["DATE '1970-01-01'", "DATE '9999-12-31'", "DATE '0001-01-01'"],
    "TIME": ["TIME '23:59:59.999999'", "TIME '00:00:00'"],
    "TIMESTAMP": ["TIMESTAMP '2024-02-29 12:34:56.789012'", "TIMESTAMP '1900-01-01'"],
    "TIMESTAMP_S": ["TIMESTAMP_S '2024-01-01 00:00:01'"],
    "TIMESTAMP_MS": ["TIMESTAMP_MS '2024-01-01 00:00:01.123'"],
    "TIMESTAMPTZ": ["TIMESTAMPTZ '2024-03-31 01:30:00+02'", "TIMESTAMPTZ '1969-12-31 23:59:59Z'"],
    "INTEGER[]": ["[1, NULL, 3]", "[]", "NULL"],
    "VARCHAR[][]": ["[['a'], [], NULL]"],
    "STRUCT(a INTEGER, b VARCHAR[])": ["{'a': 1, 'b': ['x']}", "{'a': NULL, 'b': NULL}"],
}
#: Types whose Arrow values differ from the cursor's: the CLI keeps the cursor for them.
CURSOR_TYPES = {
    "HUGEINT": "2::HUGEINT",
    "UHUGEINT": "2::UHUGEINT",
    "UUID": "'015617c7-e49d-40b3-9de2-25500ce406f6'::UUID",
    "INTERVAL": "INTERVAL 3 DAY",
    "MAP": "MAP {'k': 1}",
    "TIMESTAMP_NS": "TIMESTAMP_NS '2024-01-01 10:00:00.123456789'",
    "BIT": "'101'::BIT",
    "a list of UUID": "['015617c7-e49d-40b3-9de2-25500ce406f6'::UUID]",
    "a struct with a HUGEINT": "{'a': 2::HUGEINT}",
}


def _database(path: Path, select: str) -> str:
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE t AS {select}")
    return f"duckdb:///{path}"


def _same(left: Any, right: Any) -> bool:
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return (math.isnan(left) and math.isnan(right)) or (
            left == right and math.copysign(1, left) == math.copysign(1, right)
        )
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(_same, left, right))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    return bool(left == right)


def _cursor_rows(db: str, query: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    with monkeypatch.context() as patched:
        patched.setattr(connect, "_has_pyarrow", lambda: False)
        with open_query(db, query) as cursor:
            assert isinstance(cursor, duckdb.DuckDBPyConnection)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows


@pytest.mark.parametrize("sql_type", sorted(ARROW_TYPES))
def test_a_type_read_as_arrow_gives_the_cursors_values(
    sql_type: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    select = " UNION ALL ".join(
        f"SELECT {n} AS n, CAST({value} AS {sql_type}) AS v"
        for n, value in enumerate(ARROW_TYPES[sql_type])
    )
    db = _database(tmp_path / "t.duckdb", select)
    query = "SELECT n, v FROM t ORDER BY n"
    with open_query(db, query) as relation:
        assert isinstance(relation, duckdb.DuckDBPyRelation), "not read as Arrow"
        arrow = [(row["n"], row["v"]) for row in mpf.rows_from(relation)]
    cursor = _cursor_rows(db, query, monkeypatch)
    assert len(arrow) == len(cursor) == len(ARROW_TYPES[sql_type])
    for (n, through_arrow), (_, from_cursor) in zip(arrow, cursor, strict=True):
        assert _same(through_arrow, from_cursor), (ARROW_TYPES[sql_type][n], through_arrow)


@pytest.mark.parametrize("what", sorted(CURSOR_TYPES))
def test_a_type_arrow_would_change_keeps_the_cursor(what: str, tmp_path: Path) -> None:
    db = _database(tmp_path / "t.duckdb", f"SELECT 1 AS n, {CURSOR_TYPES[what]} AS v")
    with open_query(db, "SELECT * FROM t") as source:
        assert isinstance(source, duckdb.DuckDBPyConnection)


def test_without_pyarrow_the_cursor_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _database(tmp_path / "t.duckdb", "SELECT 1 AS n")
    assert _cursor_rows(db, "SELECT n FROM t", monkeypatch) == [(1,)]


def test_a_query_duckdb_refuses_names_the_database_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = _database(tmp_path / "t.duckdb", "SELECT 1 AS n")
    messages = []
    for arrow in (True, False):
        monkeypatch.setattr(connect, "_has_pyarrow", lambda arrow=arrow: arrow)
        with (
            pytest.raises(mpf.ConfigurationError) as refused,
            open_query(db, "SELECT * FROM no_such_table"),
        ):
            pass
        messages.append(str(refused.value))
    # Through Arrow DuckDB leaves out the caret under the query; the rest is the same.
    for message in messages:
        assert message.startswith(f"--db {db}: ")
        assert "no_such_table" in message


MAPPING_DATA: dict[str, Any] = {
    "kind": "custom_event",
    "primary_key": "id",
    "event_name": "name",
    "custom_event_type": {"const": "other"},
    "timestamp_unixtime_ms": "ts",
    "user_identities": {"customer_id": "user", "email": "email"},
    "user_attributes": {"columns": {"score": "score", "joined": "joined"}},
    "custom_attributes": {
        "columns": {"amount": "amount", "flag": "flag", "tags": "tags", "id": "id", "at": "ts"}
    },
}
MAPPING = mpf.mapping_from_dict(MAPPING_DATA)
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)
TEXT = st.one_of(st.none(), st.text(max_size=6), st.sampled_from(["", " ", "é", "0", "a\x00"]))
ROW = st.fixed_dictionaries(
    {
        "user": st.one_of(st.none(), st.sampled_from(["u1", "u2", "u3", ""])),
        "email": TEXT,
        "name": TEXT,
        "ts": st.one_of(
            st.none(),
            st.datetimes(
                min_value=datetime(1960, 1, 1),
                max_value=datetime(2026, 5, 31),
                timezones=st.just(timezone.utc),
            ),
        ),
        "amount": st.one_of(
            st.none(), st.decimals(min_value=-(10**11), max_value=10**11, places=6)
        ),
        "score": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
        "flag": st.one_of(st.none(), st.booleans()),
        "joined": st.one_of(st.none(), st.dates()),
        # A list is rejected (custom attributes are scalars): mostly null, so rows map.
        "tags": st.one_of(
            st.none(),
            st.none(),
            st.none(),
            st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=3),
        ),
    }
)
COLUMNS = ("user", "email", "name", "ts", "amount", "score", "flag", "joined", "tags")
CREATE = (
    "CREATE TABLE events (id BIGINT, user VARCHAR, email VARCHAR, name VARCHAR, "
    "ts TIMESTAMPTZ, amount DECIMAL(18,6), score DOUBLE, flag BOOLEAN, joined DATE, "
    "tags VARCHAR[])"
)


def _planned(db: str, *, arrow: bool) -> tuple[Any, ...]:
    """What planning the table's rows gives: requests, rejects and state entries."""
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(connect, "_has_pyarrow", lambda: arrow)
        with open_query(db, "SELECT * FROM events ORDER BY id") as source:
            assert isinstance(source, duckdb.DuckDBPyRelation) is arrow
            planned = mpf.plan(source, MAPPING, now=NOW)
    requests = [
        (r.endpoint, r.body, [(b.source_request_id, b.sourced.rows) for b in r.batches])
        for r in planned.requests
    ]
    return planned.rows_in, requests, planned.rejects, planned.entries


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(ROW, max_size=40), repeat=st.integers(min_value=0, max_value=3))
def test_rows_planned_through_arrow_or_the_cursor_give_the_same_requests_and_rejects(
    rows: list[dict[str, Any]],
    repeat: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("plan")
    path = folder / "events.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE)
        # A repeated id now and then: the later row is rejected as a duplicate.
        values = [
            (n - 1 if repeat and n % (repeat + 1) == 1 else n, *(row[name] for name in COLUMNS))
            for n, row in enumerate(rows)
        ]
        if values:
            con.executemany(f"INSERT INTO events VALUES ({', '.join('?' * 10)})", values)
    db = f"duckdb:///{path}"
    assert _planned(db, arrow=True) == _planned(db, arrow=False)


THREE_ROWS = (
    "(1, 'u1', NULL, 'Bought', TIMESTAMPTZ '2026-05-01 00:00:00+00', 1.5, 0.5, true, "
    "DATE '2020-01-01', NULL), "
    "(2, 'u1', NULL, NULL, TIMESTAMPTZ '2026-05-01 00:00:00+00', 1.5, 0.5, true, NULL, NULL), "
    "(3, 'u2', 'a@b.c', 'Bought', TIMESTAMPTZ '2026-05-01 00:00:00+00', NULL, NULL, NULL, "
    "NULL, ['a'])"
)


@pytest.fixture
def cli_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[str], list[type]]:
    """The CLI's ``plan`` arguments over a DuckDB file of THREE_ROWS, and the type of each
    source ``plan`` is then handed (filled as the CLI runs)."""
    path = tmp_path / "events.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE)
        con.execute(f"INSERT INTO events VALUES {THREE_ROWS}")
    read: list[type] = []
    planner = mpf.plan

    def spy(source: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(type(source))
        return planner(source, *args, **kwargs)

    monkeypatch.setattr("mparticle_feed._sync.run.plan", spy)
    monkeypatch.setenv("MPARTICLE_FEED_TEST_NOW", NOW.isoformat())
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps(MAPPING_DATA), encoding="utf-8")
    query = "SELECT * FROM events ORDER BY id"
    db = f"duckdb:///{path}"
    return ["plan", "--db", db, "--query", query, "--mapping", str(mapping), "-q"], read


def test_the_cli_plans_a_duckdb_file_through_arrow(
    cli_plan: tuple[list[str], list[type]], tmp_path: Path
) -> None:
    arguments, read = cli_plan
    out = tmp_path / "cli.jsonl"
    assert main([*arguments, "--out", str(out), "--allow-rejected"]) == 0
    assert read == [duckdb.DuckDBPyRelation]
    reviewed = mpf.Plan.read_jsonl(out)
    rows_in, requests, rejects, _ = _planned(arguments[2], arrow=False)
    assert reviewed.rows_in == rows_in == 3
    assert [r.body for r in reviewed.requests] == [body for _, body, _ in requests]
    assert len(requests) == 1
    # Row 2's event name is null, row 3's tags a list: rejected alike both ways.
    assert [(r.row.row_number, r.field, r.reason) for r in reviewed.rejects] == [
        (r.row.row_number, r.field, r.reason) for r in rejects
    ]
    assert [r.field for r in rejects] == ["event_name", "custom_attributes.tags"]


def test_no_arrow_reads_duckdb_with_its_cursor(cli_plan: tuple[list[str], list[type]]) -> None:
    arguments, read = cli_plan
    assert main([*arguments, "--no-arrow", "--allow-rejected"]) == 0
    assert main([*arguments, "--allow-rejected"]) == 0
    assert read == [duckdb.DuckDBPyConnection, duckdb.DuckDBPyRelation]


def test_an_error_in_a_row_names_the_database_either_way(
    cli_plan: tuple[list[str], list[type]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A query that fails on a row's value: the cursor fails as it runs, a relation as it
    is read; either way the CLI names the database, with no traceback."""
    arguments, read = cli_plan
    failing = [*arguments]
    failing[failing.index("--query") + 1] = "SELECT *, CAST(name AS INTEGER) AS n FROM events"
    messages = []
    for extra in ([], ["--no-arrow"]):
        assert main([*failing, *extra]) == 2
        messages.append(capsys.readouterr().err)
    assert read == [duckdb.DuckDBPyRelation]  # the relation failed inside plan, as it read
    for message in messages:
        assert message.startswith(f"mparticle-feed: --db {failing[2]}: ConversionException: ")
        assert "Traceback" not in message
