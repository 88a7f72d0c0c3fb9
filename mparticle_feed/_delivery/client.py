"""EventsClient: delivers packed requests to the Events API without losing or doubling data.

One urllib3 ``PoolManager`` per client; a bounded pool of worker threads per upload. The
calling thread reads the input lazily, hands requests to the workers, and calls
``on_outcome`` itself, so callbacks never run concurrently. A request is not handed out
while an earlier request holding a batch of the same user is still unsettled, so one user's
batches arrive in order.
"""

from __future__ import annotations

import logging
import queue
import random as _random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._errors import ConfigurationError, UploadConfigurationError
from .._mapping.provenance import RowProblem, SourcedBatch
from .._wire.models import Batch
from .attempts import Attempts, Result, Run, outcomes, pending
from .connection import PODS, Connection, base_url_for, proxy_for, redact_proxy
from .limiter import DEFAULT_RATE, RateLimiter, TokenBucket
from .packing import (
    MAX_BATCH_BYTES,
    MAX_BATCHES_PER_REQUEST,
    MAX_REQUEST_BYTES,
    Request,
    check_packing_limits,
    pack,
)
from .report import BatchOutcome, UploadReport
from .retry import RetryPolicy
from .routing import (
    DEFAULT_HISTORICAL_AFTER,
    DEFAULT_HISTORICAL_MIN_AGE,
    check_routing,
    route,
    utc_now,
)

# proxy_for stays importable here for the proxy tests.
_proxy_for = proxy_for

__all__ = ["PODS", "EventsClient", "UploadConfigurationError"]

logger = logging.getLogger(__name__)

#: Distinct values kept per rate-limit header.
_MAX_HEADER_VALUES = 20


@attrs.frozen(kw_only=True)
class _Settings:
    """An EventsClient's constructor arguments; the credentials stay out of the repr."""

    api_key: str = attrs.field(repr=False)
    api_secret: str = attrs.field(repr=False)
    options: dict[str, Any] = attrs.field(repr=False)

    @classmethod
    def capture(cls, arguments: dict[str, Any]) -> _Settings:
        """From ``EventsClient.__init__``'s ``locals()``; test seams only when replaced."""
        options = {name: value for name, value in arguments.items() if name != "self"}
        for name, default in _DEFAULT_SEAMS.items():
            if options.get(name) is default:
                del options[name]
        return cls(
            api_key=options.pop("api_key"), api_secret=options.pop("api_secret"), options=options
        )


_DEFAULT_SEAMS: dict[str, Any] = {
    "clock": time.monotonic,
    "sleep": time.sleep,
    "random": _random.random,
}


def _client_from_settings(settings: _Settings) -> EventsClient:
    return EventsClient(settings.api_key, settings.api_secret, **settings.options)


