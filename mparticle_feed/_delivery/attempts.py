"""The attempt loop: one request's body sent until its batches settle (delivery stage).

A worker thread of :class:`~mparticle_feed.EventsClient` hands each request to
:meth:`Attempts.work`. Each attempt first waits out a 429 pause and its turn at the rate
limiter, then the answer is classified (:func:`.retry.classify`): settled, split in two
(bisect), paused for every worker (429), backed off (transient), or given up.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence

import attrs

from .connection import Answer
from .limiter import RateLimiter
from .packing import PackedBatch, Request, request_body
from .report import BatchOutcome
from .retry import RetryPolicy, classify, parse_retry_after
from .routing import Endpoint
from .status import OutcomeStatus

__all__ = ["Attempts", "Result", "Run", "outcomes", "pending"]

logger = logging.getLogger(__name__)

_RATE_LIMIT_PREFIX = "x-mp-rate-limit-"
_PERCENTAGE_USED = "x-mp-rate-limit-percentage-used"


@attrs.define(eq=False)
class Run:
    """State shared by the workers of one upload."""

    policy: RetryPolicy
    clock: Callable[[], float]
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    stop: threading.Event = attrs.field(factory=threading.Event)
    stop_reason: str | None = None
    fatal: tuple[str, int | None] | None = None
    pause_until: float = 0.0
    rate_limit_spent: float = 0.0
    #: When a batch was last accepted (the run's start until then), for ``max_stall``.
    last_accepted: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.last_accepted = self.clock()

    def halt(self, reason: str, *, fatal: tuple[str, int | None] | None = None) -> None:
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            if fatal is not None and self.fatal is None:
                self.fatal = fatal
        self.stop.set()

    def pause(self, seconds: float) -> None:
        """Pause every worker for ``seconds`` (a pause already longer stands)."""
        with self.lock:
            now = self.clock()
            until = now + seconds
            extension = until - max(self.pause_until, now)
            if extension > 0:
                self.pause_until = until
                self.rate_limit_spent += extension

    def accepted(self) -> None:
        with self.lock:
            self.last_accepted = self.clock()


@attrs.define
class Result:
    """What one worker did with one request."""

    outcomes: list[BatchOutcome] = attrs.field(factory=list)
    retries: Counter[str] = attrs.field(factory=Counter)
    headers: dict[str, list[str]] = attrs.field(factory=dict)
    requests_sent: int = 0


@attrs.frozen
class _Final:
    """How one body's attempts ended: its batches' status, or ``bisect`` (split and resend)."""

    status: OutcomeStatus
    attempts: int
    http_status: int | None = None
    body: str | None = None
    reason: str | None = None
    #: mParticle refused the request as a whole: send each half on its own.
    bisect: bool = False


@attrs.frozen(kw_only=True)
class Attempts:
    """One upload's attempt loop, shared by its workers (it holds no per-request state)."""

    attempt: Callable[[Endpoint, bytes], Answer]
    policy: RetryPolicy
    limiter: RateLimiter | None
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    random: Callable[[], float]

    def work(
        self, request: Request, run: Run, token: int, done: queue.SimpleQueue[tuple[int, Result]]
    ) -> None:
        """Settle every batch of ``request``, then put the result on ``done``."""
        result = Result()
        try:
            self._deliver(request.endpoint, request.batches, request.body, run, result)
        except Exception as exc:  # a bug must not lose batches: they end failed, not dropped
            logger.exception("unexpected error while sending a request")
            settled = {outcome.source_request_id for outcome in result.outcomes}
            unsettled = [b for b in request.batches if b.source_request_id not in settled]
            reason = f"unexpected error: {type(exc).__name__}"
            final = _Final(OutcomeStatus.FAILED, 0, reason=reason)
            result.outcomes.extend(outcomes(request.endpoint, unsettled, final))
        finally:
            done.put((token, result))

    def _deliver(
        self,
        endpoint: Endpoint,
        batches: Sequence[PackedBatch],
        body: bytes,
        run: Run,
        result: Result,
    ) -> None:
        final = self._attempts(endpoint, body, len(batches), run, result)
        if not final.bisect:
            result.outcomes.extend(outcomes(endpoint, batches, final))
            return
        middle = len(batches) // 2
        logger.debug(
            "bisecting a request of %d batches after status %s", len(batches), final.http_status
        )
        for half in (batches[:middle], batches[middle:]):
            self._deliver(endpoint, half, request_body(half), run, result)

    def _attempts(
        self, endpoint: Endpoint, body: bytes, batch_count: int, run: Run, result: Result
    ) -> _Final:
        """Send one body until it settles; the same bytes on every attempt."""
        first_attempt = self.clock()
        attempts = transient_retries = rate_limit_retries = 0
        while True:
            self._wait_turn(run, batch_count)
            if run.stop.is_set():
                return pending(run, attempts)
            attempts += 1
            result.requests_sent += 1
            answer = self.attempt(endpoint, body)
            self._learn(answer, run, result)
            final = _settled(answer, attempts, batch_count, run)
            if final is None and answer.status == 429:
                rate_limit_retries += 1
                final = self._after_rate_limit(answer, attempts, rate_limit_retries, run)
            elif final is None:
                transient_retries += 1
                final = self._after_transient(
                    answer, attempts, transient_retries, self.clock() - first_attempt
                )
            if final is not None:
                return final
            result.retries[answer.cause] += 1
            logger.debug("retrying %d batches after %s", batch_count, answer.detail)

    def _learn(self, answer: Answer, run: Run, result: Result) -> None:
        """Record the rate-limit headers; tell the limiter how the account is doing."""
        percentage: float | None = None
        for name, value in answer.headers.items():
            lowered = name.lower()
            if lowered.startswith(_RATE_LIMIT_PREFIX):
                result.headers.setdefault(lowered, []).append(value)
                if lowered == _PERCENTAGE_USED:
                    percentage = _number(value)
        status = answer.status
        if status is not None and 200 <= status < 300:
            run.accepted()
            if self.limiter is not None:
                self.limiter.observe(percentage)

    def _after_rate_limit(
        self, answer: Answer, attempts: int, retry: int, run: Run
    ) -> _Final | None:
        """Pause every worker as asked, or stop the run when the wait is too long."""
        policy = self.policy
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if self.limiter is not None:
            self.limiter.rate_limited(retry_after)
        wait = policy.rate_limit_wait(retry_after, retry, self.random)
        stalled = self.clock() + wait - run.last_accepted
        if retry_after is not None and retry_after > policy.max_retry_after:
            reason = (
                f"mParticle asked for a {retry_after:.0f} s wait (HTTP 429), beyond "
                f"max_retry_after ({policy.max_retry_after:g} s)"
            )
        elif stalled > policy.max_stall:
            reason = (
                f"no batch was accepted for {policy.max_stall:g} s (max_stall) while "
                "mParticle answered 429"
            )
        else:
            run.pause(wait)
            logger.debug("HTTP 429: all workers pause %.3f s (attempt %d)", wait, attempts)
            return None
        logger.debug("stopping the run: %s", reason)
        run.halt(reason)
        return _Final(
            OutcomeStatus.PENDING, attempts, http_status=429, body=answer.text, reason=reason
        )

    def _after_transient(
        self, answer: Answer, attempts: int, retry: int, elapsed: float
    ) -> _Final | None:
        """Back off before the next attempt, or give up on the request."""
        policy = self.policy
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        wait = max(policy.backoff(retry, self.random), retry_after or 0.0)
        if attempts >= policy.max_attempts or elapsed + wait > policy.deadline:
            limit = (
                f"{attempts} attempts"
                if attempts >= policy.max_attempts
                else f"the {policy.deadline:g} s deadline"
            )
            return _Final(
                OutcomeStatus.FAILED,
                attempts,
                http_status=answer.status,
                body=answer.text,
                reason=f"gave up after {limit}; last cause: {answer.detail}",
            )
        logger.debug("%s: waiting %.3f s (attempt %d)", answer.detail, wait, attempts)
        self.sleep(wait)
        return None

    def _wait_turn(self, run: Run, batch_count: int) -> None:
        """Wait out a 429 pause, then the limiter's turn for ``batch_count`` batches."""
        self._wait_for_pause(run)
        if self.limiter is None or run.stop.is_set():
            return
        wait = self.limiter.acquire(batch_count)
        if wait > 0:
            self.sleep(wait)
            self._wait_for_pause(run)

    def _wait_for_pause(self, run: Run) -> None:
        while not run.stop.is_set():
            remaining = run.pause_until - self.clock()
            if remaining <= 0:
                return
            self.sleep(remaining)


