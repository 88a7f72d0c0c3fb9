"""The CLI as a job step: --db URLs, --version, --log-level, --summary-json, exit codes 0/1/2/3."""

from __future__ import annotations

import functools
import importlib
import io
import json
import logging
import re
import sqlite3
import string
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._cli import _ProgressDisplay, main
from mparticle_feed._source.connect import redact_url
from mparticle_feed._sync.send import Progress
from mparticle_feed.testing import FakeEventsServer
from mparticle_feed.testing._fake_server import Reply

SECRET = "cli-secret-do-not-print"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
ROWS = [
    (1, "u1", "home", (NOW - timedelta(hours=1)).isoformat()),
    (2, "u1", None, (NOW - timedelta(hours=2)).isoformat()),
    (3, "u2", "cart", (NOW - timedelta(hours=3)).isoformat()),
]
BAD_ROW = (4, "u3", "oops", "not a time")
MAPPING = """\
kind = "custom_event"
primary_key = "view_id"
event_name = { const = "Page Viewed" }
custom_event_type = { const = "navigation" }
timestamp_unixtime_ms = "viewed_at"

[user_identities]
customer_id = "user_id"

[custom_attributes.columns]
page = "page"
"""
QUERY = "SELECT * FROM views ORDER BY user_id, view_id"
CREATE = "CREATE TABLE views (view_id INTEGER, user_id TEXT, page TEXT, viewed_at TEXT)"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEventsServer]:
    monkeypatch.setenv("MPARTICLE_API_KEY", "cli-key")
    monkeypatch.setenv("MPARTICLE_API_SECRET", SECRET)
    with FakeEventsServer(api_key="cli-key", api_secret=SECRET) as fake:
        yield fake


@pytest.fixture
def mapping(tmp_path: Path) -> Path:
    path = tmp_path / "views.toml"
    path.write_text(MAPPING, encoding="utf-8")
    return path


def sqlite_db(path: Path, *, bad: bool = False) -> Path:
    db = sqlite3.connect(path)
    db.execute(CREATE)
    db.executemany("INSERT INTO views VALUES (?, ?, ?, ?)", [*ROWS, *([BAD_ROW] if bad else [])])
    db.commit()
    db.close()
    return path


def run(db: str, mapping: Path, server: FakeEventsServer, *extra: str) -> int:
    return main(
        [
            "sync",
            "--db",
            db,
            "--query",
            QUERY,
            "--mapping",
            str(mapping),
            "--base-url",
            server.url,
            "--workers",
            "1",
            "-q",
            *extra,
        ]
    )


def sent_pages(server: FakeEventsServer) -> list[str | None]:
    pages = []
    for batch in server.accepted_batches():
        for event in batch.events or ():
            attributes = event.custom_attributes or {}
            pages.append(attributes.get("page"))  # type: ignore[union-attr]
    return pages


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"mparticle-feed \S+\n", capsys.readouterr().out)


def test_sqlite_url_and_summary_json(
    server: FakeEventsServer, mapping: Path, tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "shop.sqlite")
    summary = tmp_path / "summary.json"
    assert run(f"sqlite:///{db}", mapping, server, "--summary-json", str(summary)) == 0
    assert sorted(map(str, sent_pages(server))) == ["None", "cart", "home"]
    document = json.loads(summary.read_text())
    assert document["rows_in"] == 3
    assert document["accepted"] == document["sent"] == 3
    assert (document["rejected"], document["failed"], document["pending"]) == (0, 0, 0)
    assert document["exit_status"] == 0
    assert document["ok"] is True
    assert document["by_endpoint"] == {"/v2/bulkevents": {"accepted": 3}}
    assert document["requests_sent"] == 1


def test_duckdb_url(server: FakeEventsServer, mapping: Path, tmp_path: Path) -> None:
    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute(CREATE)
    con.executemany("INSERT INTO views VALUES (?, ?, ?, ?)", ROWS)
    con.close()
    assert run(f"duckdb:///{path}", mapping, server) == 0
    assert run(str(path), mapping, server, "--state", str(tmp_path / "s.sqlite")) == 0
    assert len(server.accepted_requests()) == 2


