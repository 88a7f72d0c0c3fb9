"""The token bucket on a fake clock: it never lets more through than rate and burst allow."""

from __future__ import annotations

import pickle
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import ConfigurationError, EventsClient, RateLimiter, TokenBucket
from mparticle_feed.testing import FakeClock


def test_token_bucket_is_a_rate_limiter() -> None:
    assert isinstance(TokenBucket(), RateLimiter)
    assert TokenBucket().rate == 270


def test_the_burst_goes_at_once_then_batches_are_metered_at_the_rate() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(100, burst=50, clock=clock)
    assert bucket.acquire(50) == 0
    assert bucket.acquire(10) == pytest.approx(0.1)
    assert bucket.acquire(10) == pytest.approx(0.2)  # queued behind the first reservation
    clock.advance(1.0)
    assert bucket.acquire(10) == 0  # refilled 100, owed 20: 30 left after this one


def test_a_request_larger_than_the_burst_waits_for_the_refill() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(10, burst=5, clock=clock)
    assert bucket.acquire(25) == pytest.approx(2.0)


@given(
    rate=st.floats(1, 2000),
    burst=st.floats(1, 200),
    steps=st.lists(st.tuples(st.integers(1, 100), st.floats(0, 2)), max_size=40),
)
def test_sends_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: float, steps: list[tuple[int, float]]
) -> None:
    """Whatever the arrivals, the batches released by time t are at most burst + rate * t."""
    clock = FakeClock(0.0)
    bucket = TokenBucket(rate, burst=burst, recovery=0.0, clock=clock)
    released: list[tuple[float, int]] = []
    for batches, gap in steps:
        clock.advance(gap)
        released.append((clock.now + bucket.acquire(batches), batches))
    for moment, _ in released:
        sent = sum(n for at, n in released if at <= moment)
        # A reservation beyond the burst is released whole once its tokens have refilled.
        assert sent <= burst + rate * moment + 1e-6 * sent


def test_a_429_slows_the_rate_and_holds_every_caller_for_retry_after() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(100, burst=100, recovery=0.1, clock=clock)
    bucket.rate_limited(2.0)
    assert bucket.current_rate == pytest.approx(80)
    assert bucket.acquire(1) == pytest.approx(2.0)  # the pause, shared by every caller
    clock.advance(2.5)  # recovers 10 a second
    assert bucket.current_rate == pytest.approx(100)
    assert bucket.acquire(1) == 0


def test_a_429_never_slows_below_min_rate() -> None:
    bucket = TokenBucket(100, min_rate=30, clock=FakeClock(0.0))
    for _ in range(20):
        bucket.rate_limited(None)
    assert bucket.current_rate == pytest.approx(30)


def test_a_high_percentage_used_slows_a_little_a_low_one_does_nothing() -> None:
    bucket = TokenBucket(100, clock=FakeClock(0.0))
    bucket.observe(None)
    bucket.observe(40)
    assert bucket.current_rate == 100
    bucket.observe(95)
    assert 80 < bucket.current_rate < 100


def test_threads_share_one_budget() -> None:
    clock = FakeClock(0.0)
    bucket = TokenBucket(1000, burst=10, clock=clock)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(50):
            wait = bucket.acquire(1)
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 200 batches, 10 free: the last reservation waits for 190 tokens at 1000 a second.
    assert max(waits) == pytest.approx(0.19)
    assert sorted(waits)[:10] == [0.0] * 10


@pytest.mark.parametrize(
    "options",
    [
        {"rate": 0},
        {"rate": float("inf")},
        {"rate": 10, "burst": 0.5},
        {"rate": 10, "min_rate": 20},
        {"rate": 10, "decrease": 1.0},
        {"rate": 10, "recovery": -1},
    ],
)
def test_bad_settings_are_configuration_errors(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        TokenBucket(**options)  # type: ignore[arg-type]


def test_a_bucket_pickles_as_its_settings_with_a_full_bucket() -> None:
    bucket = TokenBucket(100, burst=50, min_rate=20, decrease=0.5, high_water=80, recovery=0.1)
    bucket.acquire(50)
    bucket.rate_limited(None)  # spent and slowed here; a copy starts afresh
    copy = pickle.loads(pickle.dumps(bucket))
    settings = ("rate", "burst", "min_rate", "decrease", "high_water", "recovery")
    assert [getattr(copy, name) for name in settings] == [100, 50, 20, 0.5, 80, 0.1]
    assert copy.current_rate == 100
    assert copy.acquire(50) == 0
    assert copy.acquire(10) > 0  # metering still, with a lock of its own
    assert bucket.current_rate == pytest.approx(50, rel=0.05)


def test_a_client_paced_by_a_bucket_object_pickles() -> None:
    with EventsClient(
        "key", "secret", base_url="http://127.0.0.1:9", rate_limit=TokenBucket(40, burst=5)
    ) as client:
        copy = pickle.loads(pickle.dumps(client))
    with copy:
        assert isinstance(copy.rate_limiter, TokenBucket)
        assert copy.rate_limiter is not client.rate_limiter
        assert (copy.rate_limiter.rate, copy.rate_limiter.burst) == (40, 5)
