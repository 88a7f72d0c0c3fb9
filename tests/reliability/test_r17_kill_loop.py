"""R17: the CLI SIGKILLed again and again, resumed each time; nothing lost, nothing doubled.

A warehouse (SQLite) feeds two syncs on one state file: custom events and user attributes.
Between runs new rows arrive, some users' attribute values flip back to earlier values (or
to NULL and back), some users' events are large enough that their batches split, and some
events cross the 28-day boundary (the CLI's clock is ``MPARTICLE_FEED_TEST_NOW``, moved an
hour a run). The sink answers slowly and de-duplicates by ``source_request_id`` as
mParticle does; it kills the CLI while holding a request, right after answering 202, or a
timer kills it at a random moment. At the end every event is held exactly once and every
user's attributes equal the warehouse's last values.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from reliability_kit import API_KEY, API_SECRET, Figures, Scorecard

from mparticle_feed import Batch
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer, ReceivedRequest, Reply

pytestmark = pytest.mark.slow

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
KILLS = 32
FIRST_EVENTS = 14_000
LARGE = "L" * 4_000  # eight attributes of it an event: six events make a batch over 128 KB

EVENTS_MAPPING = """
kind = "custom_event"
primary_key = "id"
event_name = { const = "Thing Happened" }
custom_event_type = { const = "other" }
timestamp_unixtime_ms = "ts"

[user_identities]
customer_id = "user"

[custom_attributes.columns]
row_id = "id"
a = "pad"
b = "pad"
c = "pad"
d = "pad"
e = "pad"
f = "pad"
g = "pad"
h = "pad"
"""

PROFILES_MAPPING = """
kind = "user_attributes"
primary_key = "user"

[user_identities]
customer_id = "user"

[user_attributes]
columns = { plan = "plan", city = "city" }
"""


class Sink:
    """mParticle as a sync sees it: slow, and de-duplicating by source_request_id.

    The fake Events API answers every request after 20 ms (slow enough that kills land
    mid-flight) and keeps what it accepted; the sink kills the CLI while it holds the
    request numbered in ``kill_at`` ("hold": no answer) or right after answering it ("after").
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.target: int | None = None
        self.kill_at: tuple[int, str] | None = None  # (request index, "hold" | "after")
        self.server = FakeEventsServer(
            api_key=API_KEY,
            api_secret=API_SECRET,
            default=Reply(delay=0.02),
            responder=self._respond,
            on_answer=self._answered,
        ).start()

    def next_request(self) -> int:
        return len(self.server.requests)

    def held(self) -> list[Batch]:
        """The accepted batches, once per source_request_id, in arrival order."""
        return self.server.accepted_batches()

    def _respond(self, request: ReceivedRequest) -> Reply | None:
        with self.lock:
            hold = self.kill_at == (request.index, "hold")
            if hold:
                self.kill_target()  # dies while this request is in flight: no answer
        return Reply(action="close", delay=0.02) if hold else None

    def _answered(self, request: ReceivedRequest) -> None:
        with self.lock:
            if self.kill_at == (request.index, "after"):
                self.kill_target()  # between mParticle's 202 and the state's settle

    def run(
        self, start: Callable[[], subprocess.Popen[bytes]], mode: str, delay: float
    ) -> tuple[int, str]:
        """Start a run with ``start`` and kill it as ``mode`` says: while the sink holds its
        next request ("hold"), right after answering it ("after"), or ``delay`` seconds in
        ("timer"). The run's exit code and what it wrote to stderr."""
        with self.lock:
            self.kill_at = None if mode == "timer" else (self.next_request(), mode)
        proc = start()
        with self.lock:
            self.target = proc.pid
        timer = threading.Timer(delay, self.kill_target) if mode == "timer" else None
        if timer is not None:
            timer.start()
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if timer is not None:
                timer.cancel()
            with self.lock:
                self.target = None
                self.kill_at = None
        return proc.returncode, err.decode(errors="replace") if err else ""

    def kill_target(self) -> None:
        if self.target is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.target, signal.SIGKILL)
            self.target = None


