"""R18: syncs that read a DuckDB warehouse as Arrow, SIGKILLed again and again, two at once
now and then; nothing lost, nothing doubled.

R17's loop, through the Arrow engine and its slice cache instead of the CLI's cursor: each run
is a child process syncing ``connection.sql(query)`` (a DuckDB relation, read as Arrow record
batches). Event ids are random text and the query orders by id, so the rows that arrive
between runs land inside slices read before: a slice's rows change under its cached digest.
Profiles flip back to earlier values (or to NULL and back). Now and then a second run of the
same sync starts while the first holds the state. The sink de-duplicates by
``source_request_id`` as mParticle does and kills the run while holding a request, right
after answering 202, or at a random moment. At the end every event is held exactly once,
every profile equals the warehouse, and a last run finds every row unchanged.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from reliability_kit import API_KEY, API_SECRET, Figures, Scorecard
from test_r17_kill_loop import LARGE, START, Sink, flips, reconcile, seed

from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import ReceivedRequest, Reply

duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

pytestmark = pytest.mark.slow

KILLS = 16
FIRST_EVENTS = 9_000
CHILD = Path(__file__).resolve().parent / "arrow_child.py"
QUERIES = {
    "events": "SELECT id, user, ts, pad FROM events ORDER BY id",
    "profiles": "SELECT user, plan, city FROM profiles ORDER BY user",
}


class ArrowSink(Sink):
    """R17's sink that can start a second run of the sync when the first one's next request
    arrives (the first then holds the state's lock), and answer once that run ended."""

    def __init__(self) -> None:
        super().__init__()
        self.contend: Callable[[], None] | None = None

    def _respond(self, request: ReceivedRequest) -> Reply | None:
        with self.lock:
            contend, self.contend = self.contend, None
        if contend is not None:
            contend()
        return super()._respond(request)


class Warehouse:
    """A DuckDB file, opened only between runs (a run holds it read-only)."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.history: dict[str, list[tuple[str, str | None]]] = {}
        with duckdb.connect(str(path)) as db:
            db.execute("CREATE TABLE events (id VARCHAR, user VARCHAR, ts BIGINT, pad VARCHAR)")
            db.execute("CREATE TABLE profiles (user VARCHAR, plan VARCHAR, city VARCHAR)")

    def _new_id(self) -> str:
        # Random: ordered by id, new rows fall between rows already synced.
        return f"e{self.rng.getrandbits(48):012x}"

    def add_events(self, now: datetime, count: int, *, users: int = 2_000) -> None:
        ms = int(now.timestamp() * 1000)
        rows: list[tuple[str, str, int, str]] = [
            (self._new_id(), f"u{self.rng.randrange(users)}", ms - 3_600_000 - n, "x")
            for n in range(count)
        ]
        big = f"big{self.rng.getrandbits(32)}"  # six large events: the batch is split for size
        rows += [(self._new_id(), big, ms - 7_200_000, LARGE) for _ in range(6)]
        # Just under 28 days old: the next run's clock puts them over.
        almost = ms - int(timedelta(days=28, minutes=-30).total_seconds() * 1000)
        rows += [(self._new_id(), "crosser", almost, "x") for _ in range(4)]
        with duckdb.connect(str(self.path)) as db:
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)

    def set_profiles(self, count: int) -> None:
        self._write([(f"p{n}", "free", "Lyon") for n in range(count)])

    def flip_profiles(self, count: int, users: int) -> None:
        self._write(flips(self.rng, self.history, count, users))

    def _write(self, profiles: list[tuple[str, str, str | None]]) -> None:
        with duckdb.connect(str(self.path)) as db:
            for user, plan, city in profiles:
                self.history.setdefault(user, []).append((plan, city))
                db.execute("DELETE FROM profiles WHERE user = ?", [user])
                db.execute("INSERT INTO profiles VALUES (?, ?, ?)", [user, plan, city])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.path), read_only=True) as db:
            rows: list[tuple[Any, ...]] = db.execute(sql).fetchall()
            return rows


def _start(folder: Path, sink: Sink, which: str, now: datetime) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        str(CHILD),
        str(folder / "warehouse.duckdb"),
        QUERIES[which],
        str(folder / f"{which}.toml"),
        str(folder / "state.sqlite"),
        which,
        sink.server.url,
        now.isoformat(),
    ]
    environment = {**os.environ, "MPARTICLE_API_KEY": API_KEY, "MPARTICLE_API_SECRET": API_SECRET}
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Wait for a run; its exit code and what it wrote to stderr."""
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err.decode(errors="replace")


def test_R18_arrow_kill_loop_loses_nothing_and_doubles_nothing(
    tmp_path: Path, scorecard: Scorecard
) -> None:
    rng = random.Random(1118)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb", rng)
    seed(tmp_path, warehouse, FIRST_EVENTS)
    sink = ArrowSink()
    contenders: list[tuple[int, str]] = []  # second runs: exit code, stderr
    kills = runs = unsettled_at_kill = 0
    now = START
    try:
        while kills < KILLS:
            assert runs < 4 * KILLS, "too few runs were killed: the sink is too fast"
            which = "events" if runs % 3 else "profiles"
            runs += 1
            if runs % 4 == 0:

                def contend(which: str = which, now: datetime = now) -> None:
                    contenders.append(_finish(_start(tmp_path, sink, which, now)))

                with sink.lock:
                    sink.contend = contend
            # Not the timer when a second run contends: only the first run's death may free
            # the lock, and that is the sink's to time, after the second run has ended.
            modes = ["hold", "after"] if sink.contend is not None else ["hold", "after", "timer"]
            code, err = sink.run(
                functools.partial(_start, tmp_path, sink, which, now),
                rng.choice(modes),
                rng.uniform(0.8, 3.0),
            )
            sink.contend = None
            if code == -signal.SIGKILL:
                kills += 1
                with StateStore(tmp_path / "state.sqlite") as state:
                    unsettled_at_kill += bool(state.in_flight(which))
            else:
                assert code in (0, 3), err
            now += timedelta(hours=1)
            warehouse.add_events(now, 150)
            warehouse.flip_profiles(40, 600)
        for which in ("events", "profiles", "events", "profiles"):
            code, err = _finish(_start(tmp_path, sink, which, now))
            assert code == 0, err
        # Nothing changed since: a last run of each sends nothing.
        requests_before = sink.next_request()
        for which in ("events", "profiles"):
            code, err = _finish(_start(tmp_path, sink, which, now))
            assert code == 0, err
        assert sink.next_request() == requests_before
    finally:
        sink.server.close()

    held_batches = sink.held()
    expected = {row[0] for row in warehouse.query("SELECT id FROM events")}
    lost, doubled, wrong = reconcile(
        held_batches, expected, warehouse.query("SELECT user, plan, city FROM profiles")
    )
    with StateStore(tmp_path / "state.sqlite", read_only=True) as state:
        slices = state._read("SELECT count(*) FROM source_slices WHERE name = 'events'")[0][0]
    rows = len(expected) + len(warehouse.history)
    print(
        f"\nR18 Arrow kill loop: {rows:,} rows, {runs} runs, {kills} SIGKILLs, "
        f"{len(contenders)} second runs locked out, {unsettled_at_kill} kills left the outbox "
        f"unsettled, {slices} event slices cached; lost {len(lost)}, doubled {len(doubled)}, "
        f"wrong profiles {len(wrong)}"
    )
    assert slices > 0, "the events were not read by the Arrow engine"
    assert unsettled_at_kill >= 4
    # Each second run started while the first held the state: it was locked out.
    assert len(contenders) >= 3
    assert all(code == 4 for code, _ in contenders), contenders
    assert lost == set()
    assert doubled == set()
    assert wrong == []
    scorecard.record(
        Figures(
            scenario="R18 Arrow kill loop (DuckDB as Arrow, SIGKILL, two runs at once)",
            rows_in=rows,
            accepted=len(expected - lost) + len(warehouse.history) - len(wrong),
            unique_ids_at_server=len(held_batches),
            ids_sent_more_than_once=sum(1 for n in sink.server.accepted_ids().values() if n > 1),
            note=(
                f"{kills} SIGKILLs in {runs} runs, {len(contenders)} second runs locked out; "
                "0 lost, 0 doubled, every profile equal to the warehouse, a last run sent nothing"
            ),
        )
    )
