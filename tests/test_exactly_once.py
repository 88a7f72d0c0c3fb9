"""Exactly once, by construction (issue 11): one regression test per defect.

The sink is FakeEventsServer; "held" means what mParticle keeps: the accepted batches
de-duplicated by ``source_request_id`` (mParticle drops a repeated id for 30-60 days).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sync_data import NOW, DiesAfterAccept, ms

from mparticle_feed import CustomEventMapping, EventsClient, UserAttributeMapping, plan, sync
from mparticle_feed._errors import PlanRefusedError, StateLockedError
from mparticle_feed._mapping.sources import Constant
from mparticle_feed._sync.planfile import Plan
from mparticle_feed._sync.state import StateEntry, StateStore
from mparticle_feed.testing import FakeEventsServer

EVENTS = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=Constant("Thing Happened"),
    timestamp_unixtime_ms="ts",
    custom_attributes={"row_id": "id", "pad": "pad"},
)
PROFILES = UserAttributeMapping(
    primary_key="user",
    user_identities={"customer_id": "user"},
    user_attributes={"plan": "plan", "city": "city"},
)


def event(
    n: int, user: str, *, age: timedelta = timedelta(hours=1), pad: str = ""
) -> dict[str, Any]:
    return {"id": f"r{n}", "user": user, "ts": ms(NOW - age), "pad": pad}


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


def held_events(server: FakeEventsServer) -> Counter[str]:
    """How many times mParticle holds each row's event (after de-duplication by id)."""
    return Counter(
        str(e.custom_attributes["row_id"])  # type: ignore[index]
        for b in server.accepted_batches(dedupe=True)
        for e in b.events or ()
    )


def held_attributes(server: FakeEventsServer, user: str) -> dict[str, Any]:
    """A user's profile as mParticle holds it: accepted, de-duplicated batches in order."""
    profile: dict[str, Any] = {}
    for batch in server.accepted_batches(dedupe=True):
        identities = batch.user_identities
        if identities is None or identities.customer_id != user:
            continue
        profile.update(batch.user_attributes or {})
        for name in batch.deleted_user_attributes or ():
            profile.pop(name, None)
    return profile


def run(
    rows: list[dict[str, Any]],
    client: Any,
    path: Path,
    *,
    mapping: Any = EVENTS,
    now: datetime = NOW,
) -> Any:
    return sync(rows, mapping, client, state=path, name="s", now=now)


# --- defect 1: a value that flips back is dropped ------------------------------------------


