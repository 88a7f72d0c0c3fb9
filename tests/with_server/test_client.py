from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from mparticle_feed import Batch, ConfigurationError, CustomEvent, UserIdentities
from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._delivery.packing import Request, pack
from mparticle_feed._delivery.report import BatchOutcome
from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._delivery.routing import Endpoint, route
from mparticle_feed._errors import UploadConfigurationError
from mparticle_feed.testing import FakeClock, FakeEventsServer, Reply

from .conftest import KEY, NOW, SECRET, batches

MakeClient = Callable[..., EventsClient]


def test_accepted_upload_sends_auth_headers_and_reports_202_as_accepted(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    seen: list[BatchOutcome] = []
    report = make_client().upload(
        batches(150) + batches(30, days_old=40, prefix="h"), on_outcome=seen.append
    )
    assert report.counts == {"accepted": 180, "rejected": 0, "failed": 0, "pending": 0}
    assert report.count("accepted", Endpoint.HISTORICAL) == 30
    assert report.ok
    assert len(seen) == 180
    assert "delivered" not in repr(report)
    request = server.requests[0]
    assert request.api_key == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("mparticle-feed/")
    assert request.headers["Authorization"] == "<redacted>"
    assert {r.path for r in server.requests} == {"/v2/bulkevents", "/v2/bulkevents/historical"}
    assert report.rate_limit_headers == {"x-mp-rate-limit-percentage-used": ("1",)}
    assert len(server.accepted_batches()) == 180


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 505, 507, 408])
def test_transient_status_is_retried_with_the_identical_body(
    server: FakeEventsServer, make_client: MakeClient, status: int
) -> None:
    server.script(status)
    report = make_client(max_workers=1).upload(batches(3))
    assert report.counts["accepted"] == 3
    assert report.retries == {f"status {status}": 1}
    first, second = server.requests
    assert first.body == second.body
    assert report.requests_sent == 2


