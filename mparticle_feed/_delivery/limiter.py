"""Pacing (delivery stage): a rate limiter meters batches before each request is sent.

mParticle limits an account to a number of batches a second (270 by default) and answers
429 beyond it. A client that only reacts to 429s spends most of its time paused; metering
the batches to the limit keeps it just under. :class:`RateLimiter` is the protocol the
client uses, so that several clients (threads, processes, a cluster's executors) can share
one budget; :class:`TokenBucket` is the in-process implementation.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigurationError

__all__ = ["DEFAULT_RATE", "RateLimiter", "TokenBucket"]

#: mParticle's documented default: "Variable but defaults to 270 batches per second".
DEFAULT_RATE = 270.0


@runtime_checkable
class RateLimiter(Protocol):
    """What an :class:`~mparticle_feed.EventsClient` asks of a rate limiter.

    Every method is called from the client's worker threads, concurrently: an
    implementation must be thread-safe and must not block for long inside ``observe`` and
    ``rate_limited``.
    """

    def acquire(self, batches: int) -> float:
        """Reserve ``batches`` batches; return the seconds to wait before sending them.

        The reservation is made now: the caller sleeps the returned time, then sends
        without calling again. A limiter may instead block itself and return 0.
        """
        ...

    def rate_limited(self, retry_after: float | None) -> None:
        """mParticle answered 429; ``retry_after`` is its ``Retry-After`` in seconds, if any."""
        ...

    def observe(self, percentage_used: float | None) -> None:
        """A request was accepted; ``percentage_used`` is ``X-mp-rate-limit-percentage-used``."""
        ...


class TokenBucket:
    """A thread-safe token bucket in batches per second, adapting to mParticle's answers.

    ``rate`` is the ceiling (batches a second) and ``burst`` the batches that may go at
    once after an idle spell (default: a quarter second's worth, at least 100).
    Reservations may overdraw the bucket: a request of more batches than ``burst`` waits
    until the bucket has refilled for it, and later requests queue behind it, so the
    long-run rate never exceeds ``rate``.

    The bucket adapts: a 429 multiplies the current rate by ``decrease`` (and makes every
    caller wait out its ``Retry-After``); an accepted request whose
    ``X-mp-rate-limit-percentage-used`` is at least ``high_water`` lowers it by a smaller
    step. The rate climbs back towards ``rate`` by ``recovery * rate`` a second, never
    below ``min_rate``.

    ``clock`` can be replaced in tests.
    """

    def __init__(
        self,
        rate: float = DEFAULT_RATE,
        *,
        burst: float | None = None,
        min_rate: float | None = None,
        decrease: float = 0.8,
        high_water: float = 90.0,
        recovery: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate) and rate > 0):
            msg = f"rate must be a positive number of batches a second, got {rate!r}"
            raise ConfigurationError(msg)
        # A quarter second's worth (at least one full request of 100 batches): the rest of
        # the account's per-second burst absorbs requests that the network delays and then
        # delivers together (measured in benchmarks/ceiling.py).
        burst = max(rate / 4, 100.0) if burst is None else burst
        if not (math.isfinite(burst) and burst >= 1):
            msg = f"burst must be at least 1 batch, got {burst!r}"
            raise ConfigurationError(msg)
        min_rate = rate / 10 if min_rate is None else min_rate
        if not 0 < min_rate <= rate:
            msg = f"min_rate must be in (0, rate], got {min_rate!r}"
            raise ConfigurationError(msg)
        if not 0 < decrease < 1:
            msg = f"decrease must be between 0 and 1, got {decrease!r}"
            raise ConfigurationError(msg)
        if not recovery >= 0:
            msg = f"recovery must not be negative, got {recovery!r}"
            raise ConfigurationError(msg)
        self.rate = float(rate)
        self.burst = float(burst)
        self.min_rate = float(min_rate)
        self.decrease = decrease
        self.high_water = high_water
        self.recovery = recovery
        self._clock = clock
        self._lock = threading.Lock()
        self._current = self.rate
        self._tokens = self.burst
        self._updated = clock()
        self._blocked_until = -math.inf

    def __reduce__(self) -> tuple[Any, ...]:
        # A lock does not pickle: a copy (a Spark or Dask task's client) gets its settings,
        # a fresh lock and a full bucket, metering its own share from then on.
        settings = {
            "rate": self.rate,
            "burst": self.burst,
            "min_rate": self.min_rate,
            "decrease": self.decrease,
            "high_water": self.high_water,
            "recovery": self.recovery,
            "clock": self._clock,
        }
        return (_bucket_from_settings, (settings,))

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate={self.rate:g}, burst={self.burst:g}, "
            f"current_rate={self.current_rate:.1f})"
        )

    @property
    def current_rate(self) -> float:
        """The rate the bucket meters at now (``rate`` unless mParticle pushed back)."""
        with self._lock:
            self._refill(self._clock())
            return self._current

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        if elapsed <= 0:
            return
        # Tokens at the rate in force during the interval, then the rate recovers.
        self._tokens = min(self.burst, self._tokens + elapsed * self._current)
        self._current = min(self.rate, self._current + self.rate * self.recovery * elapsed)
        self._updated = now

    def acquire(self, batches: int) -> float:
        """Reserve ``batches``; the seconds the caller must wait before sending them."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._tokens -= batches
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self._current
            return max(wait, self._blocked_until - now)

    def rate_limited(self, retry_after: float | None) -> None:
        """Slow down; hold every caller for ``retry_after`` seconds when given."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            self._current = max(self.min_rate, self._current * self.decrease)
            # What was reserved beyond the bucket was too much: start again from empty.
            self._tokens = min(self._tokens, 0.0)
            if retry_after is not None and math.isfinite(retry_after):
                self._blocked_until = max(self._blocked_until, now + retry_after)

    def observe(self, percentage_used: float | None) -> None:
        """Slow down a little when mParticle reports the budget nearly used."""
        if percentage_used is None or percentage_used < self.high_water:
            return
        with self._lock:
            self._refill(self._clock())
            step = 1 - (1 - self.decrease) / 4
            self._current = max(self.min_rate, self._current * step)


def _bucket_from_settings(settings: dict[str, Any]) -> TokenBucket:
    return TokenBucket(**settings)
