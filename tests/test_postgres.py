"""Syncs from a real PostgreSQL server, through every cursor kind of psycopg 3 and psycopg2.

The schema has ``timestamptz``, ``timestamp`` without time zone, ``numeric``, ``jsonb``,
``uuid``, ``text[]`` and NULLs. Every cursor kind must deliver the same exact JSON to the
fake server, on the same endpoints (one row is older than 28 days: historical), and a second
run with the state sends nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
import psycopg2
import psycopg2.extras
import pytest
import sqlalchemy
from psycopg.rows import dict_row, namedtuple_row

import mparticle_feed as mpf
from mparticle_feed import pipeline
from mparticle_feed.testing import FakeEventsServer

NOW = datetime(2024, 3, 2, tzinfo=timezone.utc)
SCHEMA = """
DROP TABLE IF EXISTS page_views;
CREATE TABLE page_views (
    id bigint PRIMARY KEY,
    customer text NOT NULL,
    plan text,
    visits integer,
    at timestamptz NOT NULL,
    local_at timestamp,
    amount numeric(10, 2),
    props jsonb,
    uid uuid,
    tags text[],
    code bytea,  -- psycopg2 reads it as a memoryview, psycopg as bytes
    addr inet,  -- psycopg reads it as an ipaddress object, psycopg2 as text
    opens time
);
INSERT INTO page_views VALUES
    (1, 'c1', 'gold', 5, '2024-03-01 12:00:00+00', '2024-03-01 13:00:00', 12.50,
     '{"source": "ad"}', '00000000-0000-4000-8000-000000000001', '{a,b}', decode('6162', 'hex'),
     '192.168.0.1', '09:30'),
    (2, 'c1', NULL, NULL, '2024-03-01 13:00:00+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL),
    (3, 'c2', 'free', 7, '2024-01-20 08:30:00+02', '2024-01-20 07:30:00', 0.10,
     '{"source": "mail", "n": 2}', '00000000-0000-4000-8000-000000000003', '{}', NULL,
     NULL, NULL);
"""
QUERY = "SELECT * FROM page_views ORDER BY customer, id"
MAPPING = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "customer"},
    event_name=mpf.Constant("Page Viewed"),
    custom_event_type=mpf.Constant("navigation"),
    timestamp_unixtime_ms="at",
    timezone="Europe/Paris",
    custom_attributes=mpf.Attributes(
        columns={
            "plan": "plan",
            "visits": "visits",
            "amount": "amount",
            "local_at": "local_at",
            "uid": "uid",
            "code": "code",
            "addr": "addr",
            "opens": "opens",
        },
        json_column="props",
    ),
    user_attributes={"tags": "tags"},
)
EXPECTED = [
    (
        "/v2/bulkevents",
        {
            "environment": "development",
            "events": [
                {
                    "data": {
                        "custom_attributes": {
                            "amount": 12.5,
                            "addr": "192.168.0.1",
                            "code": "ab",
                            "opens": "09:30:00",
                            "local_at": "2024-03-01T13:00:00+01:00",
                            "plan": "gold",
                            "source": "ad",
                            "uid": "00000000-0000-4000-8000-000000000001",
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
            "user_attributes": {"tags": ["a", "b"]},
            "user_identities": {"customer_id": "c1"},
        },
    ),
    (
        "/v2/bulkevents/historical",
        {
            "environment": "development",
            "events": [
                {
                    "data": {
                        "custom_attributes": {
                            "amount": 0.1,
                            "local_at": "2024-01-20T07:30:00+01:00",
                            "n": 2,
                            "plan": "free",
                            "source": "mail",
                            "uid": "00000000-0000-4000-8000-000000000003",
                            "visits": 7,
                        },
                        "custom_event_type": "navigation",
                        "event_name": "Page Viewed",
                        "timestamp_unixtime_ms": 1705732200000,
                    },
                    "event_type": "custom_event",
                }
            ],
            "user_attributes": {"tags": []},
            "user_identities": {"customer_id": "c2"},
        },
    ),
]


@pytest.fixture(scope="module")
def dsn(postgres_dsn: str) -> str:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(SCHEMA)
    return postgres_dsn


@contextmanager
def psycopg3(dsn: str, **cursor_options: Any) -> Iterator[Any]:
    with psycopg.connect(dsn) as connection, connection.cursor(**cursor_options) as cursor:
        cursor.execute(QUERY)
        yield cursor


@contextmanager
def psycopg_2(dsn: str, **cursor_options: Any) -> Iterator[Any]:
    connection = psycopg2.connect(dsn)
    try:
        with connection.cursor(**cursor_options) as cursor:
            cursor.execute(QUERY)
            yield cursor
    finally:
        connection.close()


@contextmanager
def sqlalchemy_result(dsn: str) -> Iterator[Any]:
    params = dict(part.split("=") for part in dsn.split())
    url = sqlalchemy.URL.create(
        "postgresql+psycopg",
        username=params["user"],
        host=params["host"],
        port=int(params["port"]),
        database=params["dbname"],
    )
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            yield connection.execution_options(stream_results=True, max_row_buffer=2).execute(
                sqlalchemy.text(QUERY)
            )
    finally:
        engine.dispose()


#: ADBC hands ``numeric`` over as text and ``inet`` as PostgreSQL's binary form (an opaque
#: extension type): the query casts them, as the Arrow page says to (see the test below).
ADBC_QUERY = (
    "SELECT id, customer, plan, visits, at, local_at, amount::float8 AS amount, props, uid, "
    "tags, code, host(addr) AS addr, opens FROM page_views ORDER BY customer, id"
)


def _adbc_uri(dsn: str) -> str:
    params = dict(part.split("=") for part in dsn.split())
    return f"postgresql://{params['user']}@{params['host']}:{params['port']}/{params['dbname']}"


@contextmanager
def adbc_reader(dsn: str, query: str = ADBC_QUERY) -> Iterator[Any]:
    """PostgreSQL's ADBC driver: the result as a RecordBatchReader (the Arrow engine)."""
    dbapi = pytest.importorskip("adbc_driver_postgresql.dbapi")
    with dbapi.connect(_adbc_uri(dsn)) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        yield cursor.fetch_record_batch()


CURSORS: dict[str, Callable[[str], AbstractContextManager[Any]]] = {
    "psycopg client-side": psycopg3,
    "psycopg dict_row": lambda dsn: psycopg3(dsn, row_factory=dict_row),
    "psycopg namedtuple_row": lambda dsn: psycopg3(dsn, row_factory=namedtuple_row),
    "psycopg server-side": lambda dsn: psycopg3(dsn, name="views"),
    "psycopg server-side dict_row": lambda dsn: psycopg3(dsn, name="views", row_factory=dict_row),
    "psycopg2 client-side": psycopg_2,
    "psycopg2 RealDictCursor": lambda dsn: psycopg_2(
        dsn, cursor_factory=psycopg2.extras.RealDictCursor
    ),
    "psycopg2 DictCursor": lambda dsn: psycopg_2(dsn, cursor_factory=psycopg2.extras.DictCursor),
    "psycopg2 named (server-side)": lambda dsn: psycopg_2(dsn, name="views"),
    "psycopg2 named RealDictCursor": lambda dsn: psycopg_2(
        dsn, name="views", cursor_factory=psycopg2.extras.RealDictCursor
    ),
    "SQLAlchemy streamed Result": sqlalchemy_result,
    "ADBC RecordBatchReader": adbc_reader,
}


def received(server: FakeEventsServer) -> list[tuple[str, Any]]:
    out = []
    for request in server.accepted_requests():
        for batch in orjson.loads(request.body):
            batch.pop("source_request_id")
            out.append((request.path, batch))
    return out


@pytest.mark.parametrize("kind", list(CURSORS))
def test_every_cursor_kind_syncs_the_exact_json_and_then_nothing(
    dsn: str, kind: str, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite"
    with (
        FakeEventsServer(now=lambda: NOW) as server,
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as client,
    ):
        with CURSORS[kind](dsn) as cursor:
            first = mpf.sync(cursor, MAPPING, client, state=state, name="views", now=NOW)
        assert (first.rows_in, first.sent, first.rejected) == (3, 3, 0), first.summary()
        assert received(server) == EXPECTED
        server.clear()
        with CURSORS[kind](dsn) as cursor:
            second = mpf.sync(cursor, MAPPING, client, state=state, name="views", now=NOW)
        assert (second.rows_in, second.sent, second.unchanged) == (3, 0, 3)
        assert server.requests == []


def test_adbc_hands_numeric_over_as_text_and_inet_as_binary(dsn: str) -> None:
    """What the Arrow page says of ADBC's PostgreSQL driver, uncast: a ``numeric`` is sent as
    its text, and an ``inet`` (binary in an opaque extension type) is rejected naming its
    field, where psycopg reads a number and an address."""
    with adbc_reader(dsn, QUERY) as reader:
        run = mpf.map_rows(reader, MAPPING)
        sent = [
            batch
            for request in pipeline.pack(pipeline.route(run, now=NOW))
            if isinstance(request, pipeline.Request)
            for batch in orjson.loads(request.body)
        ]
    [problem] = run.rejected
    assert (problem.row.row_number, problem.field) == (1, "custom_attributes.addr")
    assert "not valid UTF-8" in problem.reason
    attributes = [e["data"].get("custom_attributes", {}) for b in sent for e in b["events"]]
    assert {"amount": "0.10"}.items() <= attributes[-1].items()


def test_a_changed_row_is_the_only_one_sent_again(dsn: str, tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    with (
        FakeEventsServer(now=lambda: NOW) as server,
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as client,
        psycopg.connect(dsn, autocommit=True) as connection,
    ):
        with psycopg3(dsn, name="views") as cursor:
            mpf.sync(cursor, MAPPING, client, state=state, name="views", now=NOW)
        server.clear()
        connection.execute("UPDATE page_views SET visits = 8 WHERE id = 3")
        try:
            with psycopg3(dsn, name="views") as cursor:
                report = mpf.sync(cursor, MAPPING, client, state=state, name="views", now=NOW)
        finally:
            connection.execute("UPDATE page_views SET visits = 7 WHERE id = 3")
        assert (report.sent, report.unchanged) == (1, 2)
        ((path, batch),) = received(server)
        assert path == "/v2/bulkevents/historical"
        assert batch["events"][0]["data"]["custom_attributes"]["visits"] == 8


def test_a_misspelt_column_fails_before_a_row_is_fetched(dsn: str) -> None:
    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "customer_no"},
        event_name="plan",
    )
    with psycopg_2(dsn, name="views") as cursor, pytest.raises(mpf.MappingError) as caught:
        mpf.plan(cursor, mapping)
    assert "'customer_no' is not in the source (did you mean 'customer'?)" in str(caught.value)


def test_an_error_in_a_later_row_names_the_database(dsn: str) -> None:
    """A streamed result runs as it is fetched: a row that fails past the first fetch is
    reported as the query's failure, naming the database, not as the driver's traceback."""
    from mparticle_feed._source.connect import open_query

    parts = dict(part.split("=", 1) for part in dsn.split())
    url = f"postgresql://{parts['user']}@{parts['host']}:{parts['port']}/{parts['dbname']}"
    query = "SELECT n, 1 / (n - 5000) AS inverse FROM generate_series(1, 6000) AS n"
    # psycopg's server-side cursor, and SQLAlchemy's streamed result over psycopg.
    for db in (url, url.replace("postgresql://", "postgresql+psycopg://")):
        fetched: list[int] = []

        def read_all(db: str = db, fetched: list[int] = fetched) -> None:
            with open_query(db, query) as cursor:
                while rows := cursor.fetchmany(1000):
                    fetched.append(len(rows))

        with pytest.raises(mpf.ConfigurationError) as refused:
            read_all()
        assert fetched[:1] == [1000]  # the first rows came back before the failing one
        assert str(refused.value).startswith(f"--db {db}: DivisionByZero: ")
