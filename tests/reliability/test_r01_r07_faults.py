"""R1-R7: statuses, rate limits, backoff and broken connections, on a real loopback socket."""

from __future__ import annotations

import email.utils
import time
from collections import Counter
from collections.abc import Callable

import pytest
from builders import NOW, batch_for, batches
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_kit import Scorecard, fake_server
from scenario import client_for, figures_for

from mparticle_feed._delivery.report import BatchOutcome
from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._errors import ConfigurationError, UploadConfigurationError
from mparticle_feed.testing import FakeClock, FakeEventsServer, PerBody, ReceivedRequest, Reply

MakeServer = Callable[..., FakeEventsServer]


# --- R1 -------------------------------------------------------------------------------


def test_R1_transient_statuses_are_retried_once_each_then_accepted(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    faults = [500, 502, 503, 504, 408]
    server = make_server(responder=PerBody(*faults), clock=clock.monotonic)
    data = batches(6)
    with client_for(server, clock, max_workers=2, max_batches=2) as client:
        report = client.upload(data, now=NOW)
    requests = server.requests
    bodies = Counter(r.body for r in requests)
    assert len(bodies) == 3  # three requests of two batches
    assert set(bodies.values()) == {len(faults) + 1}  # one retry per failure, no more
    assert report.counts["accepted"] == 6
    assert all(o.attempts == len(faults) + 1 for o in report.outcomes)
    assert report.retries == {f"status {s}": 3 for s in faults}
    assert len(clock.sleeps) == 3 * len(faults)
    scorecard.record(figures_for("R1 5xx/408 then 202", data, report, server, clock))


# --- R2 -------------------------------------------------------------------------------


def test_R2_400_rejects_with_status_and_body_after_one_attempt(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    body = b'{"errors":[{"code":"BAD_REQUEST","message":"Required event field is missing."}]}'
    server = make_server(script=[Reply(status=400, body=body)], clock=clock.monotonic)
    data = batches(1, rows_per_batch=3)
    with client_for(server, clock) as client:
        report = client.upload(data, now=NOW)
    (outcome,) = report.outcomes
    assert outcome.status == "rejected"
    assert outcome.http_status == 400
    assert outcome.response_body == body.decode()
    assert outcome.attempts == 1
    assert len(server.requests) == 1
    assert clock.sleeps == []
    scorecard.record(figures_for("R2 400", data, report, server, clock))


@pytest.mark.parametrize("status", [401, 403])
def test_R2_401_403_stop_the_run_with_a_configuration_error(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard, status: int
) -> None:
    server = make_server(default=status, clock=clock.monotonic)
    data = batches(5)
    with (
        client_for(server, clock, max_batches=1) as client,
        pytest.raises(ConfigurationError) as caught,
    ):
        client.upload(data, now=NOW)
    error = caught.value
    assert error.status == status
    assert len(server.requests) == 1  # one attempt, and nothing else was sent
    assert clock.sleeps == []
    assert isinstance(error, UploadConfigurationError)
    report = error.report
    assert report.count("pending") == 4
    scorecard.record(figures_for(f"R2 {status}", data, report, server, clock))


# --- R3 -------------------------------------------------------------------------------


def _user_of(outcome: BatchOutcome) -> str:
    assert outcome.sourced is not None
    identities = outcome.sourced.batch.user_identities
    assert identities is not None
    assert identities.customer_id is not None
    return identities.customer_id


def _refuse_bad(status: int) -> Callable[[ReceivedRequest], Reply | None]:
    def script(request: ReceivedRequest) -> Reply | None:
        names = [
            b.user_identities.customer_id or "" for b in request.batches or () if b.user_identities
        ]
        if any(name.startswith("bad") for name in names):
            return Reply(status=status, body=b'{"errors":[{"code":"BAD_REQUEST"}]}')
        return None  # the normal answer

    return script


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bad=st.sets(st.integers(min_value=0, max_value=19), max_size=6),
    status=st.sampled_from([400, 413]),
)
def test_R3_a_4xx_on_many_batches_is_bisected_down_to_the_bad_ones(
    scorecard: Scorecard, bad: set[int], status: int
) -> None:
    clock = FakeClock()
    data = [batch_for(f"bad{i}" if i in bad else f"good{i}", [i + 1]) for i in range(20)]
    with (
        fake_server(responder=_refuse_bad(status), clock=clock.monotonic) as server,
        client_for(server, clock) as client,
    ):
        report = client.upload(data, now=NOW)
        client.close()
        figures = figures_for(f"R3 {status} bisect", data, report, server, clock)
    by_user = {_user_of(o): o for o in report.outcomes}
    assert {u for u, o in by_user.items() if o.status == "rejected"} == {f"bad{i}" for i in bad}
    assert all(o.status == "accepted" for u, o in by_user.items() if u.startswith("good"))
    assert all(o.http_status == status for u, o in by_user.items() if u.startswith("bad"))
    # The identical body is never resent after a 4xx.
    refused = [r.body for r in server.requests if r.status == status]
    sent = Counter(r.body for r in server.requests)
    assert all(sent[body] == 1 for body in refused)
    assert figures.ids_sent_more_than_once <= len(data)  # only through bisection halves
    scorecard.record(figures)


# --- R4 -------------------------------------------------------------------------------


def _http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@pytest.mark.parametrize(
    ("label", "header", "at_least"),
    [
        ("seconds", "7", 7.0),
        ("http-date", None, 5.0),  # a date ~6.5 s ahead; one second lost to date resolution
        ("missing", "", 0.0),
        ("invalid", "soon", 0.0),
        ("negative", "-30", 0.0),
    ],
)
def test_R4_429_waits_at_least_retry_after_on_the_server_clock(
    make_server: MakeServer,
    clock: FakeClock,
    scorecard: Scorecard,
    label: str,
    header: str | None,
    at_least: float,
) -> None:
    value = _http_date(6.5) if header is None else header
    headers = {"Retry-After": value} if value else {}
    server = make_server(
        responder=PerBody(Reply(status=429, headers=headers)), clock=clock.monotonic
    )
    data = batches(3)
    with client_for(server, clock) as client:
        report = client.upload(data, now=NOW)
    first, second = server.requests
    refused_at = first.answered_at
    assert refused_at is not None
    assert second.received_at - refused_at >= at_least  # measured by the server
    assert second.body == first.body
    assert report.counts["accepted"] == 3
    assert report.retries == {"status 429": 1}
    assert clock.slept <= max(at_least, 0.0) + RetryPolicy().backoff_bound(1) + 1.5
    scorecard.record(figures_for(f"R4 429 Retry-After {label}", data, report, server, clock))


def test_R4_a_retry_after_beyond_max_retry_after_stops_the_run_pending(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    server = make_server(default=Reply(status=429, retry_after="86400"), clock=clock.monotonic)
    data = batches(4)
    policy = RetryPolicy(max_retry_after=600)
    with client_for(server, clock, retry=policy, max_batches=2) as client:
        report = client.upload(data, now=NOW)
    assert clock.slept < 60  # no sleep of hours
    assert report.count("pending") == 4
    assert report.stopped is not None
    assert "max_retry_after" in report.stopped
    assert len(server.requests) == 1  # the second request was never sent
    scorecard.record(figures_for("R4 429 Retry-After huge", data, report, server, clock))


def test_R4_waits_go_on_until_nothing_was_accepted_for_max_stall(
    make_server: MakeServer, clock: FakeClock
) -> None:
    """Several 429s of 200 s each and no acceptance: the run stops once 500 s passed."""
    server = make_server(default=Reply(status=429, retry_after="200"), clock=clock.monotonic)
    policy = RetryPolicy(max_stall=500)
    with client_for(server, clock, retry=policy) as client:
        report = client.upload(batches(1), now=NOW)
    assert report.count("pending") == 1
    assert report.stopped is not None
    assert "max_stall" in report.stopped
    assert clock.slept <= 500
    assert len(server.requests) == 3  # two waits of 200 s; the third would pass 500 s


# --- R5 -------------------------------------------------------------------------------


@pytest.mark.parametrize("jitter", [0.0, 0.37, 1.0])
def test_R5_backoff_follows_the_documented_formula(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard, jitter: float
) -> None:
    server = make_server(default=503, clock=clock.monotonic)
    policy = RetryPolicy(max_attempts=8, initial_backoff=0.5, max_backoff=10.0, deadline=300)
    data = batches(2)
    with client_for(server, clock, retry=policy, random=lambda: jitter) as client:
        report = client.upload(data, now=NOW)
    assert len(server.requests) == policy.max_attempts
    expected = [jitter * min(10.0, 0.5 * 2 ** (n - 1)) for n in range(1, policy.max_attempts)]
    assert clock.sleeps == pytest.approx(expected)
    gaps = [
        b.received_at - a.received_at
        for a, b in zip(server.requests, server.requests[1:], strict=False)
    ]
    assert gaps == pytest.approx(expected)  # the server saw the same schedule
    assert report.count("failed") == 2
    assert all(o.attempts == policy.max_attempts for o in report.outcomes)
    assert report.elapsed_seconds <= policy.deadline
    scorecard.record(figures_for(f"R5 always 503 jitter {jitter}", data, report, server, clock))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    deadline=st.floats(min_value=1, max_value=120),
)
def test_R5_jittered_waits_stay_in_bounds_and_the_deadline_holds(
    seed: int, deadline: float
) -> None:
    import random

    clock = FakeClock()
    rng = random.Random(seed)
    policy = RetryPolicy(max_attempts=12, initial_backoff=0.5, max_backoff=8.0, deadline=deadline)
    with (
        fake_server(default=503, clock=clock.monotonic) as server,
        client_for(server, clock, retry=policy, random=rng.random) as client,
    ):
        report = client.upload(batches(1), now=NOW)
        sent = len(server.requests)
    assert 1 <= sent <= policy.max_attempts
    for n, wait in enumerate(clock.sleeps, start=1):
        assert 0 <= wait <= policy.backoff_bound(n)
    assert clock.slept <= deadline  # no retry starts after the deadline
    (outcome,) = report.outcomes
    assert outcome.status == "failed"


# --- R6 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "fault"),
    [
        ("hang past timeout", Reply(action="hang", hang_seconds=1.5)),
        ("tcp reset", Reply(action="reset")),
        ("partial 503 response", Reply(action="partial", status=503)),
    ],
)
def test_R6_a_broken_exchange_is_resent_byte_for_byte(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard, label: str, fault: Reply
) -> None:
    server = make_server(responder=PerBody(fault), clock=clock.monotonic)
    data = batches(5)
    with client_for(server, clock, max_batches=5) as client:
        report = client.upload(data, now=NOW)
    first, second = server.requests
    assert second.body == first.body
    assert second.source_request_ids == first.source_request_ids
    assert len(set(first.source_request_ids)) == 5
    assert set(server.accepted_ids().values()) == {1}  # each id accepted once
    assert report.counts["accepted"] == 5
    cause = "timeout" if fault.action == "hang" else "connection"
    assert report.retries == {cause: 1}
    scorecard.record(figures_for(f"R6 {label}", data, report, server, clock))