def test_a_state_carries_over_between_arrow_and_the_cursor(
    server: FakeEventsServer, mapping: Path, tmp_path: Path
) -> None:
    """Runs that read DuckDB as Arrow and runs with --no-arrow share one state: what one
    sent, the other finds unchanged (by the row's digest, or by its event's hash when only
    the row's text changed), and only new or changed rows go out."""
    path = tmp_path / "shop.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(CREATE)
        con.executemany("INSERT INTO views VALUES (?, ?, ?, ?)", ROWS)
    state = ("--state", str(tmp_path / "s.sqlite"))
    assert run(str(path), mapping, server, *state) == 0
    assert run(str(path), mapping, server, *state, "--no-arrow") == 0
    assert len(server.accepted_requests()) == 1  # the cursor's run found every row unchanged
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE views SET page = 'checkout' WHERE view_id = 3")
        # The same instant written with another offset: a new row text, the same event.
        moved = datetime.fromisoformat(ROWS[0][3]).astimezone(timezone(timedelta(hours=2)))
        con.execute("UPDATE views SET viewed_at = ? WHERE view_id = 1", [moved.isoformat()])
        con.execute("INSERT INTO views VALUES (?, ?, ?, ?)", [5, "u2", "faq", ROWS[0][3]])
    assert run(str(path), mapping, server, *state, "--no-arrow") == 0
    assert run(str(path), mapping, server, *state) == 0  # through Arrow: nothing new
    assert len(server.accepted_requests()) == 2
    assert sorted(map(str, sent_pages(server))) == ["None", "cart", "checkout", "faq", "home"]