def flips(
    rng: random.Random,
    history: dict[str, list[tuple[str, str | None]]],
    count: int,
    users: int,
) -> list[tuple[str, str, str | None]]:
    """New (user, plan, city) values for ``count`` of the first ``users`` profiles: often
    back to the value before the last one, else drawn afresh (a city may become NULL)."""
    changes = []
    for n in rng.sample(range(users), count):
        user = f"p{n}"
        earlier = history[user]
        if len(earlier) > 1 and rng.random() < 0.6:
            plan, city = earlier[-2]
        else:
            plan = rng.choice(["free", "pro", "team"])
            city = rng.choice(["Lyon", "Paris", None])
        changes.append((user, plan, city))
    return changes


class Warehouse:
    def __init__(self, path: Path, rng: random.Random) -> None:
        self.db = sqlite3.connect(path)
        self.rng = rng
        self.db.execute("CREATE TABLE events (id TEXT, user TEXT, ts INTEGER, pad TEXT)")
        self.db.execute("CREATE TABLE profiles (user TEXT, plan TEXT, city TEXT)")
        self.next_event = 0
        self.history: dict[str, list[tuple[str, str | None]]] = {}

    def add_events(self, now: datetime, count: int, *, users: int = 3_000) -> None:
        rows = []
        ms = int(now.timestamp() * 1000)
        for _ in range(count):
            n = self.next_event
            self.next_event += 1
            rows.append((f"e{n}", f"u{self.rng.randrange(users)}", ms - 3_600_000 - n, "x"))
        # A user with six large events: the batch is split for size.
        big = f"big{self.next_event}"
        for _ in range(6):
            rows.append((f"e{self.next_event}", big, ms - 7_200_000, LARGE))
            self.next_event += 1
        # Events just under 28 days old: the next run's clock puts them over.
        almost = ms - int(timedelta(days=28, minutes=-30).total_seconds() * 1000)
        for _ in range(4):
            rows.append((f"e{self.next_event}", "crosser", almost, "x"))
            self.next_event += 1
        self.db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
        self.db.commit()

    def set_profiles(self, count: int) -> None:
        for n in range(count):
            self._set(f"p{n}", "free", "Lyon")
        self.db.commit()

    def flip_profiles(self, count: int, users: int) -> None:
        for user, plan, city in flips(self.rng, self.history, count, users):
            self._set(user, plan, city)
        self.db.commit()

    def _set(self, user: str, plan: str, city: str | None) -> None:
        self.history.setdefault(user, []).append((plan, city))
        self.db.execute("DELETE FROM profiles WHERE user = ?", (user,))
        self.db.execute("INSERT INTO profiles VALUES (?, ?, ?)", (user, plan, city))

    def rows(self) -> int:
        events = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        profiles = self.db.execute("SELECT count(*) FROM profiles").fetchone()[0]
        return int(events + profiles)


def reconcile(
    held_batches: list[Batch],
    event_ids: set[str],
    profiles: Iterable[tuple[str, str, str | None]],
) -> tuple[set[str], set[str], list[str]]:
    """The sink's batches against the warehouse: the event ids lost and doubled (each event
    carries its ``row_id``), and the users whose attributes differ from ``profiles`` (user,
    plan, city) once the held batches are applied in arrival order, as mParticle applies them.
    """
    held = Counter(
        str(e.custom_attributes["row_id"])  # type: ignore[index]
        for batch in held_batches
        for e in batch.events or ()
    )
    applied: dict[str, dict[str, Any]] = {}
    for batch in held_batches:
        user = batch.user_identities.customer_id if batch.user_identities else None
        if user is None or not user.startswith("p"):
            continue
        profile = applied.setdefault(user, {})
        profile.update(batch.user_attributes or {})
        for name in batch.deleted_user_attributes or ():
            profile.pop(name, None)
    wrong = [
        user
        for user, plan, city in profiles
        if applied.get(user) != {"plan": plan, **({"city": city} if city is not None else {})}
    ]
    doubled = {key for key, count in held.items() if count > 1}
    return event_ids - set(held), doubled, wrong


def _command(folder: Path, sink: Sink, which: str) -> list[str]:
    query = (
        "SELECT id, user, ts, pad FROM events ORDER BY rowid"
        if which == "events"
        else "SELECT user, plan, city FROM profiles ORDER BY user"
    )
    return [
        sys.executable,
        "-m",
        "mparticle_feed",
        "sync",
        "--db",
        str(folder / "warehouse.sqlite"),
        "--query",
        query,
        "--mapping",
        str(folder / f"{which}.toml"),
        "--state",
        str(folder / "state.sqlite"),
        "--name",
        which,
        "--base-url",
        sink.server.url,
        "--workers",
        "2",
        "--quiet",
    ]


