from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mparticle_feed._cli import main
from mparticle_feed._demo import build_warehouse, demo_mapping_path
from mparticle_feed.testing import FakeEventsServer


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    return build_warehouse(tmp_path / "shop.sqlite")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEventsServer]:
    monkeypatch.setenv("MPARTICLE_API_KEY", "cli-key")
    monkeypatch.setenv("MPARTICLE_API_SECRET", "cli-secret-do-not-print")
    with FakeEventsServer(api_key="cli-key", api_secret="cli-secret-do-not-print") as fake:
        yield fake


def args(warehouse: Path, *extra: str, mapping: str = "page_views.toml") -> list[str]:
    return [
        "--db",
        str(warehouse),
        "--query",
        "SELECT * FROM page_views ORDER BY user_id, viewed_at",
        "--mapping",
        str(demo_mapping_path(mapping)),
        *extra,
    ]


def test_help_explains_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("demo", "plan", "sync", "MPARTICLE_API_KEY", "Exit status"):
        assert word in text
    assert main(["sync", "--help"]) == 0
    assert "--query-file" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], warehouse: Path) -> None:
    assert main([]) == 2
    assert main(["sync", "--db", str(warehouse)]) == 2
    assert main(["plan", *args(warehouse, mapping="nope.toml")]) == 2
    assert "cannot read mapping file" in capsys.readouterr().err
    assert (
        main(
            [
                "plan",
                "--db",
                "no_such_module:connect",
                "--query",
                "x",
                "--mapping",
                str(demo_mapping_path("users.toml")),
            ]
        )
        == 2
    )


def test_sync_needs_credentials_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], warehouse: Path
) -> None:
    monkeypatch.delenv("MPARTICLE_API_KEY", raising=False)
    monkeypatch.delenv("MPARTICLE_API_SECRET", raising=False)
    assert main(["sync", *args(warehouse)]) == 2
    assert "MPARTICLE_API_KEY" in capsys.readouterr().err


def test_wrong_credentials_exit_2(
    server: FakeEventsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    warehouse: Path,
) -> None:
    monkeypatch.setenv("MPARTICLE_API_SECRET", "wrong-secret-xyz")
    assert main(["sync", *args(warehouse, "--base-url", server.url)]) == 2
    captured = capsys.readouterr()
    assert "wrong-secret-xyz" not in captured.out + captured.err


def test_sync_sends_writes_rejects_and_is_incremental(
    server: FakeEventsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], warehouse: Path
) -> None:
    rejects = tmp_path / "rejects.jsonl"
    state = tmp_path / "state.sqlite"
    status = main(
        [
            "sync",
            *args(
                warehouse, "--base-url", server.url, "--state", str(state), "--out", str(rejects)
            ),
        ]
    )
    assert status == 1  # two rows of the demo warehouse are bad on purpose
    out = capsys.readouterr()
    assert "240 sent" in out.out
    assert "cli-secret-do-not-print" not in out.out + out.err
    lines = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {line["primary_key"] for line in lines} == {"v900001", "v900002"}
    assert all(line["stage"] == "mapping" and line["reason"] for line in lines)
    sent = len(server.requests)
    assert (
        main(["sync", *args(warehouse, "--base-url", server.url, "--state", str(state), "-q")]) == 1
    )
    assert len(server.requests) == sent
    assert "240 unchanged" in capsys.readouterr().out


def test_sync_exit_0_when_all_rows_accepted(
    server: FakeEventsServer, warehouse: Path, tmp_path: Path
) -> None:
    query = tmp_path / "q.sql"
    query.write_text("SELECT * FROM page_views WHERE viewed_at IS NOT NULL AND view_id < 'v9'")
    status = main(
        [
            "sync",
            "--db",
            str(warehouse),
            "--query-file",
            str(query),
            "--mapping",
            str(demo_mapping_path("page_views.toml")),
            "--base-url",
            server.url,
        ]
    )
    assert status == 0


def test_plan_writes_jsonl_and_sends_nothing(
    server: FakeEventsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], warehouse: Path
) -> None:
    out = tmp_path / "plan.jsonl"
    assert (
        main(
            [
                "plan",
                *args(warehouse, "--out", str(out), "--state", str(tmp_path / "absent.sqlite")),
            ]
        )
        == 1
    )
    assert not (tmp_path / "absent.sqlite").exists()
    assert server.requests == []
    text = capsys.readouterr().out
    assert re.search(r"to send\s+240", text)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    endpoints = {r["endpoint"] for r in records if "endpoint" in r}
    assert endpoints == {"/v2/bulkevents", "/v2/bulkevents/historical"}