def test_any_other_url_goes_to_sqlalchemy(
    server: FakeEventsServer, mapping: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_db(tmp_path / "shop.sqlite")
    assert run(f"sqlite+pysqlite:///{db}", mapping, server) == 0
    assert sorted(map(str, sent_pages(server))) == ["None", "cart", "home"]
    assert run("nosuchdialect://u:hidden-pw@h/db", mapping, server) == 2
    err = capsys.readouterr().err
    assert "nosuchdialect://u:***@h/db" in err
    assert "hidden-pw" not in err


def test_postgresql_url_uses_a_server_side_cursor(
    server: FakeEventsServer, mapping: Path, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS views")
        connection.execute(CREATE)
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO views VALUES (%s, %s, %s, %s)", ROWS)
    params = dict(part.split("=") for part in postgres_dsn.split())
    url = f"postgresql://postgres@{params['host']}:{params['port']}/postgres"
    assert run(url, mapping, server, "--log-level", "debug") == 0
    assert sorted(map(str, sent_pages(server))) == ["None", "cart", "home"]
    assert "fetched 3 rows of 4 columns" in caplog.messages


def test_a_password_in_a_url_is_never_printed(
    server: FakeEventsServer, mapping: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 9 on loopback: nothing listens, the connection is refused.
    url = "postgresql://alice:s3cr%40t-pw@127.0.0.1:9/warehouse"
    assert run(url, mapping, server) == 2
    err = capsys.readouterr().err
    assert "postgresql://alice:***@127.0.0.1:9/warehouse" in err
    assert "s3cr" not in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # libpq takes the password as a query parameter too; port 9: nothing listens.
        (
            "postgresql://alice@127.0.0.1:9/warehouse?password=s3cr3t-pw&sslmode=disable",
            "postgresql://alice@127.0.0.1:9/warehouse?password=***&sslmode=disable",
        ),
        # A MotherDuck token in a DuckDB URL; the file does not exist.
        ("duckdb:///md:shop?motherduck_token=s3cr3t-pw", "md:shop?motherduck_token=*** does not"),
        ("sqlite:///missing.db?key=s3cr3t-pw", "missing.db?key=*** does not exist"),
        # An ODBC connect string, percent-encoded inside a SQLAlchemy URL.
        ("nosuchdialect:///?odbc_connect=DSN%3Dx%3BPWD%3Ds3cr3t-pw", "PWD%3D***"),
        # Not a URL at all: a keyword DSN is refused without repeating its password.
        ("host=127.0.0.1 port=9 password=s3cr3t-pw", "password=***"),
    ],
)
def test_secrets_in_a_urls_parameters_are_never_printed(
    url: str,
    shown: str,
    server: FakeEventsServer,
    mapping: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(url, mapping, server, "--log-level", "debug") == 2
    err = capsys.readouterr().err
    assert shown in err
    assert "s3cr3t" not in err
    assert not any("s3cr3t" in message for message in caplog.messages)


@given(
    st.text(alphabet=string.ascii_letters + string.digits + "-_.~!$%()*+,@:/", min_size=3),
    st.sampled_from(["password", "PWD", "access_token", "api_key", "client_secret"]),
)
def test_redact_url_never_shows_a_secret_parameter(secret: str, name: str) -> None:
    for url in (
        f"postgresql://u@h/db?{name}={urllib.parse.quote(secret, safe='')}&x=1",
        f"mssql+pyodbc:///?odbc_connect={urllib.parse.quote(f'DSN=x;{name}={secret}', safe='')}",
        f"u:{urllib.parse.quote(secret, safe='')}@h".join(("postgresql://", "/db")),
    ):
        shown = redact_url(url)
        for form in (secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret)):
            assert form not in shown, (url, shown)


def test_module_callable_from_the_working_directory(
    server: FakeEventsServer, mapping: Path, tmp_path: Path
) -> None:
    db = sqlite_db(tmp_path / "shop.sqlite")
    (tmp_path / "pgwh_for_test.py").write_text(
        f"import sqlite3\ndef connect():\n    return sqlite3.connect({str(db)!r})\n"
    )
    # A console script, with its own folder first on sys.path, not the working directory.
    script = (
        "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; "
        "from mparticle_feed._cli import main; "
        f"sys.exit(main(['plan', '--db', 'pgwh_for_test:connect', '--query', {QUERY!r}, "
        f"'--mapping', {str(mapping)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "3 rows in" in done.stdout


def test_exit_1_when_rows_are_rejected_and_0_when_allowed(
    server: FakeEventsServer, mapping: Path, tmp_path: Path
) -> None:
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite', bad=True)}"
    summary = tmp_path / "summary.json"
    assert run(db, mapping, server, "--summary-json", str(summary)) == 1
    assert json.loads(summary.read_text())["rejected"] == 1
    assert run(db, mapping, server, "--allow-rejected", "--summary-json", str(summary)) == 0
    assert json.loads(summary.read_text())["exit_status"] == 0


@pytest.mark.parametrize(
    ("db", "says"),
    [
        ("nowhere.sqlite", "does not exist"),
        ("sqlite://relative.db", "three slashes"),
        ("not a database", "not a database URL"),
        ("no_such_module_anywhere:connect", "cannot import"),
    ],
)
def test_exit_2_for_a_bad_db(
    server: FakeEventsServer,
    mapping: Path,
    db: str,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(db, mapping, server) == 2
    assert says in capsys.readouterr().err


def test_exit_2_for_a_mapping_that_names_a_missing_column(
    server: FakeEventsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(MAPPING.replace('"viewed_at"', '"viewed"'), encoding="utf-8")
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite')}"
    assert run(db, path, server) == 2
    err = capsys.readouterr().err
    assert "column 'viewed' is not in the source (did you mean 'viewed_at'?)" in err
    assert server.requests == []


def test_exit_2_for_a_bad_query(
    server: FakeEventsServer, mapping: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite')}"
    assert main(["plan", "--db", db, "--query", "SELEC nothing", "--mapping", str(mapping)]) == 2
    assert "OperationalError" in capsys.readouterr().err


def test_exit_3_when_rows_failed(
    server: FakeEventsServer, mapping: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One attempt a request (the default retries for minutes), answered 503: its rows fail.
    client_module = importlib.import_module("mparticle_feed._delivery.client")
    monkeypatch.setattr(
        client_module,
        "EventsClient",
        functools.partial(mpf.EventsClient, retry=mpf.RetryPolicy(max_attempts=1)),
    )
    server.script(Reply(status=503))
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite', bad=True)}"
    summary = tmp_path / "summary.json"
    assert run(db, mapping, server, "--allow-rejected", "--summary-json", str(summary)) == 3
    document = json.loads(summary.read_text())
    assert (document["failed"], document["rejected"], document["exit_status"]) == (3, 1, 3)


def test_log_level_before_or_after_the_command(
    mapping: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite')}"
    plan = ["plan", "--db", db, "--query", QUERY, "--mapping", str(mapping)]
    for argv in (["--log-level", "info", *plan], [*plan, "--log-level", "INFO"], plan):
        caplog.clear()
        assert main(argv) == 0
        mapped = [r for r in caplog.records if r.getMessage().startswith("mapped 3 rows")]
        assert len(mapped) == (0 if argv == plan else 1)
    assert logging.getLogger("mparticle_feed").level == logging.NOTSET  # put back


def _wait_for(predicate: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_progress_lines_at_a_steady_interval_outside_a_terminal() -> None:
    log = io.StringIO()
    display = _ProgressDisplay(log, "sync", terminal=False, interval=0.01)
    try:
        _wait_for(lambda: "started" in log.getvalue())
        display(
            Progress(
                rows_read=42,
                batches_accepted=3,
                batches_other=1,
                requests_handed_out=2,
                elapsed_seconds=1.0,
            )
        )
        # No new batch settles, yet the line keeps coming.
        _wait_for(lambda: log.getvalue().count("42 rows read") >= 2)
    finally:
        display.done()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("sync: started")
    assert "sync: 42 rows read, 3 batches accepted, 1 not, 1 s" in lines
    assert "\r" not in log.getvalue()


def test_progress_interval_flag_reaches_a_job_log(
    monkeypatch: pytest.MonkeyPatch, server: FakeEventsServer, mapping: Path, tmp_path: Path
) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    server.script(Reply(delay=0.3))  # a slow first request: the ticker speaks meanwhile
    db = f"sqlite:///{sqlite_db(tmp_path / 'shop.sqlite')}"
    argv = [
        "sync",
        "--db",
        db,
        "--query",
        QUERY,
        "--mapping",
        str(mapping),
        "--base-url",
        server.url,
    ]
    assert main([*argv, "--progress-interval", "0.05"]) == 0
    assert re.search(r"^sync: (started|\d+ rows read)", log.getvalue(), re.MULTILINE)
