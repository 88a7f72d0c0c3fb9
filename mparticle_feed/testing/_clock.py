"""A fake clock for the library's time hooks (test kit, outside the pipeline's stages)."""

from __future__ import annotations

import threading

from .._errors import ConfigurationError

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that moves only when something sleeps on it or a test advances it.

    It fits every time hook of the library: pass the clock itself (or :meth:`monotonic`)
    where a ``clock`` is asked for (``EventsClient(clock=...)``, ``TokenBucket(clock=...)``,
    ``FakeEventsServer(clock=...)``), :meth:`sleep` where a ``sleep`` is, and :meth:`time`
    where wall-clock seconds are (``StateStore(clock=...)``). Waits then take no real time,
    and :attr:`sleeps` records each one, so a test can check backoff and ``Retry-After``::

        clock = FakeClock()
        client = EventsClient(key, secret, clock=clock, sleep=clock.sleep)

    It is thread-safe: an upload's workers may sleep on it at once.
    """

    def __init__(self, start: float = 1_000.0, *, wall: float = 1_790_000_000.0) -> None:
        """``start`` is the monotonic reading at first; ``wall`` the Unix time at that moment."""
        self._now = float(start)
        self._wall_offset = wall - start
        self._lock = threading.Lock()
        self._sleeps: list[float] = []

    def __call__(self) -> float:
        """The monotonic reading, in seconds (the clock is its own ``clock=`` callable)."""
        return self.monotonic()

    def __repr__(self) -> str:
        return f"FakeClock(now={self.now!r}, sleeps={len(self._sleeps)})"

    @property
    def now(self) -> float:
        """The monotonic reading, in seconds."""
        return self.monotonic()

    def monotonic(self) -> float:
        """The monotonic reading, in seconds (for ``time.monotonic`` hooks)."""
        with self._lock:
            return self._now

    def time(self) -> float:
        """Unix time, moving with the clock (for ``time.time`` hooks)."""
        with self._lock:
            return self._now + self._wall_offset

    def sleep(self, seconds: float) -> None:
        """Record the wait and move the clock by it at once (a negative wait moves nothing)."""
        with self._lock:
            self._sleeps.append(seconds)
            self._now += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        """Move the clock without recording a sleep (time passing while nothing waits)."""
        if seconds < 0:
            msg = f"a clock cannot go back: advance({seconds})"
            raise ConfigurationError(msg)
        with self._lock:
            self._now += seconds

    @property
    def sleeps(self) -> list[float]:
        """Every wait asked of :meth:`sleep`, in order (a copy)."""
        with self._lock:
            return list(self._sleeps)

    @property
    def slept(self) -> float:
        """The sum of :attr:`sleeps`."""
        with self._lock:
            return sum(self._sleeps)
