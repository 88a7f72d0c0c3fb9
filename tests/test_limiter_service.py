"""The driver-side limiter service: one rate budget shared by every task over loopback."""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from mparticle_feed import (
    ConfigurationError,
)
from mparticle_feed.pipeline import (
    LimiterService,
    RemoteLimiter,
)


class SharedPause:
    """A minimal limiter: a 429 holds every caller for Retry-After; counts every call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.blocked_until = 0.0
        self.calls: Counter[str] = Counter()
        self.batches = 0
        self.observed: list[float | None] = []

    def acquire(self, batches: int) -> float:
        with self.lock:
            self.calls["acquire"] += 1
            self.batches += batches
            return max(0.0, self.blocked_until - time.monotonic())

    def rate_limited(self, retry_after: float | None) -> None:
        with self.lock:
            self.calls["rate_limited"] += 1
            if retry_after is not None:
                self.blocked_until = max(self.blocked_until, time.monotonic() + retry_after)

    def observe(self, percentage_used: float | None) -> None:
        with self.lock:
            self.calls["observe"] += 1
            self.observed.append(percentage_used)


@pytest.fixture
def shared() -> SharedPause:
    return SharedPause()


@pytest.fixture
def service(shared: SharedPause) -> Iterator[LimiterService]:
    with LimiterService(shared) as running:
        yield running


def test_every_call_reaches_the_one_shared_limiter(
    service: LimiterService, shared: SharedPause
) -> None:
    first = service.handle(SharedPause)
    second = pickle.loads(pickle.dumps(service.handle(SharedPause)))
    assert first.acquire(40) == 0.0
    assert second.acquire(60) == 0.0
    first.observe(12.5)
    second.observe(None)
    assert shared.batches == 100
    assert shared.observed == [12.5, None]
    assert first._fallback is None
    assert second._fallback is None
    assert service.calls == 4
    assert not first.fell_back
    first.close()
    second.close()


def test_a_429_seen_by_one_task_pauses_every_task(
    service: LimiterService, shared: SharedPause
) -> None:
    one, other = service.handle(SharedPause), service.handle(SharedPause)
    one.rate_limited(2.0)
    wait = other.acquire(1)
    assert 1.0 < wait <= 2.0
    assert shared.calls["rate_limited"] == 1
    one.close()
    other.close()


def test_concurrent_threads_share_the_budget(service: LimiterService, shared: SharedPause) -> None:
    handle = service.handle(SharedPause)

    def work() -> None:
        for _ in range(50):
            handle.acquire(2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shared.batches == 800
    assert not handle.fell_back
    handle.close()


def test_a_call_without_the_runs_token_is_refused_and_never_served(
    service: LimiterService, shared: SharedPause, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = service.address
    stranger = RemoteLimiter(host, port, "not-the-token", fallback=SharedPause)
    with caplog.at_level(logging.WARNING):
        assert stranger.acquire(5) == 0.0
    assert service.refused == 1
    assert shared.calls == Counter()
    assert isinstance(stranger._fallback, SharedPause)
    assert stranger._fallback.batches == 5
    assert stranger.fell_back
    # Garbage on the socket is refused the same way.
    with socket.create_connection((host, port), timeout=2) as raw:
        raw.sendall(b"not json\n")
        assert raw.recv(10) == b""
    assert service.refused == 2
    assert all("not-the-token" not in record.getMessage() for record in caplog.records)


def test_an_unreachable_service_leaves_the_task_on_its_fallback(
    shared: SharedPause, caplog: pytest.LogCaptureFixture
) -> None:
    service = LimiterService(shared).start()
    handle = service.handle(SharedPause, timeout=1.0)
    assert handle.acquire(3) == 0.0
    service.close()
    with caplog.at_level(logging.WARNING, logger="mparticle_feed"):
        handle.acquire(4)
        handle.rate_limited(1.0)
        handle.observe(50.0)
    assert handle.fell_back
    assert isinstance(handle._fallback, SharedPause)
    assert handle._fallback.calls == Counter({"acquire": 1, "rate_limited": 1, "observe": 1})
    assert shared.batches == 3
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    handle.close()


def test_the_token_stays_out_of_reprs(service: LimiterService) -> None:
    handle = service.handle(SharedPause)
    assert handle._token not in repr(handle)
    assert handle._token not in repr(service)
    assert "RemoteLimiter(address='127.0.0.1:" in repr(handle)
    with pytest.raises(ConfigurationError, match="token"):
        RemoteLimiter("127.0.0.1", 1, "", fallback=SharedPause)