def _settled(answer: Answer, attempts: int, batch_count: int, run: Run) -> _Final | None:
    """The final outcome an answer decides, or None when it is worth another attempt."""
    status, text = answer.status, answer.text
    verdict = classify(
        status, certificate_problem=answer.certificate_problem, batch_count=batch_count
    )
    if verdict == "retry":
        return None
    if verdict == "accepted":
        return _Final(OutcomeStatus.ACCEPTED, attempts, http_status=status)
    if verdict == "bisect":
        # Should a half come back with no outcome, its batches count as failed.
        return _Final(OutcomeStatus.FAILED, attempts, http_status=status, body=text, bisect=True)
    if verdict == "rejected":
        reason = f"mParticle answered HTTP {status}"
        return _Final(
            OutcomeStatus.REJECTED, attempts, http_status=status, body=text, reason=reason
        )
    if verdict == "untrusted server":
        reason = "the server's TLS certificate could not be verified"
    else:
        reason = (
            f"mParticle refused the credentials (HTTP {status}); check the API key "
            "and secret and the pod"
        )
    run.halt(reason, fatal=(reason, status))
    return _Final(OutcomeStatus.FAILED, attempts, http_status=status, body=text, reason=reason)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def pending(run: Run, attempts: int = 0) -> _Final:
    """The final state of a body left unsent because the run stopped."""
    return _Final(OutcomeStatus.PENDING, attempts, reason=run.stop_reason or "the run stopped")


def outcomes(
    endpoint: Endpoint, batches: Iterable[PackedBatch], final: _Final
) -> Iterator[BatchOutcome]:
    """Each batch's outcome once its body settled as ``final``."""
    status = final.status
    for batch in batches:
        yield BatchOutcome(
            status=status,
            endpoint=endpoint,
            source_request_id=batch.source_request_id,
            rows=batch.sourced.rows,
            http_status=final.http_status,
            response_body=None if status is OutcomeStatus.ACCEPTED else final.body,
            reason=final.reason,
            attempts=final.attempts,
            sourced=batch.sourced,
        )