def test_defect_1_a_value_that_flips_back_is_sent_and_held(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    # Runs 2 and 4 send only the changed attribute: {"plan": "free"}, byte for byte.
    for value in ("pro", "free", "pro", "free"):
        report = run(
            [{"user": "u1", "plan": value, "city": "Lyon"}], client, state_path, mapping=PROFILES
        )
        assert report.sent == 1
    ids = [b.source_request_id for b in server.accepted_batches(dedupe=False)]
    assert len(set(ids)) == 4  # byte-identical second and fourth batches, distinct ids
    assert held_attributes(server, "u1")["plan"] == "free"


# --- defect 2: an unknown outcome that is then reverted ------------------------------------


def test_defect_2_an_unrecorded_accept_then_reverted_is_corrected(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    run([{"user": "u1", "plan": "free", "city": "Lyon"}], client, state_path, mapping=PROFILES)
    with pytest.raises(KeyboardInterrupt):
        run(
            [{"user": "u1", "plan": "pro", "city": "Lyon"}],
            DiesAfterAccept(client),
            state_path,
            mapping=PROFILES,
        )
    assert held_attributes(server, "u1")["plan"] == "pro"  # mParticle took it
    resumed = run(
        [{"user": "u1", "plan": "free", "city": "Lyon"}], client, state_path, mapping=PROFILES
    )
    assert resumed.replayed == {"accepted": 1}
    assert resumed.sent == 1  # free again, as a new change after the replay settled "pro"
    assert held_attributes(server, "u1")["plan"] == "free"


# --- defect 3: a resend gets a new id when the batch is assembled differently --------------


def test_defect_3_a_new_row_of_the_same_user_before_the_resume_doubles_nothing(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    rows = [event(n, "u1") for n in range(3)]
    with pytest.raises(KeyboardInterrupt):
        run(rows, DiesAfterAccept(client), state_path)
    rows.append(event(3, "u1"))  # arrived before the resume: same user, same batch
    report = run(rows, client, state_path)
    assert report.ok
    assert held_events(server) == Counter({f"r{n}": 1 for n in range(4)})


def test_defect_3_an_event_crossing_28_days_is_replayed_to_the_same_endpoint(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    rows = [event(0, "u1", age=timedelta(days=27, hours=23)), event(1, "u1")]
    with pytest.raises(KeyboardInterrupt):
        run(rows, DiesAfterAccept(client), state_path)
    later = NOW + timedelta(hours=2)
    report = run(rows, client, state_path, now=later)
    assert report.ok
    assert report.replayed == {"accepted": 1}
    assert {r.path for r in server.requests} == {"/v2/bulkevents"}
    assert held_events(server) == Counter({"r0": 1, "r1": 1})


def test_defect_3_a_batch_split_for_size_with_a_lost_response_doubles_nothing(
    server: FakeEventsServer, state_path: Path
) -> None:
    # 20 events of one user, split in parts of ~4; the reply to the first request is lost
    # (the server took it), so the run ends "failed" for it; the next run must not
    # re-assemble those events into new batches with new ids.
    rows = [event(n, "u1", pad="x" * 900) for n in range(20)]
    with EventsClient(
        "test-key",
        "test-secret",
        base_url=server.url,
        max_workers=1,
        max_batch_bytes=4_000,
        max_request_bytes=4_100,
    ) as small:
        lost = DiesAfterAccept(small, after=3)
        with pytest.raises(KeyboardInterrupt):
            run(rows, lost, state_path)
        report = run(rows, small, state_path)
    assert report.ok
    assert held_events(server) == Counter({f"r{n}": 1 for n in range(20)})


# --- defect 4: plans that do not know their age or state -----------------------------------


def test_defect_4_a_superseded_plan_is_refused(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    rows = [event(n, f"u{n}") for n in range(5)]
    reviewed = plan(rows, EVENTS, state=state_path, name="s", now=NOW)
    run(rows, client, state_path)  # a later sync supersedes the plan
    before = len(server.requests)
    with pytest.raises(PlanRefusedError, match="superseded"):
        reviewed.send(client, state=state_path, now=NOW)
    assert len(server.requests) == before
    assert held_events(server) == Counter({f"r{n}": 1 for n in range(5)})


def test_defect_4_a_plan_whose_event_would_now_go_historical_is_refused(
    server: FakeEventsServer, client: EventsClient, state_path: Path, tmp_path: Path
) -> None:
    rows = [event(0, "u1", age=timedelta(days=27, hours=23))]
    path = tmp_path / "plan.jsonl"
    plan(rows, EVENTS, state=state_path, name="s", now=NOW).write_jsonl(path)
    later = NOW + timedelta(days=3)
    with pytest.raises(PlanRefusedError, match="would not go there now"):
        Plan.read_jsonl(path).send(
            client, state=state_path, now=later, max_plan_age=timedelta(days=7)
        )
    with pytest.raises(PlanRefusedError, match="older than 1 h"):
        Plan.read_jsonl(path).send(client, state=state_path, now=later)
    assert server.requests == []


def test_defect_4_resuming_an_interrupted_send_is_a_replay_not_a_supersession(
    server: FakeEventsServer, client: EventsClient, state_path: Path, tmp_path: Path
) -> None:
    rows = [event(n, f"u{n}") for n in range(30)]
    path = tmp_path / "plan.jsonl"
    plan(rows, EVENTS, state=state_path, name="s", now=NOW).write_jsonl(path)
    with pytest.raises(KeyboardInterrupt):
        Plan.read_jsonl(path).send(DiesAfterAccept(client, after=10), state=state_path, now=NOW)
    report = Plan.read_jsonl(path).send(client, state=state_path, now=NOW + timedelta(minutes=5))
    assert report.ok
    assert held_events(server) == Counter({f"r{n}": 1 for n in range(30)})
    assert run(rows, client, state_path).unchanged == 30


# --- defect 5: duplicate primary keys --------------------------------------------------------


def test_defect_5_a_duplicate_primary_key_is_rejected_not_resent_every_run(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    rows = [event(0, "u1"), {**event(0, "u2"), "pad": "fan-out"}]
    first = run(rows, client, state_path)
    assert (first.sent, first.rejected) == (1, 1)
    assert first.rejects[0].reason == "duplicate primary key, first seen at row 1"
    assert first.rejects[0].row.row_number == 2
    before = len(server.requests)
    second = run(rows, client, state_path)
    assert (second.sent, second.unchanged, second.rejected) == (0, 1, 1)
    assert len(server.requests) == before
    reviewed = plan(rows, EVENTS, state=state_path, name="s", now=NOW)
    assert reviewed.rejected == 1


# --- defect 6: two runs on one state file ----------------------------------------------------


def test_defect_6_a_second_run_of_the_same_sync_fails_naming_the_holder(
    client: EventsClient, state_path: Path
) -> None:
    with StateStore(state_path) as holder, holder.run_lock("s"):
        with pytest.raises(StateLockedError, match=f"pid {os.getpid()} on host"):
            run([event(0, "u1")], client, state_path)
        # Another sync name on the same file is not blocked.
        other = sync([event(0, "u1")], EVENTS, client, state=state_path, name="t", now=NOW)
        assert other.ok
    assert run([event(0, "u1")], client, state_path).ok  # released: the next run goes


def test_defect_6_creating_a_state_file_races_safely(tmp_path: Path) -> None:
    path = tmp_path / "new" / "state.sqlite"
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def open_it() -> None:
        barrier.wait()
        try:
            StateStore(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".new")] == []


# --- defect 8: one hostile value stops the whole run -----------------------------------------


def test_defect_8_a_lone_surrogate_in_a_primary_key_rejects_that_row_only(
    client: EventsClient, state_path: Path
) -> None:
    rows = [event(0, "u1"), {**event(1, "u2"), "id": "bad\ud800"}, event(2, "u3")]
    report = run(rows, client, state_path)
    assert (report.sent, report.rejected) == (2, 1)
    assert report.rejects[0].row.row_number == 2
    assert "surrogate" in report.rejects[0].reason


# --- migration: a state file of the previous release -----------------------------------------

# The schema (and meta rows) of state files written by the previous release (dabe028).
_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE syncs (name TEXT PRIMARY KEY, kind TEXT NOT NULL, fingerprint TEXT NOT NULL,
    last_started REAL, last_finished REAL, last_status TEXT);
CREATE TABLE accepted (name TEXT NOT NULL, key TEXT NOT NULL, hash TEXT NOT NULL,
    attributes TEXT, accepted_at REAL NOT NULL, PRIMARY KEY (name, key)) WITHOUT ROWID;
CREATE TABLE in_flight (name TEXT NOT NULL, source_request_id TEXT NOT NULL,
    endpoint TEXT NOT NULL, row_count INTEGER NOT NULL, started_at REAL NOT NULL,
    PRIMARY KEY (name, source_request_id)) WITHOUT ROWID;
INSERT INTO meta VALUES ('application', 'mparticle_feed state'), ('schema_version', '1');
"""


def test_a_state_file_of_the_previous_release_is_migrated_without_resending(
    server: FakeEventsServer, client: EventsClient, state_path: Path, tmp_path: Path
) -> None:
    rows = [event(n, f"u{n % 3}") for n in range(9)]
    # What the previous release recorded: run it today into a scratch store, then copy
    # the accepted hashes into a file with the old schema, as the old code wrote them.
    scratch = tmp_path / "scratch.sqlite"
    with (
        FakeEventsServer(now=lambda: NOW) as other,
        EventsClient("test-key", "test-secret", base_url=other.url) as other_client,
    ):
        sync(rows, EVENTS, other_client, state=scratch, name="s", now=NOW)
    with StateStore(scratch) as source:
        entries = source.get_many("s", [row["id"] for row in rows])
        fingerprint = source.fingerprint("s")
    old = sqlite3.connect(state_path)
    old.executescript(_SCHEMA_1)
    old.execute(
        "INSERT INTO syncs VALUES ('s', 'custom_event', ?, 1.0, 2.0, 'finished')", (fingerprint,)
    )
    old.executemany(
        "INSERT INTO accepted VALUES ('s', ?, ?, NULL, 2.0)",
        [(e.key, e.hash) for e in entries.values()],
    )
    old.commit()
    old.close()
    with StateStore(state_path, read_only=True) as reading:  # plan reads it unmigrated
        assert reading.count("s") == 9
    report = run(rows, client, state_path)
    assert (report.sent, report.unchanged) == (0, 9)
    assert server.requests == []
    with StateStore(state_path) as migrated:
        assert migrated.count("s") == 9
        migrated.record_accepted("s", [StateEntry(key="x", hash="0" * 32)])
    with StateStore(state_path) as again:
        assert again.count("s") == 10


# --- defect 8 and 10 through the CLI, and the files' modes ---------------------------------


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPARTICLE_API_KEY", "test-key")
    monkeypatch.setenv("MPARTICLE_API_SECRET", "test-secret")


MAPPING_TOML = """
kind = "custom_event"
primary_key = "id"
event_name = { const = "Thing Happened" }
custom_event_type = { const = "other" }
timestamp_unixtime_ms = "ts"

[user_identities]
customer_id = "user"

[custom_attributes]
columns = { row_id = "id", pad = "pad" }
"""


def _warehouse(tmp_path: Path, rows: list[tuple[Any, ...]]) -> Path:
    path = tmp_path / "warehouse.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE events (id, user, ts, pad)")
    db.executemany("INSERT INTO events VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    (tmp_path / "events.toml").write_text(MAPPING_TOML)
    return path


def _cli_args(tmp_path: Path, server: FakeEventsServer, *extra: str) -> list[str]:
    return [
        "--db",
        str(tmp_path / "warehouse.sqlite"),
        "--query",
        "SELECT * FROM events",
        "--mapping",
        str(tmp_path / "events.toml"),
        "--base-url",
        server.url,
        *extra,
    ]


def test_defect_8_undecodable_sqlite_text_rejects_its_row_not_the_run(
    server: FakeEventsServer,
    tmp_path: Path,
    credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mparticle_feed._cli import main

    monkeypatch.setenv("MPARTICLE_FEED_TEST_NOW", NOW.isoformat())
    ts = ms(NOW - timedelta(hours=1))
    bad = b"caf\xe9".decode("latin-1").encode("latin-1")  # not UTF-8
    _warehouse(tmp_path, [("r1", "u1", ts, "ok"), ("r2", "u2", ts, "ok"), ("r3", "u3", ts, "ok")])
    db = sqlite3.connect(tmp_path / "warehouse.sqlite")
    db.execute("UPDATE events SET pad = CAST(? AS TEXT) WHERE id = 'r2'", (bad,))
    db.commit()
    db.close()
    rejects = tmp_path / "rejects.jsonl"
    status = main(["sync", *_cli_args(tmp_path, server, "--out", str(rejects), "-q")])
    assert status == 1  # a row rejected, the run went on
    assert held_events(server) == Counter({"r1": 1, "r3": 1})
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    assert '"row_number": 2' in rejects.read_text()


@pytest.mark.parametrize(
    "text",
    [
        'kind = ["custom_event"]\nprimary_key = "id"\n',
        "x = " + "[" * 100_000 + "]" * 100_000 + "\n",
    ],
)
def test_defect_8_a_hostile_mapping_file_is_one_line_and_exit_2(
    server: FakeEventsServer,
    tmp_path: Path,
    credentials: None,
    capsys: pytest.CaptureFixture[str],
    text: str,
) -> None:
    from mparticle_feed._cli import main

    _warehouse(tmp_path, [])
    (tmp_path / "events.toml").write_text(text)
    assert main(["sync", *_cli_args(tmp_path, server)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_defect_10_plan_files_are_created_owner_only(
    client: EventsClient, state_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "plan.jsonl"
    plan([event(0, "u1")], EVENTS, state=state_path, name="s", now=NOW).write_jsonl(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_defect_10_a_localhost_name_must_resolve_to_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from mparticle_feed._errors import ConfigurationError

    real = socket.getaddrinfo

    def resolve(host: str, *args: Any, **kwargs: Any) -> Any:
        if host == "evil.localhost":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.7", 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(ConfigurationError, match="loopback"):
        EventsClient("k", "s", base_url="http://evil.localhost:8080")
    EventsClient("k", "s", base_url="http://127.0.0.1:8080").close()


def test_defect_10_an_attempt_is_bounded_by_its_timeout(tmp_path: Path) -> None:
    import socket
    import time

    # A server that answers 500 one byte every 0.2 s: each read is quick, the whole is not.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            listener.settimeout(0.2)
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 200\r\n\r\n")
                for _ in range(200):
                    if stop.is_set():
                        break
                    try:
                        conn.sendall(b"x")
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        from mparticle_feed._delivery.retry import RetryPolicy
        from mparticle_feed._wire.models import Batch, CustomEvent

        with EventsClient(
            "k",
            "s",
            base_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            timeout=0.5,
            connect_timeout=0.5,
            retry=RetryPolicy(max_attempts=1),
        ) as slow:
            started = time.monotonic()
            report = slow.upload(
                [Batch(events=[CustomEvent(event_name="e", custom_event_type="other")])]
            )
            took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert report.counts["failed"] == 1
    assert took < 10  # 200 bytes at 0.2 s each would hold it 40 s


def test_defect_10_a_full_disk_is_named_as_such(state_path: Path) -> None:
    from mparticle_feed._errors import StateError

    with StateStore(state_path) as store:
        store.begin_sync("s", kind="custom_event", fingerprint="f")
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        # SQLite's own "disk full": the file may not grow past its current size.
        store._conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StateError, match="the disk is full") as caught:
            store.record_accepted(
                "s", [StateEntry(key=f"k{n}", hash="0" * 32) for n in range(20_000)]
            )
        assert "rollback" not in str(caught.value)
        assert store.count("s") == 0  # the transaction was rolled back whole


def test_plan_reads_the_state_without_a_lock_or_a_write(
    client: EventsClient, state_path: Path
) -> None:
    run([event(0, "u1")], client, state_path)
    for suffix in ("-wal", "-shm"):
        Path(f"{state_path}{suffix}").unlink(missing_ok=True)  # as after a clean close
    before = state_path.read_bytes()
    with StateStore(state_path) as holder, holder.run_lock("s"):  # a sync is running
        reviewed = plan([event(0, "u1"), event(1, "u2")], EVENTS, state=state_path, name="s")
    assert (reviewed.unchanged, reviewed.rows_to_send) == (1, 1)
    assert state_path.read_bytes() == before


def test_defect_5_duplicate_primary_keys_through_the_arrow_engine(
    server: FakeEventsServer, client: EventsClient, state_path: Path
) -> None:
    pa = pytest.importorskip("pyarrow")
    rows = [event(0, "u1"), event(1, "u1"), {**event(0, "u1"), "pad": "again"}, event(2, "u2")]
    table = pa.Table.from_pylist(rows)
    report = sync(table, EVENTS, client, state=state_path, name="s", now=NOW)
    assert (report.sent, report.rejected) == (3, 1)
    assert report.rejects[0].row.row_number == 3
    assert report.rejects[0].reason == "duplicate primary key, first seen at row 1"
    assert held_events(server) == Counter({"r0": 1, "r1": 1, "r2": 1})
