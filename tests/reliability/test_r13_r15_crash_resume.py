"""R13 (crash, then resume) and R15 (stop or close with work queued), with a real state file."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from builders import NOW
from reliability_kit import API_KEY, API_SECRET, Scorecard, secret_leaks
from scenario import client_for
from sync_support import MAPPING, event_rows_at_server, good_rows, sqlite_source, sync_figures

from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._delivery.packing import Request
from mparticle_feed._delivery.report import BatchOutcome, UploadReport
from mparticle_feed._sync.run import sync as _sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeClock, FakeEventsServer, Reply

# These scenarios crash and stop mid-run after a few of many small requests: consecutive
# grouping (no regroup window) keeps the request count they were written for.
sync = functools.partial(_sync, group_window=0)

MakeServer = Callable[..., FakeEventsServer]
HERE = Path(__file__).resolve().parent


class Crash(BaseException):
    """The process dying: not an Exception, so nothing on the way may swallow it."""


class CrashingClient:
    """Sends through a real client one request at a time and dies at request ``at``.

    ``when`` is "before send" (the request was handed out, never sent) or "after 202"
    (mParticle accepted it, but the outcome never reached the state).
    """

    def __init__(self, real: EventsClient, *, at: int, when: str) -> None:
        self.real = real
        self.at = at
        self.when = when
        self.crashed_ids: list[str] = []
        self.historical_after = real.historical_after
        self.historical_min_age = real.historical_min_age
        self.max_batches = real.max_batches
        self.max_request_bytes = real.max_request_bytes
        self.max_batch_bytes = real.max_batch_bytes

    def send(
        self,
        requests: Iterable[Request],
        *,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport:
        outcomes: list[BatchOutcome] = []
        for n, request in enumerate(requests):
            if n == self.at:
                self.crashed_ids = [b.source_request_id for b in request.batches]
                if self.when == "before send":
                    raise Crash
            report = self.real.send([request])
            if n == self.at:
                raise Crash
            for outcome in report.outcomes:
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
        return UploadReport(outcomes=tuple(outcomes))


@pytest.mark.parametrize("when", ["before send", "after 202"])
def test_R13_crash_then_resume_loses_nothing_and_resends_only_what_was_in_flight(
    make_server: MakeServer, clock: FakeClock, tmp_path: Path, scorecard: Scorecard, when: str
) -> None:
    rows = good_rows(60, users=9)
    state = tmp_path / "state.db"
    server = make_server(clock=clock.monotonic)
    with client_for(server, clock, max_batches=5) as real:
        crashing = CrashingClient(real, at=3, when=when)
        with pytest.raises(Crash):
            sync(rows, MAPPING, crashing, state=state, now=NOW)
        with StateStore(state) as store:
            in_flight = {f.source_request_id for f in store.in_flight("custom_event")}
        assert set(crashing.crashed_ids) <= in_flight  # the state knows what was in flight
        before = len(server.requests)
        report = sync(rows, MAPPING, real, state=state, now=NOW)
    assert report.resumed
    assert report.accepted == 60
    assert report.resent_in_flight == len(in_flight)
    # Nothing missing at the server.
    assert set(event_rows_at_server(server)) == {r["id"] for r in rows}
    counts = server.received_ids()
    resent = {i for i, n in counts.items() if n > 1}
    if when == "before send":
        assert resent == set()  # the crashed request never left; nothing doubled
    else:
        assert resent == set(crashing.crashed_ids)  # (b) resends carry the same ids
    assert len(resent) <= len(in_flight)  # bounded by the requests in flight
    assert len(server.requests) > before
    scorecard.record(sync_figures(f"R13 crash {when}, then resume", [report], server, len(rows)))


_SYNC_SCRIPT = textwrap.dedent(
    """
    import os, sqlite3, sys, threading
    from datetime import datetime, timezone
    from mparticle_feed._delivery.client import EventsClient
    from mparticle_feed._sync.run import sync
    from sync_support import MAPPING

    url, state, db, mode = sys.argv[1:5]
    stop = threading.Event()
    if mode == "sigterm":
        from mparticle_feed._cli import _stop_on_signals
        signals = _stop_on_signals(stop)  # kept: collecting it would put the handlers back
        signals.__enter__()
    now = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    connection = sqlite3.connect(db)
    cursor = connection.execute("SELECT id, user, name, ts, v FROM events ORDER BY id")
    key, secret = os.environ["MPF_TEST_KEY"], os.environ["MPF_TEST_SECRET"]
    with EventsClient(key, secret, base_url=url, max_workers=2, max_batches=5) as client:
        print("started", flush=True)
        report = sync(
            cursor, MAPPING, client, state=state, now=now, stop=stop, chunk_size=10, group_window=0
        )
    print("pending", report.pending, "accepted", report.accepted, flush=True)
    """
)


def _start_sync_process(
    tmp_path: Path, url: str, state: Path, db: Path, mode: str
) -> subprocess.Popen[str]:
    script = tmp_path / "run_sync.py"
    script.write_text(_SYNC_SCRIPT)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        MPF_TEST_KEY=API_KEY,
        MPF_TEST_SECRET=API_SECRET,
    )
    return subprocess.Popen(
        [sys.executable, str(script), url, str(state), str(db), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_requests(
    server: FakeEventsServer, n: int, proc: subprocess.Popen[str], limit: float = 20
) -> None:
    deadline = time.monotonic() + limit
    while len(server.requests) < n:
        assert proc.poll() is None, f"the sync ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "the sync process sent too little"
        time.sleep(0.01)


def test_R13_kill_9_mid_run_then_resume(
    make_server: MakeServer, tmp_path: Path, scorecard: Scorecard
) -> None:
    rows = good_rows(200, users=13)
    db = tmp_path / "warehouse.db"
    sqlite_source(db, rows)
    state = tmp_path / "state.db"
    server = make_server(default=Reply(delay=0.02))
    proc = _start_sync_process(tmp_path, server.url, state, db, "plain")
    try:
        _wait_for_requests(server, 6, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert not secret_leaks(out + err)
    first_run_ids = set(server.received_ids())
    with StateStore(state) as store:
        in_flight = store.in_flight("custom_event")
    with client_for(server, max_workers=2, max_batches=5, timeout=5) as client:
        report = sync(rows, MAPPING, client, state=state, now=NOW)
    assert report.resumed
    assert report.accepted == 200
    assert set(event_rows_at_server(server)) == {r["id"] for r in rows}  # nothing missing
    resent = {i for i, n in server.received_ids().items() if n > 1}
    # Resends are bounded by what was in flight (2 workers, one queued; 5 batches each).
    assert resent <= {f.source_request_id for f in in_flight} | first_run_ids
    assert len(resent) <= 3 * 5
    assert report.unchanged > 0  # what the killed run had settled was not sent again
    scorecard.record(
        sync_figures(
            "R13 kill -9 mid-run, then resume",
            [report],
            server,
            len(rows),
            note=f"{len(in_flight)} batches in flight at the kill, {len(resent)} ids resent",
        )
    )


# --- R15 ------------------------------------------------------------------------------


def test_R15_stop_with_work_queued_leaves_the_rest_pending_then_resumes(
    make_server: MakeServer, clock: FakeClock, tmp_path: Path, scorecard: Scorecard
) -> None:
    rows = good_rows(80, users=11)
    state = tmp_path / "state.db"
    server = make_server(clock=clock.monotonic)
    stop = threading.Event()
    with client_for(server, clock, max_batches=4) as client:
        first = sync(
            rows, MAPPING, client, state=state, now=NOW, stop=stop, progress=lambda _: stop.set()
        )
        assert first.stopped
        assert first.pending > 0
        assert first.rows_in == first.accepted + first.rejected + first.failed + first.pending
        # A stopped run reads no further: rows it never read are not in its report, and
        # are counted here as pending (the resume below must deliver them).
        unread = len(rows) - first.rows_in
        figures = sync_figures(
            "R15 stop with work queued",
            [first],
            None,
            len(rows),
            note=f"{first.pending} pending + {unread} never read; resume delivered all",
        )
        figures.pending += unread
        second = sync(rows, MAPPING, client, state=state, now=NOW)
    scorecard.record(figures.with_server(server))
    assert second.resumed
    assert second.accepted == 80
    assert second.unchanged == first.accepted  # settled rows are not sent twice
    assert set(event_rows_at_server(server)) == {r["id"] for r in rows}
    assert max(Counter(event_rows_at_server(server)).values()) == 1


def test_R15_close_during_an_upload_drains_within_a_deadline(
    make_server: MakeServer, scorecard: Scorecard
) -> None:
    server = make_server(default=Reply(delay=0.05))
    rows = good_rows(120, users=17)
    client = client_for(server, max_workers=2, max_batches=3, timeout=5)
    closer = threading.Timer(0.2, client.close)
    closer.start()
    started = time.monotonic()
    try:
        report = sync(rows, MAPPING, client, now=NOW)
    finally:
        closer.join()
        client.close()
    took = time.monotonic() - started
    assert took < 2.0  # drained: only the requests in flight finished
    assert report.pending > 0
    assert (
        report.rows_in == 120 == report.accepted + report.rejected + report.failed + report.pending
    )
    accepted_at_server = set(event_rows_at_server(server))
    assert len(accepted_at_server) >= report.accepted  # every row called accepted did arrive
    assert server.wait_for_open_connections(0) == 0
    scorecard.record(
        sync_figures(
            "R15 close() mid-upload", [report], server, len(rows), note=f"drained in {took:.2f} s"
        )
    )


def test_R15_sigterm_stops_gracefully_and_the_rest_resumes(
    make_server: MakeServer, tmp_path: Path, scorecard: Scorecard
) -> None:
    rows = good_rows(200, users=13)
    db = tmp_path / "warehouse.db"
    sqlite_source(db, rows)
    state = tmp_path / "state.db"
    server = make_server(default=Reply(delay=0.02))
    proc = _start_sync_process(tmp_path, server.url, state, db, "sigterm")
    try:
        _wait_for_requests(server, 4, proc)
        os.kill(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not secret_leaks(out + err)  # the subprocess logs a warning on SIGTERM
    words = out.split()
    pending = int(words[words.index("pending") + 1])
    accepted = int(words[words.index("accepted") + 1])
    assert pending > 0
    assert accepted + pending <= 200  # a stopped run reports the rows it read
    with StateStore(state) as store:
        assert store.in_flight("custom_event") == []  # drained: nothing left in flight
    with client_for(server, max_workers=2, max_batches=5, timeout=5) as client:
        report = sync(rows, MAPPING, client, state=state, now=NOW)
    assert report.accepted == 200
    assert report.unchanged == accepted
    assert set(event_rows_at_server(server)) == {r["id"] for r in rows}
    scorecard.record(
        sync_figures(
            "R15 SIGTERM, then resume",
            [report],
            server,
            len(rows),
            note=f"stopped with {accepted} accepted, {pending} pending, "
            f"{200 - accepted - pending} never read; resume delivered all",
        )
    )