def _start(folder: Path, sink: Sink, which: str, now: datetime) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        _command(folder, sink, which),
        env=_environment(now),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def seed(folder: Path, warehouse: Any, first_events: int) -> None:
    """The two mapping files, the first events and 600 profiles (``warehouse`` has
    ``add_events`` and ``set_profiles``)."""
    (folder / "events.toml").write_text(EVENTS_MAPPING)
    (folder / "profiles.toml").write_text(PROFILES_MAPPING)
    warehouse.add_events(START, first_events)
    warehouse.set_profiles(600)


def _environment(now: datetime) -> dict[str, str]:
    return {
        **os.environ,
        "MPARTICLE_API_KEY": API_KEY,
        "MPARTICLE_API_SECRET": API_SECRET,
        "MPARTICLE_FEED_TEST_NOW": now.isoformat(),
    }


def test_R17_kill_loop_on_the_cli_loses_nothing_and_doubles_nothing(
    tmp_path: Path, scorecard: Scorecard
) -> None:
    rng = random.Random(1117)
    warehouse = Warehouse(tmp_path / "warehouse.sqlite", rng)
    seed(tmp_path, warehouse, FIRST_EVENTS)
    sink = Sink()
    kills = unsettled_at_kill = between_202_and_settle = runs = 0
    now = START
    try:
        while kills < KILLS:
            assert runs < 4 * KILLS, "too few runs were killed: the sink is too fast"
            which = "events" if runs % 3 else "profiles"
            runs += 1
            code, err = sink.run(
                functools.partial(_start, tmp_path, sink, which, now),
                rng.choice(["hold", "after", "timer"]),
                rng.uniform(0.6, 2.5),
            )
            if code == -signal.SIGKILL:
                kills += 1
                with StateStore(tmp_path / "state.sqlite") as state:
                    left = {f.source_request_id for f in state.in_flight(which)}
                unsettled_at_kill += bool(left)
                held_ids = {b.source_request_id for b in sink.held()}
                between_202_and_settle += bool(left & held_ids)
            else:
                assert code in (0, 3), f"the CLI exited {code}: {err}"  # 3: rows left pending
            # Between runs: the clock moves on, rows arrive, values flip back.
            now += timedelta(hours=1)
            warehouse.add_events(now, 200)
            warehouse.flip_profiles(40, 600)
        for which in ("events", "profiles", "events", "profiles"):
            finished = subprocess.run(
                _command(tmp_path, sink, which),
                env=_environment(now),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert finished.returncode == 0, finished.stdout + finished.stderr
    finally:
        sink.server.close()

    held_batches = sink.held()
    expected = {row[0] for row in warehouse.db.execute("SELECT id FROM events")}
    lost, doubled, wrong = reconcile(
        held_batches, expected, warehouse.db.execute("SELECT user, plan, city FROM profiles")
    )
    rows = warehouse.rows()
    print(
        f"\nR17 kill loop: {rows:,} rows, {runs} runs, {kills} SIGKILLs; {unsettled_at_kill} "
        f"found an outbox request unsettled, {between_202_and_settle} fell between a 202 and "
        f"its settle; lost {len(lost)}, doubled {len(doubled)}, wrong profiles {len(wrong)}"
    )
    # The number of kills (KILLS) and of rows (over 20,000) are fixed by the loop above.
    assert unsettled_at_kill >= 10
    assert between_202_and_settle >= 5
    assert lost == set()
    assert doubled == set()
    assert wrong == []
    figures = Figures(
        scenario="R17 kill loop (CLI, SIGKILL)",
        rows_in=rows,
        # Events held once, plus profiles equal to the warehouse: what this run measured.
        accepted=len(expected - lost) + (rows - len(expected) - len(wrong)),
        unique_ids_at_server=len(held_batches),
        ids_sent_more_than_once=sum(1 for n in sink.server.accepted_ids().values() if n > 1),
        note=(
            f"{kills} SIGKILLs in {runs} runs; {unsettled_at_kill} left the outbox unsettled, "
            f"{between_202_and_settle} between a 202 and its settle; 0 lost, 0 doubled, "
            "every profile equal to the warehouse"
        ),
    )
    scorecard.record(figures)
