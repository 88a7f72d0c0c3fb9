"""R8 (a shared 429 pause across workers), R9 (size limits by the server's count), R16 (leaks)."""

from __future__ import annotations

import gc
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from builders import NOW, batch_for, batches, multibyte_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import Scorecard, fake_server
from scenario import client_for, figures_for, non_server_threads

from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._mapping.provenance import SourcedBatch, Stage
from mparticle_feed.testing import FakeClock, FakeEventsServer, PerBody, ReceivedRequest, Reply

MakeServer = Callable[..., FakeEventsServer]


# --- R8 -------------------------------------------------------------------------------


def test_R8_one_429_pauses_every_worker(make_server: MakeServer, scorecard: Scorecard) -> None:
    """The suite's one real wait: 4 workers, the first answer is 429 + Retry-After: 2."""
    lock = threading.Lock()
    state = {"refused": False}

    def script(request: ReceivedRequest) -> Reply:
        with lock:
            if not state["refused"]:
                state["refused"] = True
                # Late, so the other workers' first requests are surely on the wire before it.
                return Reply(status=429, retry_after="2", delay=0.3)
        return Reply(delay=0.4)  # still busy when the 429 lands

    server = make_server(responder=script)
    data = batches(16)
    # With the default pacing: the 429 pauses the workers and the shared limiter alike.
    with client_for(server, max_workers=4, max_batches=1, timeout=5.0, rate_limit=270.0) as client:
        report = client.upload(data, now=NOW)
    refused_at = next(r.answered_at for r in server.requests if r.status == 429)
    assert refused_at is not None
    # Requests already on the wire when the 429 went out may finish; none may start after.
    started_after = [
        r.received_at - refused_at for r in server.requests if r.received_at > refused_at
    ]
    assert started_after, "nothing was sent after the 429"
    assert min(started_after) >= 2.0
    assert report.counts["accepted"] == 16
    assert report.retries == {"status 429": 1}
    assert report.rate_limit_wait_seconds >= 2.0
    scorecard.record(
        figures_for(
            "R8 4 workers, one 429 Retry-After 2",
            data,
            report,
            server,
            note=f"first send after the 429: +{min(started_after):.2f} s (server clock)",
        )
    )


# --- R9 -------------------------------------------------------------------------------


def _sized_batch(index: int, target: int, events: int) -> SourcedBatch:
    """A batch of ``events`` rows whose JSON is about ``target`` bytes, in multi-byte UTF-8."""
    first = index * 10 + 1
    per_event = max(0, target // events - 150)
    return batch_for(
        f"user{index}",
        range(first, first + events),
        padding=multibyte_text(per_event, seed=index),
    )


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(
        st.tuples(
            st.sampled_from([100, 2_000, 30_000, 64_000, 127_500, 128_100, 131_000]),
            st.integers(min_value=1, max_value=3),
        ),
        min_size=1,
        max_size=12,
    ),
    workers=st.sampled_from([1, 3]),
)
def test_R9_requests_and_batches_stay_within_limits_by_the_servers_count(
    scorecard: Scorecard, sizes: list[tuple[int, int]], workers: int
) -> None:
    clock = FakeClock()
    data = [_sized_batch(i, target, events) for i, (target, events) in enumerate(sizes)]
    with (
        fake_server(clock=clock.monotonic) as server,
        client_for(server, clock, max_workers=workers) as client,
    ):
        report = client.upload(data, now=NOW)
        client.close()
        figures = figures_for(
            "R9 sizes to just over 128 kB, multi-byte", data, report, server, clock
        )
    requests = server.requests
    for request in requests:
        assert len(request.body) <= 256_000
        assert len(request.batch_sizes) <= 100
        assert all(size <= 128_000 for size in request.batch_sizes)
        assert json.loads(request.body)  # well-formed UTF-8 JSON by the server's reading
        assert request.status == 202  # and valid by its rules
    # No event missing or doubled: every accepted row's event arrived exactly once.
    seen = Counter(
        event.custom_attributes["row"]  # type: ignore[union-attr]
        for request in requests
        for batch in request.batches or ()
        for event in batch.events or ()
    )
    assert set(seen.values()) <= {1}
    accepted_rows = {
        row.row_number for o in report.outcomes if o.status == "accepted" for row in o.rows
    }
    assert set(seen) == accepted_rows
    # The only rows not accepted are single events too big for any batch.
    for problem in report.problems:
        assert problem.stage is Stage.PACKING
        assert "at most 128,000" in problem.reason
    assert figures.invariant_holds
    scorecard.record(figures)


def test_R9_hundred_batch_cap(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    server = make_server(clock=clock.monotonic)
    data = batches(250)
    with client_for(server, clock) as client:
        report = client.upload(data, now=NOW)
    assert [len(r.batches or ()) for r in server.requests] == [100, 100, 50]
    assert report.counts["accepted"] == 250
    scorecard.record(figures_for("R9 250 batches", data, report, server, clock))


# --- R16 ------------------------------------------------------------------------------

_FAULTS: dict[str, list[Reply | int]] = {
    "429": [Reply(status=429, retry_after="1")],
    "503": [503, 503],
    "hang": [Reply(action="hang", hang_seconds=1.0)],
    "reset": [Reply(action="reset")],
    "partial": [Reply(action="partial")],
    "huge body": [Reply(status=500, stream_size=5_000_000)],
}


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Only explicit closes count: garbage collection must not tidy up after the client."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("fault", [*_FAULTS, "refused"])
def test_R16_no_connection_or_thread_outlives_close(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard, fault: str
) -> None:
    threads_before = non_server_threads()
    if fault == "refused":
        server = make_server(start=False, clock=clock.monotonic)

        def sleep(seconds: float) -> None:
            clock.sleep(seconds)
            server.start()

    else:
        server = make_server(responder=PerBody(*_FAULTS[fault]), clock=clock.monotonic)
        sleep = clock.sleep
    data = batches(8)
    client = client_for(server, clock, sleep=sleep, max_workers=3, max_batches=2)
    report = client.upload(data, now=NOW)
    client.close()
    assert report.counts["accepted"] == 8
    assert server.wait_for_open_connections(0) == 0, "a connection outlived client.close()"
    leaked = {t for t in non_server_threads() - threads_before if t.is_alive()}
    assert not leaked, f"threads outlived the upload: {sorted(t.name for t in leaked)}"
    scorecard.record(figures_for(f"R16 leaks after {fault}", data, report, server, clock))


def test_R16_a_policy_of_one_attempt_leaves_nothing_open(
    make_server: MakeServer, clock: FakeClock
) -> None:
    server = make_server(default=Reply(action="hang", hang_seconds=1.0), clock=clock.monotonic)
    with client_for(server, clock, retry=RetryPolicy(max_attempts=1)) as client:
        report = client.upload(batches(2), now=NOW)
    assert report.count("failed") == 2
    assert server.wait_for_open_connections(0) == 0


@pytest.mark.usefixtures("no_gc")
def test_R16_close_closes_pooled_connections_without_gc(make_server: MakeServer) -> None:
    """Regression: ``PoolManager.clear()`` alone does not close sockets in urllib3 2.x, so
    EventsClient.close must close each pool; a TCP reset leaves a reference cycle that
    would otherwise keep a keep-alive socket open until the garbage collector runs.
    """
    server = make_server(responder=PerBody(Reply(action="reset")))
    client = client_for(server, FakeClock())
    client.upload(batches(1), now=NOW)
    client.close()
    assert server.wait_for_open_connections(0, timeout=1.0) == 0