def test_R6_a_202_cut_short_is_accepted_and_never_resent(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    # Any 2xx means mParticle took the batches: resending would only risk doubles.
    server = make_server(responder=PerBody(Reply(action="partial")), clock=clock.monotonic)
    data = batches(5)
    with client_for(server, clock, max_batches=5) as client:
        report = client.upload(data, now=NOW)
    assert len(server.requests) == 1
    assert report.counts["accepted"] == 5
    assert report.retries == {}
    scorecard.record(figures_for("R6 partial 202 response", data, report, server, clock))


# --- R7 -------------------------------------------------------------------------------


def test_R7_connection_refused_then_the_server_comes_up(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    server = make_server(start=False, clock=clock.monotonic)

    def sleep_then_start(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.sleeps) == 2:  # refused twice, then the server is up
            server.start()

    data = batches(3)
    with client_for(server, clock, sleep=sleep_then_start, max_batches=3) as client:
        report = client.upload(data, now=NOW)
    assert report.counts["accepted"] == 3
    assert report.retries == {"connection": 2}
    assert len(server.requests) == 1
    scorecard.record(figures_for("R7 refused then up", data, report, server, clock))


def test_R7_a_server_that_never_comes_up_fails_the_batches(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    server = make_server(start=False, clock=clock.monotonic)
    data = batches(2)
    with client_for(server, clock, retry=RetryPolicy(max_attempts=4)) as client:
        report = client.upload(data, now=NOW)
    assert report.count("failed") == 2
    assert report.retries == {"connection": 3}  # 4 attempts
    scorecard.record(figures_for("R7 never up", data, report, server, clock))