class EventsClient:
    """A client for mParticle's bulk Events API.

    ``api_key`` and ``api_secret`` are an input's (or a Custom Feed's) credentials, sent with
    HTTP Basic auth over verified TLS. The pod comes from ``pod``, from ``base_url``, or from
    the key's prefix (``us1-``, ``us2-``, ``eu1-``, ``au1-``; US1 otherwise). Plain ``http://``
    is accepted only for loopback hosts, for tests against
    :class:`~mparticle_feed.testing.FakeEventsServer`.

    ``timeout`` is the read timeout of one attempt and ``connect_timeout`` its connect
    timeout. ``retry`` sets the retry policy. ``clock``, ``sleep`` and ``random`` can be
    replaced in tests so that backoff takes no real time. ``max_workers`` requests are in
    flight at once. ``ca_certs`` names a CA bundle to verify the server with instead of the
    system's. At most ``max_response_bytes`` of a response body are read (what a rejected
    row's report holds).

    ``max_batches``, ``max_request_bytes`` and ``max_batch_bytes`` are packing's limits,
    mParticle's by default (100 batches and 256,000 bytes a request, 128,000 bytes a
    batch): lower them freely; mParticle refuses requests over its own.
    ``historical_after`` and ``historical_min_age`` are routing's thresholds (see
    :func:`~mparticle_feed.pipeline.route`).

    ``proxy`` names a forward proxy (``http://user:password@proxy.corp:3128``); without it,
    ``HTTPS_PROXY`` and ``NO_PROXY`` from the environment apply unless ``trust_env=False``.
    Requests go through a CONNECT tunnel, so TLS is verified end to end with mParticle. A
    loopback ``base_url`` is never proxied. The proxy's credentials are never shown.

    ``rate_limit`` paces the batches sent, shared by all the client's workers: a number of
    batches a second (default 270, mParticle's default account limit) metered by a
    :class:`~mparticle_feed.TokenBucket`, any :class:`~mparticle_feed.RateLimiter` (to
    share one budget between clients), or ``None`` for no pacing.

    Use it as a context manager, or call :meth:`close`, to release its connections.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        pod: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_workers: int = 4,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = 64_000,
        ca_certs: str | None = None,
        historical_after: timedelta = DEFAULT_HISTORICAL_AFTER,
        historical_min_age: timedelta = DEFAULT_HISTORICAL_MIN_AGE,
        max_batches: int = MAX_BATCHES_PER_REQUEST,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        rate_limit: RateLimiter | float | None = DEFAULT_RATE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
        proxy: str | None = None,
        trust_env: bool = True,
    ) -> None:
        # What a copy needs, kept apart from the open pool: a distributed task rebuilds the
        # client from these (see __reduce__). First, so that locals() holds only arguments.
        self._settings = _Settings.capture(locals())
        if not isinstance(api_key, str) or not api_key:
            msg = "api_key must be a non-empty string"
            raise ConfigurationError(msg)
        if not isinstance(api_secret, str) or not api_secret:
            msg = "api_secret must be a non-empty string"
            raise ConfigurationError(msg)
        if max_workers < 1:
            msg = f"max_workers must be at least 1, got {max_workers}"
            raise ConfigurationError(msg)
        check_packing_limits(max_batches, max_request_bytes, max_batch_bytes)
        check_routing(historical_after, historical_min_age)
        self._api_key = api_key
        self.base_url = base_url_for(api_key, pod, base_url)
        self.max_workers = max_workers
        self.retry = retry if retry is not None else RetryPolicy()
        self.historical_after = historical_after
        self.historical_min_age = historical_min_age
        self.max_batches = max_batches
        self.max_request_bytes = max_request_bytes
        self.max_batch_bytes = max_batch_bytes
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self.rate_limiter = _limiter(rate_limit, clock)
        proxy_url = proxy_for(self.base_url, proxy, trust_env)
        self._connection = Connection(
            api_key,
            api_secret,
            base_url=self.base_url,
            proxy=proxy_url,
            maxsize=max_workers,
            ca_certs=ca_certs,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_response_bytes=max_response_bytes,
        )
        self._pool = self._connection.pool
        #: The forward proxy in use (scheme, host and port; its credentials are never kept).
        self.proxy = redact_proxy(proxy_url) if proxy_url is not None else None
        if self.proxy is not None:
            logger.debug("sending through the proxy %s", self.proxy)
        self._closed = threading.Event()
        self._runs: set[Run] = set()
        self._runs_lock = threading.Lock()

    def __repr__(self) -> str:
        shown = self._api_key[:8] + ("..." if len(self._api_key) > 8 else "")
        closed = ", closed" if self._closed.is_set() else ""
        proxied = f", proxy={self.proxy!r}" if self.proxy is not None else ""
        return (
            f"EventsClient(api_key={shown!r}, base_url={self.base_url!r}{proxied}, "
            f"max_workers={self.max_workers}{closed})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # A pickle carries the settings, never the connections: each copy (a Spark or Dask
        # task) opens its own pool. The credentials travel, as the task needs them.
        return (_client_from_settings, (self._settings,))

    def _copy(self, **changes: Any) -> EventsClient:
        """A new, open client with the same settings (but ``changes``), its own connections."""
        settings = self._settings
        if changes:
            settings = attrs.evolve(settings, options={**settings.options, **changes})
        return _client_from_settings(settings)

    def __enter__(self) -> EventsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop running uploads (their unsent batches end pending) and close the connections."""
        self._closed.set()
        with self._runs_lock:
            runs = list(self._runs)
        for run in runs:
            run.halt("the client was closed")
        self._connection.close()

    # --- public entry points -------------------------------------------------------------

    def upload(
        self,
        batches: Iterable[Batch | SourcedBatch],
        *,
        now: datetime | None = None,
        historical_only: bool = False,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport:
        """Route, pack and send ``batches``, streaming; returns every batch's outcome.

        ``now`` is the time events' ages are measured from (default: the current UTC time).
        ``on_outcome`` is called in this thread as each batch reaches its final outcome
        for this run. Raises :class:`UploadConfigurationError` on 401/403.
        """
        routed = route(
            batches,
            now=now if now is not None else utc_now(),
            historical_after=self.historical_after,
            historical_min_age=self.historical_min_age,
            historical_only=historical_only,
        )
        requests = pack(
            routed,
            max_batches=self.max_batches,
            max_request_bytes=self.max_request_bytes,
            max_batch_bytes=self.max_batch_bytes,
        )
        return self._run(requests, on_outcome)

    def send(
        self,
        requests: Iterable[Request | RowProblem],
        *,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport:
        """Send already-packed requests byte for byte (for example a reviewed plan).

        With ``on_outcome``, every outcome goes to it and the report keeps none of them
        (``outcomes`` is empty; the other figures are kept), so memory does not grow with
        the number of batches sent: that is how a sync streams.
        """
        return self._run(requests, on_outcome, keep_outcomes=on_outcome is None)

    # --- the dispatcher (calling thread) -------------------------------------------------

    def _run(
        self,
        items: Iterable[Request | RowProblem],
        on_outcome: Callable[[BatchOutcome], None] | None,
        *,
        keep_outcomes: bool = True,
    ) -> UploadReport:
        if self._closed.is_set():
            msg = "this EventsClient is closed"
            raise ConfigurationError(msg)
        started = self._clock()
        run = Run(policy=self.retry, clock=self._clock)
        with self._runs_lock:
            self._runs.add(run)
        tally = _Tally(on_outcome, keep_outcomes=keep_outcomes)
        attempts = Attempts(
            attempt=self._connection.attempt,
            policy=self.retry,
            limiter=self.rate_limiter,
            clock=self._clock,
            sleep=self._sleep,
            random=self._random,
        )
        executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mparticle-feed")
        try:
            for token, item in enumerate(items):
                if isinstance(item, RowProblem):
                    tally.problems.append(item)
                    continue
                users = {b.user_key for b in item.batches if b.user_key is not None}
                # One user's batches in order: wait while an earlier request of theirs is out.
                while tally.in_flight and (
                    len(tally.in_flight) >= self.max_workers or tally.busy(users)
                ):
                    tally.collect()
                if run.stop.is_set():
                    for outcome in outcomes(item.endpoint, item.batches, pending(run)):
                        tally.settle(outcome)
                    continue
                tally.hand_out(token, users)
                executor.submit(attempts.work, item, run, token, tally.done)
            while tally.in_flight:
                tally.collect()
        except BaseException:
            run.halt("the upload was interrupted")
            raise
        finally:
            executor.shutdown(wait=True)
            with self._runs_lock:
                self._runs.discard(run)
        report = tally.report(run, elapsed=self._clock() - started)
        if run.fatal is not None:
            message, status = run.fatal
            raise UploadConfigurationError(message, status=status, report=report)
        return report


class _Tally:
    """The calling thread's side of an upload: requests out, outcomes and figures back."""

    def __init__(
        self, on_outcome: Callable[[BatchOutcome], None] | None, *, keep_outcomes: bool
    ) -> None:
        self.on_outcome = on_outcome
        self.keep_outcomes = keep_outcomes
        self.outcomes: list[BatchOutcome] = []
        self.problems: list[RowProblem] = []
        self.retries: Counter[str] = Counter()
        self.headers: dict[str, list[str]] = {}
        self.sent = 0
        self.done: queue.SimpleQueue[tuple[int, Result]] = queue.SimpleQueue()
        #: Request token -> the user keys of its batches.
        self.in_flight: dict[int, set[bytes]] = {}
        self.busy_users: Counter[bytes] = Counter()

    def busy(self, users: set[bytes]) -> bool:
        return any(self.busy_users[u] for u in users)

    def hand_out(self, token: int, users: set[bytes]) -> None:
        self.in_flight[token] = users
        self.busy_users.update(users)

    def settle(self, outcome: BatchOutcome) -> None:
        if self.keep_outcomes:
            self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def collect(self) -> None:
        """Wait for one request's result and take it in."""
        token, result = self.done.get()
        busy_users = self.busy_users
        for user in self.in_flight.pop(token):
            busy_users[user] -= 1
            if not busy_users[user]:
                del busy_users[user]  # a user's key must not outlive its requests
        self.sent += result.requests_sent
        self.retries.update(result.retries)
        for name, values in result.headers.items():
            seen = self.headers.setdefault(name, [])
            for value in values:
                if value not in seen and len(seen) < _MAX_HEADER_VALUES:
                    seen.append(value)
        for outcome in result.outcomes:
            self.settle(outcome)

    def report(self, run: Run, *, elapsed: float) -> UploadReport:
        report = UploadReport(
            outcomes=tuple(self.outcomes),
            problems=tuple(self.problems),
            retries=dict(self.retries),
            rate_limit_wait_seconds=run.rate_limit_spent,
            rate_limit_headers={name: tuple(values) for name, values in self.headers.items()},
            requests_sent=self.sent,
            elapsed_seconds=elapsed,
            stopped=run.stop_reason,
        )
        logger.info(
            "upload finished: %s; %d requests sent, %d retries",
            ", ".join(f"{k}={v}" for k, v in report.counts.items()),
            self.sent,
            sum(self.retries.values()),
        )
        return report


def _limiter(
    rate_limit: RateLimiter | float | None, clock: Callable[[], float]
) -> RateLimiter | None:
    if rate_limit is None or isinstance(rate_limit, RateLimiter):
        return rate_limit
    if isinstance(rate_limit, bool) or not isinstance(rate_limit, (int, float)):
        msg = (
            "rate_limit must be batches a second, a RateLimiter or None, "
            f"got {type(rate_limit).__name__}"
        )
        raise ConfigurationError(msg)
    return TokenBucket(rate_limit, clock=clock)
