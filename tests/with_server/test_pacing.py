"""Pacing against a rate-limited FakeEventsServer, and 429 handling over long runs."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from mparticle_feed import ConfigurationError, EventsClient, RetryPolicy, TokenBucket
from mparticle_feed.testing import FakeClock, FakeEventsServer, Reply

from .conftest import KEY, SECRET, batches

MakeClient = Callable[..., EventsClient]


def test_a_paced_client_stays_under_the_servers_limit_and_delivers_once() -> None:
    rate = 1000
    with (
        FakeEventsServer(api_key=KEY, api_secret=SECRET, rate_limit=rate) as server,
        EventsClient(
            KEY, SECRET, base_url=server.url, max_workers=4, max_batches=20, rate_limit=rate
        ) as client,
    ):
        report = client.upload(batches(800))
    limited = [r for r in server.requests if r.status == 429]
    assert len(limited) <= len(server.requests) // 100
    assert report.counts["accepted"] == 800
    assert all(count == 1 for count in server.accepted_ids().values())
    assert report.events_per_batch == 1.0
    assert "1.0 events a batch" in report._repr_html_()
    # The burst (a quarter second's worth, 250) goes at once; the other 550 take 0.55 s.
    assert report.elapsed_seconds >= 0.5


def test_clients_sharing_one_limiter_share_the_budget() -> None:
    rate = 1000
    bucket = TokenBucket(rate, burst=50)
    reports = []
    with FakeEventsServer(api_key=KEY, api_secret=SECRET, rate_limit=rate) as server:

        def run(prefix: str) -> None:
            with EventsClient(
                KEY, SECRET, base_url=server.url, max_batches=10, rate_limit=bucket
            ) as client:
                reports.append(client.upload(batches(300, prefix=prefix)))

        threads = [threading.Thread(target=run, args=(p,)) for p in "ab"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [r.counts["accepted"] for r in reports] == [300, 300]
    assert not [r for r in server.requests if r.status == 429]
    # 600 batches, 50 free, 1,000 a second: at least 0.55 s for the later of the two.
    assert max(r.elapsed_seconds for r in reports) >= 0.5


def test_a_429_slows_the_clients_limiter(server: FakeEventsServer, clock: FakeClock) -> None:
    bucket = TokenBucket(200, clock=clock)
    server.script(Reply(status=429, retry_after="1"))
    with EventsClient(
        KEY, SECRET, base_url=server.url, rate_limit=bucket, clock=clock, sleep=clock.sleep
    ) as client:
        report = client.upload(batches(3))
    assert report.counts["accepted"] == 3
    assert bucket.current_rate < 200


def test_many_429s_with_retry_after_do_not_stop_a_run_that_makes_progress(
    server: FakeEventsServer, make_client: MakeClient, clock: FakeClock
) -> None:
    """20 waits of 100 s (well past the old 900 s budget): every batch is accepted."""
    server.script(
        *[reply for _ in range(20) for reply in (Reply(status=429, retry_after="100"), 202)]
    )
    report = make_client(max_workers=1, max_batches=1).upload(batches(20))
    assert report.counts["accepted"] == 20
    assert report.stopped is None
    assert report.retries == {"status 429": 20}
    assert report.rate_limit_wait_seconds >= 2000
    # Retry-After plus jitter each time, never a doubled backoff.
    assert all(100 <= wait <= 101 for wait in clock.sleeps)


def test_no_acceptance_for_max_stall_stops_the_run_pending(
    server: FakeEventsServer, make_client: MakeClient, clock: FakeClock
) -> None:
    server.script(*[Reply(status=429, retry_after="60")] * 30)
    policy = RetryPolicy(max_stall=300)
    report = make_client(max_workers=1, max_batches=2, retry=policy).upload(batches(6))
    assert report.counts == {"accepted": 0, "rejected": 0, "failed": 0, "pending": 6}
    assert report.stopped is not None
    assert "max_stall" in report.stopped
    assert sum(clock.sleeps) <= 300


@pytest.mark.parametrize("bad", ["fast", True, [270]])
def test_rate_limit_must_be_a_number_a_limiter_or_none(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="rate_limit"):
        EventsClient(KEY, SECRET, rate_limit=bad)  # type: ignore[arg-type]
