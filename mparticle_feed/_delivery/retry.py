"""The retry policy: which failures are retried, and how long to wait before each retry.

The wait before retry ``n`` (1 for the first retry) is "full jitter" exponential backoff::

    wait(n) = uniform(0, min(max_backoff, initial_backoff * 2 ** (n - 1)))

A ``Retry-After`` header (seconds, or an HTTP date) on a transient failure is a floor: the
wait is ``max(wait(n), retry_after)``. A transient failure is retried until
``max_attempts`` attempts were made or the next attempt would start after ``deadline``
seconds from the first one.

A 429 is retried without limit on attempts: with ``Retry-After`` the client waits that long
plus a little jitter (up to 10 %, at most 1 s), without compounding, so a run paced at the
limit goes on; without it (or with 0), ``wait(n)`` of the n-th 429 in a row. The run stops
(its batches stay pending) only when a single ``Retry-After`` exceeds ``max_retry_after`` or
when no batch was accepted for ``max_stall`` seconds.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Literal

import attrs

from .._errors import ConfigurationError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "Verdict", "classify", "parse_retry_after"]

#: Statuses worth sending the same body again for: timeouts, rate limits and every 5xx
#: (mParticle documents 5xx as "server error; retry").
RETRYABLE_STATUSES = frozenset({408, 429, *range(500, 600)})

#: 4xx answers on a request of several batches that are worth bisecting: one bad batch
#: (or the size) may be the cause, and the other batches deserve delivery.
BISECT_STATUSES = frozenset({400, 413, 422})

#: What an attempt's answer means for its request.
Verdict = Literal[
    "accepted", "refused credentials", "untrusted server", "retry", "bisect", "rejected"
]


def classify(status: int | None, *, certificate_problem: bool, batch_count: int) -> Verdict:
    """What an answer (``status`` None: no response) means for a request of ``batch_count``."""
    if status is None:
        return "untrusted server" if certificate_problem else "retry"
    if 200 <= status < 300:
        return "accepted"
    if status in (401, 403):
        return "refused credentials"
    if status in RETRYABLE_STATUSES:
        return "retry"
    if status in BISECT_STATUSES and batch_count > 1:
        return "bisect"
    return "rejected"


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
    #: A 429 asking for a longer ``Retry-After`` than this stops the run (batches pending).
    max_retry_after: float = attrs.field(default=900.0, validator=_at_least(0))
    #: The run stops (batches pending) when no batch was accepted for this long.
    max_stall: float = attrs.field(default=900.0, validator=_positive)

    def backoff_bound(self, retry: int) -> float:
        """The upper bound of the jittered wait before retry number ``retry`` (1-based)."""
        # Avoid overflow for absurd retry counts: the cap wins long before 2**64.
        exponent = min(retry - 1, 64)
        return min(self.max_backoff, self.initial_backoff * 2.0**exponent)

    def backoff(self, retry: int, random: Callable[[], float]) -> float:
        """The jittered wait before retry number ``retry``: uniform in [0, bound]."""
        return random() * self.backoff_bound(retry)

    def rate_limit_wait(
        self, retry_after: float | None, retry: int, random: Callable[[], float]
    ) -> float:
        """The wait after a 429: ``Retry-After`` plus jitter, else the backoff of ``retry``."""
        if retry_after is None or retry_after <= 0:
            # "Now" would let 429s repeat without a pause: back off as without the header.
            return self.backoff(retry, random)
        # Jitter spreads the clients that got the same Retry-After; it never compounds.
        return retry_after + random() * min(1.0, 0.1 * retry_after)


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