def test_all_retryable_statuses_in_a_row_then_accepted(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    server.script(500, 502, 503, 504, 408)
    report = make_client(max_workers=1, retry=RetryPolicy(max_attempts=6)).upload(batches(2))
    assert report.counts["accepted"] == 2
    assert sum(report.retries.values()) == 5
    assert len({r.body for r in server.requests}) == 1


def test_400_on_a_single_batch_is_rejected_once_with_body(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    server.script(Reply(status=400, body=b'{"errors":[{"code":"BAD_REQUEST","message":"nope"}]}'))
    (outcome,) = make_client().upload(batches(1)).outcomes
    assert outcome.status == "rejected"
    assert outcome.http_status == 400
    assert outcome.response_body is not None
    assert "nope" in outcome.response_body
    assert outcome.attempts == 1
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_credentials_refused_stops_the_run(
    server: FakeEventsServer, make_client: MakeClient, status: int
) -> None:
    server.script(status)
    client = make_client(max_workers=1, max_batches=10)
    with pytest.raises(UploadConfigurationError) as caught:
        client.upload(batches(50))
    error = caught.value
    assert isinstance(error, ConfigurationError)
    assert error.status == status
    assert SECRET not in str(error)
    assert len(server.requests) == 1
    counts = error.report.counts
    assert counts["failed"] == 10
    assert counts["pending"] == 40
    assert counts["accepted"] == 0


def test_wrong_secret_is_refused_by_the_server(server: FakeEventsServer) -> None:
    with (
        EventsClient(KEY, "wrong", base_url=server.url) as client,
        pytest.raises(UploadConfigurationError),
    ):
        client.upload(batches(1))


def test_one_invalid_batch_among_100_is_isolated_and_99_accepted(make_client: MakeClient) -> None:
    with FakeEventsServer(
        api_key=KEY,
        api_secret=SECRET,
        reject=lambda b: b.user_identities is not None and b.user_identities.customer_id == "u37",
    ) as server:
        report = make_client(base_url=server.url, max_workers=1).upload(batches(100))
        assert len(server.requests[0].batches or ()) == 100
        assert server.requests[0].status == 400
        rejected = [o for o in report.outcomes if o.status == "rejected"]
        assert [o.rows[0].row_number for o in rejected] == [38]
        assert report.counts["accepted"] == 99
        assert len(server.accepted_batches()) == 99
        # After a 4xx, the identical body is never sent again.
        bodies = [r.body for r in server.requests]
        assert len(bodies) == len(set(bodies))


def test_413_on_many_batches_is_bisected(server: FakeEventsServer, make_client: MakeClient) -> None:
    server.script(413)
    report = make_client(max_workers=1).upload(batches(8))
    assert report.counts["accepted"] == 8
    assert [len(r.batches or ()) for r in server.requests] == [8, 4, 4]


def _retry_after_date(seconds: int) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize(
    ("header", "low", "high"),
    [
        # Retry-After plus jitter of up to 10 % (at most 1 s); without it, the backoff.
        ("7", 7.0, 7.7),
        (None, 0.0, 0.5),
        ("soon", 0.0, 0.5),
        ("-5", 0.0, 0.5),
        ("2.5", 2.5, 2.75),
        ("date", 28.0, 31.0),
    ],
)
def test_429_waits_at_least_retry_after(
    server: FakeEventsServer,
    make_client: MakeClient,
    clock: FakeClock,
    header: str | None,
    low: float,
    high: float,
) -> None:
    value = _retry_after_date(30) if header == "date" else header
    server.script(Reply(status=429, retry_after=value))
    report = make_client(max_workers=1).upload(batches(2))
    assert report.counts["accepted"] == 2
    assert report.retries == {"status 429": 1}
    assert len(clock.sleeps) == 1
    assert low <= clock.sleeps[0] <= high
    assert report.rate_limit_wait_seconds == pytest.approx(clock.sleeps[0])
    assert report.rate_limit_headers["x-mp-rate-limit-exceeded"] == ("app",)


def test_huge_retry_after_stops_the_run_leaving_batches_pending(
    server: FakeEventsServer, make_client: MakeClient, clock: FakeClock
) -> None:
    server.script(Reply(status=429, retry_after="86400"))
    report = make_client(max_workers=1, max_batches=5).upload(batches(20))
    assert report.counts == {"accepted": 0, "rejected": 0, "failed": 0, "pending": 20}
    assert report.stopped is not None
    assert "max_retry_after" in report.stopped
    assert clock.sleeps == []
    assert len(server.requests) == 1


def test_always_503_follows_the_backoff_formula_then_fails(
    server: FakeEventsServer, make_client: MakeClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.5, max_backoff=3.0, deadline=60)
    server.script(*[503] * 10)
    report = make_client(max_workers=1, retry=policy).upload(batches(2))
    (outcome, _) = report.outcomes
    assert outcome.status == "failed"
    assert outcome.attempts == 5
    assert "status 503" in (outcome.reason or "")
    assert len(clock.sleeps) == 4
    for retry, waited in enumerate(clock.sleeps, start=1):
        assert 0 <= waited <= min(3.0, 0.5 * 2 ** (retry - 1))
    assert len(server.requests) == 5


def test_deadline_bounds_retries(
    server: FakeEventsServer, make_client: MakeClient, clock: FakeClock
) -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff=10, max_backoff=10, deadline=25)
    server.script(*[Reply(status=503, retry_after="10")] * 10)
    report = make_client(max_workers=1, retry=policy).upload(batches(1))
    assert report.outcomes[0].status == "failed"
    assert "deadline" in (report.outcomes[0].reason or "")
    assert sum(clock.sleeps) <= 25


def test_a_202_with_a_truncated_body_is_accepted_without_a_retry(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    # Any 2xx means mParticle took the batches, whatever became of the body.
    server.script(Reply(action="partial"))
    report = make_client(max_workers=1, timeout=0.3).upload(batches(3))
    assert report.counts["accepted"] == 3
    assert report.retries == {}
    assert len(server.requests) == 1


@pytest.mark.parametrize("action", ["reset", "close", "hang"])
def test_broken_connection_is_retried_with_same_body_and_accepted_once(
    server: FakeEventsServer, make_client: MakeClient, action: str
) -> None:
    server.script(Reply(action=action, hang_seconds=1.0))  # type: ignore[arg-type]
    # Only the hang needs a short timeout; a reset or close on a loaded machine can take
    # longer than 0.3 s to arrive and must not be read as a timeout.
    timeout = 0.3 if action == "hang" else 10.0
    report = make_client(max_workers=1, timeout=timeout).upload(batches(3))
    assert report.counts["accepted"] == 3
    cause = "timeout" if action == "hang" else "connection"
    assert report.retries == {cause: 1}
    first, second = server.requests
    assert first.body == second.body
    assert all(count == 1 for count in server.accepted_ids().values())


def test_connection_refused_then_server_comes_up(clock: FakeClock) -> None:
    # Bound but not listening: refused until start(), with no race for the port.
    late = FakeEventsServer(api_key=KEY, api_secret=SECRET)

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        late.start()

    try:
        with EventsClient(KEY, SECRET, base_url=late.url, clock=clock, sleep=sleep) as client:
            report = client.upload(batches(2))
        assert report.counts["accepted"] == 2
        assert report.retries == {"connection": 1}
        assert len(late.accepted_batches()) == 2
    finally:
        late.close()


def test_429_pauses_every_worker(server: FakeEventsServer) -> None:
    server.script(Reply(status=429, retry_after="1"), *[Reply(delay=0.05)] * 3)
    with EventsClient(KEY, SECRET, base_url=server.url, max_workers=4, max_batches=1) as client:
        report = client.upload(batches(12))
    assert report.counts["accepted"] == 12
    requests = server.requests
    limited = next(r for r in requests if r.status == 429)
    later = [r for r in requests if r.received_at > limited.received_at]
    sent_during_pause = [r for r in later if r.received_at < limited.received_at + 0.95]
    # Requests already in flight when the 429 arrived may land; no new one starts.
    assert len(sent_during_pause) <= 3
    assert all(r.status == 202 for r in requests if r is not limited)
    assert report.rate_limit_wait_seconds >= 1


def test_one_users_batches_keep_their_order_across_workers(server: FakeEventsServer) -> None:
    server.script(Reply(delay=0.2), 503)
    data = batches(60, users=3)
    with EventsClient(
        KEY, SECRET, base_url=server.url, max_workers=4, max_batches=2, sleep=lambda _: None
    ) as client:
        report = client.upload(data)
    assert report.counts["accepted"] == 60
    order: dict[str, list[int]] = {}
    for request in server.accepted_requests():
        for batch in request.batches or ():
            user = batch.user_identities.customer_id  # type: ignore[union-attr]
            name = batch.events[0].event_name  # type: ignore[index, union-attr]
            order.setdefault(user, []).append(int(name.split("-")[1]))  # type: ignore[arg-type]
    for numbers in order.values():
        assert numbers == sorted(numbers)


def test_send_sends_a_plan_byte_for_byte(server: FakeEventsServer, make_client: MakeClient) -> None:
    plan = list(
        pack(route(batches(30) + batches(5, days_old=50, prefix="h"), now=NOW), max_batches=7)
    )
    report = make_client().send(plan)
    assert report.counts["accepted"] == 35
    sent = sorted(r.body for r in server.requests)
    assert sent == sorted(item.body for item in plan if isinstance(item, Request))


def test_rerun_carries_the_same_ids(server: FakeEventsServer, make_client: MakeClient) -> None:
    client = make_client()
    first = {o.source_request_id for o in client.upload(batches(40), now=NOW).outcomes}
    second = {o.source_request_id for o in client.upload(batches(40), now=NOW).outcomes}
    assert first == second
    assert len(server.accepted_batches()) == 40
    assert len(server.accepted_batches(dedupe=False)) == 80


def test_routing_problems_are_reported_not_sent(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    fresh = Batch(events=[CustomEvent(event_name="now", custom_event_type="other")])
    report = make_client().upload([fresh], historical_only=True)
    assert report.outcomes == ()
    (problem,) = report.problems
    assert problem.stage == "routing"
    assert server.requests == []
    assert not report.ok


def test_response_body_is_read_with_a_cap(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    server.script(Reply(status=400, body=b"x" * 100_000))
    (outcome,) = make_client(max_response_bytes=1000).upload(batches(1)).outcomes
    assert outcome.response_body == "x" * 1000


def test_secret_never_logged_or_shown(
    server: FakeEventsServer, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.script(503, Reply(status=429, retry_after="1"), 400)
    client = make_client()
    report = client.upload(batches(5))
    text = caplog.text + repr(client) + repr(report) + repr(report.outcomes) + repr(server.requests)
    assert SECRET not in text
    assert "retrying" in caplog.text


def test_close_leaves_no_worker_threads(server: FakeEventsServer, make_client: MakeClient) -> None:
    before = {t.name for t in threading.enumerate()}
    client = make_client()
    client.upload(batches(300))
    client.close()
    after = {t.name for t in threading.enumerate() if t.name.startswith("mparticle-feed")}
    assert after <= before
    time.sleep(0.1)
    assert server.open_connections == 0
    with pytest.raises(ConfigurationError, match="closed"):
        client.upload(batches(1))


def test_plain_batch_user_key_order_with_identical_users_in_one_request(
    server: FakeEventsServer, make_client: MakeClient
) -> None:
    data = [
        Batch(
            events=[CustomEvent(event_name=f"e{i}", custom_event_type="other")],
            user_identities=UserIdentities(email="same@example.com"),
        )
        for i in range(5)
    ]
    report = make_client().upload(data)
    assert report.counts["accepted"] == 5
    names = [b.events[0].event_name for b in server.accepted_batches()]  # type: ignore[index, union-attr]
    assert names == [f"e{i}" for i in range(5)]


@pytest.mark.parametrize("action", ["reset", "hang"])
def test_close_closes_every_connection_after_faults(
    server: FakeEventsServer, make_client: MakeClient, action: str
) -> None:
    server.script(*[Reply(action=action, hang_seconds=0.4)] * 3)  # type: ignore[arg-type]
    client = make_client(max_workers=3, max_batches=2, timeout=0.2)
    assert client.upload(batches(8)).counts["accepted"] == 8
    client.close()
    deadline = time.monotonic() + 1.5
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.open_connections == 0
