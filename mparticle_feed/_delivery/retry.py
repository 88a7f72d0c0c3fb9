"""The retry policy: which failures are retried, and how long to wait before each retry.

The wait before retry ``n`` (1 for the first retry) is "full jitter" exponential backoff::

    wait(n) = uniform(0, min(max_backoff, initial_backoff * 2 ** (n - 1)))

A ``Retry-After`` header (seconds, or an HTTP date) is a floor: the wait is
``max(wait(n), retry_after)``. A transient failure is retried until ``max_attempts``
attempts were made or the next attempt would start after ``deadline`` seconds from the
first one. A 429 is retried for as long as the run's ``rate_limit_budget`` lasts; a
``Retry-After`` beyond what is left of it stops the run (its batches stay pending).
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs

from .._errors import ConfigurationError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

#: Statuses worth sending the same body again for: timeouts, rate limits and every 5xx
#: (mParticle documents 5xx as "server error; retry").
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        msg = f"{attribute.name} must be positive, got {value!r}"
        raise ConfigurationError(msg)


def _at_least(minimum: float) -> Callable[[object, attrs.Attribute[Any], float], None]:
    def check(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if not value >= minimum:
            msg = f"{attribute.name} must be at least {minimum}, got {value!r}"
            raise ConfigurationError(msg)

    return check


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How an :class:`EventsClient` retries; every duration is in seconds."""

    #: Attempts per request for transient failures (the first attempt counts).
    max_attempts: int = attrs.field(default=8, validator=_at_least(1))
    initial_backoff: float = attrs.field(default=0.5, validator=_positive)
    max_backoff: float = attrs.field(default=30.0, validator=_positive)
    #: No retry starts later than this after the request's first attempt.
    deadline: float = attrs.field(default=300.0, validator=_positive)
    #: The total the run may spend paused on 429s before it stops.
    rate_limit_budget: float = attrs.field(default=900.0, validator=_at_least(0))

    def backoff_bound(self, retry: int) -> float:
        """The upper bound of the jittered wait before retry number ``retry`` (1-based)."""
        # Avoid overflow for absurd retry counts: the cap wins long before 2**64.
        exponent = min(retry - 1, 64)
        return min(self.max_backoff, self.initial_backoff * 2.0**exponent)

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """The jittered wait before retry number ``retry``: uniform in [0, bound]."""
        return random() * self.backoff_bound(retry)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value; None when absent or unreadable.

    Accepts a non-negative number of seconds or an HTTP date. A negative number or a date in
    the past means "no wait" (0.0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isnan(seconds):
            return None
        if math.isinf(seconds):
            return math.inf if seconds > 0 else 0.0
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    reference = now if now is not None else datetime.now(timezone.utc)
    return max((when - reference).total_seconds(), 0.0)