def test_db_module_callable(
    tmp_path: Path, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_warehouse_mod.py").write_text(
        f"import sqlite3\ndef connect():\n    return sqlite3.connect({str(warehouse)!r})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (
        main(
            [
                "plan",
                "--db",
                "my_warehouse_mod:connect",
                "--query",
                "SELECT * FROM users",
                "--mapping",
                str(demo_mapping_path("users.toml")),
            ]
        )
        == 1
    )


def test_python_dash_m_runs_the_demo() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mparticle_feed", "demo", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "total: 405 rows in = 400 accepted" in result.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_shows_on_a_terminal_unless_quiet(
    monkeypatch: pytest.MonkeyPatch, server: FakeEventsServer, warehouse: Path, quiet: bool
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    extra = ["-q"] if quiet else []
    main(["sync", *args(warehouse, "--base-url", server.url, *extra)])
    shown = re.findall(r"\rsync: (\d+) rows read", terminal.getvalue())
    if quiet:
        assert shown == []
    else:
        assert shown, terminal.getvalue()
        assert int(shown[-1]) > 0
        assert terminal.getvalue().endswith("\n")  # the line is closed when the run ends


def test_no_self_updating_line_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, server: FakeEventsServer, warehouse: Path
) -> None:
    plain = io.StringIO()
    monkeypatch.setattr(sys, "stderr", plain)
    main(["sync", *args(warehouse, "--base-url", server.url)])
    # A job's log gets whole lines at --progress-interval (see test_cli_job.py), never \r.
    assert "\r" not in plain.getvalue()


def test_send_delivers_a_reviewed_plan_file_byte_for_byte(
    server: FakeEventsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], warehouse: Path
) -> None:
    plan_file, state = tmp_path / "plan.jsonl", tmp_path / "state.sqlite"
    plan_args = args(warehouse, "--out", str(plan_file), "--state", str(state), "-q")
    assert main(["plan", *plan_args]) == 1
    assert not state.exists()  # plan only reads
    capsys.readouterr()
    records = [json.loads(line) for line in plan_file.read_text().splitlines()]
    bodies = [r["body"] for r in records if "endpoint" in r]
    rejects = tmp_path / "rejects.jsonl"
    status = main(
        [
            *("send", "--plan", str(plan_file), "--state", str(state)),
            *("--base-url", server.url, "--workers", "1", "--out", str(rejects), "-q"),
        ]
    )
    assert status == 1  # the page views hold rows rejected on purpose
    assert [json.loads(r.body) for r in server.requests] == bodies
    out = capsys.readouterr().out
    assert re.search(r"accepted\s+240", out)
    assert "cli-secret-do-not-print" not in out
    assert all(
        json.loads(line)["outcome"] == "rejected" for line in rejects.read_text().splitlines()
    )
    # The state holds the accepted rows: a sync over the same query sends nothing.
    before = len(server.requests)
    assert main(["sync", *args(warehouse, "--state", str(state), "-q"), "--base-url", server.url])
    assert len(server.requests) == before
    assert re.search(r"\(0 sent, 240 unchanged\)", capsys.readouterr().out)


def test_send_refuses_an_edited_plan_file(
    server: FakeEventsServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], warehouse: Path
) -> None:
    plan_file = tmp_path / "plan.jsonl"
    main(["plan", *args(warehouse, "--out", str(plan_file), "-q")])
    lines = plan_file.read_text().splitlines()
    first = json.loads(lines[0])
    first["endpoint"] = "/v2/bulkevents/elsewhere"
    plan_file.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    capsys.readouterr()
    assert main(["send", "--plan", str(plan_file), "--base-url", server.url]) == 2
    error = capsys.readouterr().err
    assert "line 1" in error
    assert "unknown endpoint '/v2/bulkevents/elsewhere'" in error
    assert server.requests == []


def test_send_usage_errors_exit_2(
    server: FakeEventsServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["send", "--plan", str(tmp_path / "absent.jsonl")]) == 2
    assert "--plan" in capsys.readouterr().err
    monkeypatch.delenv("MPARTICLE_API_SECRET")
    (tmp_path / "plan.jsonl").write_text("")
    assert main(["send", "--plan", str(tmp_path / "plan.jsonl")]) == 2
    assert "MPARTICLE_API_SECRET" in capsys.readouterr().err
    assert server.requests == []


def test_the_first_ctrl_c_stops_the_second_interrupts_and_the_handlers_are_put_back() -> None:
    import signal
    import threading

    from mparticle_feed._cli import _stop_on_signals

    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    stop = threading.Event()
    with _stop_on_signals(stop):
        handler = signal.getsignal(signal.SIGINT)
        assert callable(handler)
        handler(signal.SIGINT, None)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            handler(signal.SIGINT, None)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
