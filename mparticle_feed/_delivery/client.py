"""EventsClient: delivers packed requests to the Events API without losing or doubling data.

One urllib3 ``PoolManager`` per client; a bounded pool of worker threads per upload. The
calling thread reads the input lazily, hands requests to the workers, and calls
``on_outcome`` itself, so callbacks never run concurrently. A request is not handed out
while an earlier request holding a batch of the same user is still unsettled, so one user's
batches arrive in order.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import math
import platform
import queue
import random as _random
import socket
import ssl
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal

import attrs
import urllib3
from urllib3.exceptions import (
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from .._errors import ConfigurationError, UploadConfigurationError
from .._mapping.provenance import RowProblem, SourcedBatch
from .._wire.models import Batch
from .limiter import DEFAULT_RATE, RateLimiter, TokenBucket
from .packing import (
    MAX_BATCH_BYTES,
    MAX_BATCHES_PER_REQUEST,
    MAX_REQUEST_BYTES,
    PackedBatch,
    Request,
    check_packing_limits,
    pack,
    request_body,
)
from .report import BatchOutcome, OutcomeStatus, UploadReport
from .retry import RetryPolicy, classify, parse_retry_after
from .routing import (
    DEFAULT_HISTORICAL_AFTER,
    DEFAULT_HISTORICAL_MIN_AGE,
    Endpoint,
    check_routing,
    route,
    utc_now,
)

__all__ = ["PODS", "EventsClient", "UploadConfigurationError"]

logger = logging.getLogger(__name__)

#: Pod name -> base URL (the Events API paths start with /v2).
PODS = {
    "us1": "https://s2s.us1.mparticle.com",
    "us2": "https://s2s.us2.mparticle.com",
    "eu1": "https://s2s.eu1.mparticle.com",
    "au1": "https://s2s.au1.mparticle.com",
}

_RATE_LIMIT_PREFIX = "x-mp-rate-limit-"
_PERCENTAGE_USED = "x-mp-rate-limit-percentage-used"
_MAX_HEADER_VALUES = 20
_URLLIB3_VERSION = version("urllib3")


def _package_version() -> str:
    try:
        return version("mparticle-feed")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _is_loopback(host: str) -> bool:
    """True for a loopback address, or a name that resolves to loopback addresses only."""
    host = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses
    )


def _base_url(api_key: str, pod: str | None, base_url: str | None) -> str:
    if base_url is not None:
        if pod is not None:
            msg = "give either pod or base_url, not both"
            raise ConfigurationError(msg)
        try:
            parsed = urllib3.util.parse_url(base_url)
        except LocationParseError:
            msg = f"base_url {base_url!r} is not a URL"
            raise ConfigurationError(msg) from None
        if parsed.scheme not in ("https", "http") or not parsed.host:
            msg = f"base_url must be an https:// URL, got {base_url!r}"
            raise ConfigurationError(msg)
        if parsed.scheme == "http" and not _is_loopback(parsed.host):
            msg = (
                f"plain http is allowed only to loopback hosts (for tests); {parsed.host!r} "
                "needs https"
            )
            raise ConfigurationError(msg)
        if parsed.auth or parsed.query or parsed.fragment:
            msg = "base_url must not carry credentials, a query or a fragment"
            raise ConfigurationError(msg)
        path = (parsed.path or "").rstrip("/")
        path = path.removesuffix("/v2")
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.host}{port}{path}"
    if pod is None:
        prefix = api_key.split("-", 1)[0].lower() if "-" in api_key else ""
        pod = prefix if prefix in PODS else "us1"
    name = pod.lower()
    if name not in PODS:
        msg = f"unknown pod {pod!r}; expected one of {', '.join(sorted(PODS))}"
        raise ConfigurationError(msg)
    return PODS[name]


# --- forward proxies ---------------------------------------------------------------------


def _redact_proxy(url: str) -> str:
    """A proxy URL as it may be shown: scheme, host and port, never the credentials."""
    parsed = urllib3.util.parse_url(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _proxy_for(base_url: str, proxy: str | None, trust_env: bool) -> str | None:
    """The proxy URL to send through, or None for a direct connection.

    An explicit ``proxy`` wins; otherwise, with ``trust_env``, ``HTTPS_PROXY`` (or
    ``HTTP_PROXY`` for a plain-http base URL) unless ``NO_PROXY`` matches the host. A
    loopback host is never proxied, so a developer's ``HTTPS_PROXY`` cannot reroute a
    local fake server.
    """
    parsed = urllib3.util.parse_url(base_url)
    host = parsed.host or ""
    if _is_loopback(host):
        return None
    if proxy is None and trust_env:
        proxies = urllib.request.getproxies_environment()
        found = proxies.get(parsed.scheme or "https")
        # NO_PROXY, as curl and requests read it (missing from typeshed, present since 3.x).
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if found and not bypass(host, proxies):
            proxy = found
    if not proxy:
        return None
    # "proxy.corp:3128" (no scheme) is common in HTTPS_PROXY; it means an http proxy.
    return proxy if "://" in proxy else f"http://{proxy}"


def _pool_manager(proxy: str | None, *, maxsize: int, ca_certs: str | None) -> urllib3.PoolManager:
    """A direct pool, or one tunnelling through ``proxy`` (CONNECT: TLS stays end to end)."""
    if proxy is None:
        return urllib3.PoolManager(
            num_pools=2, maxsize=maxsize, cert_reqs=ssl.CERT_REQUIRED, ca_certs=ca_certs
        )
    try:
        parsed = urllib3.util.parse_url(proxy)
    except LocationParseError:
        msg = "the proxy is not a URL"  # the URL itself may hold credentials: not shown
        raise ConfigurationError(msg) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = "the proxy must be an http:// or https:// URL with a host"
        raise ConfigurationError(msg)
    headers = urllib3.util.make_headers(proxy_basic_auth=parsed.auth) if parsed.auth else None
    return urllib3.ProxyManager(
        _redact_proxy(proxy),
        num_pools=2,
        maxsize=maxsize,
        proxy_headers=headers,
        cert_reqs=ssl.CERT_REQUIRED,
        ca_certs=ca_certs,
    )


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


@attrs.define(eq=False)
class _Run:
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
class _Result:
    """What one worker did with one request."""

    outcomes: list[BatchOutcome] = attrs.field(factory=list)
    retries: Counter[str] = attrs.field(factory=Counter)
    headers: dict[str, list[str]] = attrs.field(factory=dict)
    requests_sent: int = 0


@attrs.frozen
class _Answer:
    """What one attempt got: a response, or the cause of its failure."""

    status: int | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    text: str | None = None
    #: For retries' accounting: "status 503", "timeout", "connection".
    cause: str = "connection"
    detail: str = ""
    certificate_problem: bool = False


@attrs.frozen
class _Final:
    """How one body's attempts ended."""

    kind: Literal["accepted", "rejected", "failed", "pending", "bisect"]
    attempts: int
    status: int | None = None
    body: str | None = None
    reason: str | None = None


class EventsClient:
    """A client for mParticle's bulk Events API.

    ``api_key`` and ``api_secret`` are an input's (or a Custom Feed's) credentials, sent with
    HTTP Basic auth over verified TLS. The pod comes from ``pod``, from ``base_url``, or from
    the key's prefix (``us1-``, ``us2-``, ``eu1-``, ``au1-``; US1 otherwise). Plain ``http://``
    is accepted only for loopback hosts, for tests against
    :class:`~mparticle_feed.testing.FakeEventsServer`.

    ``timeout`` is the read timeout of one attempt and ``connect_timeout`` its connect
    timeout. ``retry`` sets the retry policy. ``clock``, ``sleep`` and ``random`` can be
    replaced in tests so that backoff takes no real time.

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
        self.base_url = _base_url(api_key, pod, base_url)
        self.max_workers = max_workers
        self.retry = retry if retry is not None else RetryPolicy()
        self.historical_after = historical_after
        self.historical_min_age = historical_min_age
        self.max_batches = max_batches
        self.max_request_bytes = max_request_bytes
        self.max_batch_bytes = max_batch_bytes
        self._max_response_bytes = max_response_bytes
        # ``total`` bounds connect plus the first wait; the body is read against the same
        # deadline below, so a server trickling bytes cannot hold an attempt longer.
        self._timeout = urllib3.Timeout(
            connect=connect_timeout, read=timeout, total=connect_timeout + timeout
        )
        self._attempt_seconds = connect_timeout + timeout
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self.rate_limiter = _limiter(rate_limit, clock)
        self._urls = {endpoint: self.base_url + endpoint.value for endpoint in Endpoint}
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": (
                f"mparticle-feed/{_package_version()} "
                f"python/{platform.python_version()} urllib3/{_URLLIB3_VERSION}"
            ),
        }
        proxy_url = _proxy_for(self.base_url, proxy, trust_env)
        self._pool = _pool_manager(proxy_url, maxsize=max_workers, ca_certs=ca_certs)
        #: The forward proxy in use (scheme, host and port; its credentials are never kept).
        self.proxy = _redact_proxy(proxy_url) if proxy_url is not None else None
        if self.proxy is not None:
            logger.debug("sending through the proxy %s", self.proxy)
        self._closed = threading.Event()
        self._runs: set[_Run] = set()
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
        # Close each host pool ourselves: PoolManager.clear() alone may only forget them,
        # leaving idle keep-alive sockets open until garbage collection.
        pools = self._pool.pools
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()
        self._pool.clear()

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
        run = _Run(policy=self.retry, clock=self._clock)
        with self._runs_lock:
            self._runs.add(run)
        outcomes: list[BatchOutcome] = []
        problems: list[RowProblem] = []
        retries: Counter[str] = Counter()
        headers: dict[str, list[str]] = {}
        sent = 0
        done: queue.SimpleQueue[tuple[int, _Result]] = queue.SimpleQueue()
        in_flight: dict[int, set[bytes]] = {}
        busy_users: Counter[bytes] = Counter()

        def settle(outcome: BatchOutcome) -> None:
            if keep_outcomes:
                outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)

        def collect() -> None:
            nonlocal sent
            token, result = done.get()
            for user in in_flight.pop(token):
                busy_users[user] -= 1
                if not busy_users[user]:
                    del busy_users[user]  # a user's key must not outlive its requests
            sent += result.requests_sent
            retries.update(result.retries)
            for name, values in result.headers.items():
                seen = headers.setdefault(name, [])
                for value in values:
                    if value not in seen and len(seen) < _MAX_HEADER_VALUES:
                        seen.append(value)
            for outcome in result.outcomes:
                settle(outcome)

        executor = ThreadPoolExecutor(self.max_workers, thread_name_prefix="mparticle-feed")
        try:
            for token, item in enumerate(items):
                if isinstance(item, RowProblem):
                    problems.append(item)
                    continue
                users = {b.user_key for b in item.batches if b.user_key is not None}
                while in_flight and (
                    len(in_flight) >= self.max_workers or any(busy_users[u] for u in users)
                ):
                    collect()
                if run.stop.is_set():
                    for outcome in _outcomes(item.endpoint, item.batches, _pending(run)):
                        settle(outcome)
                    continue
                in_flight[token] = users
                busy_users.update(users)
                executor.submit(self._work, item, run, token, done)
            while in_flight:
                collect()
        except BaseException:
            run.halt("the upload was interrupted")
            raise
        finally:
            executor.shutdown(wait=True)
            with self._runs_lock:
                self._runs.discard(run)
        report = UploadReport(
            outcomes=tuple(outcomes),
            problems=tuple(problems),
            retries=dict(retries),
            rate_limit_wait_seconds=run.rate_limit_spent,
            rate_limit_headers={name: tuple(values) for name, values in headers.items()},
            requests_sent=sent,
            elapsed_seconds=self._clock() - started,
            stopped=run.stop_reason,
        )
        logger.info(
            "upload finished: %s; %d requests sent, %d retries",
            ", ".join(f"{k}={v}" for k, v in report.counts.items()),
            sent,
            sum(retries.values()),
        )
        if run.fatal is not None:
            message, status = run.fatal
            raise UploadConfigurationError(message, status=status, report=report)
        return report

    # --- the workers ---------------------------------------------------------------------

    def _work(
        self, request: Request, run: _Run, token: int, done: queue.SimpleQueue[tuple[int, _Result]]
    ) -> None:
        result = _Result()
        try:
            self._deliver(request.endpoint, request.batches, request.body, run, result)
        except Exception as exc:  # a bug must not lose batches: they end failed, not dropped
            logger.exception("unexpected error while sending a request")
            settled = {outcome.source_request_id for outcome in result.outcomes}
            unsettled = [b for b in request.batches if b.source_request_id not in settled]
            final = _Final("failed", 0, reason=f"unexpected error: {type(exc).__name__}")
            result.outcomes.extend(_outcomes(request.endpoint, unsettled, final))
        finally:
            done.put((token, result))

    def _deliver(
        self,
        endpoint: Endpoint,
        batches: Sequence[PackedBatch],
        body: bytes,
        run: _Run,
        result: _Result,
    ) -> None:
        final = self._attempts(endpoint, body, len(batches), run, result)
        if final.kind != "bisect":
            result.outcomes.extend(_outcomes(endpoint, batches, final))
            return
        middle = len(batches) // 2
        logger.debug(
            "bisecting a request of %d batches after status %s", len(batches), final.status
        )
        for half in (batches[:middle], batches[middle:]):
            self._deliver(endpoint, half, request_body(half), run, result)

    def _attempts(
        self, endpoint: Endpoint, body: bytes, batch_count: int, run: _Run, result: _Result
    ) -> _Final:
        """Send one body until it settles; the same bytes on every attempt."""
        first_attempt = self._clock()
        attempts = transient_retries = rate_limit_retries = 0
        while True:
            self._wait_turn(run, batch_count)
            if run.stop.is_set():
                return _pending(run, attempts)
            attempts += 1
            result.requests_sent += 1
            answer = self._attempt(endpoint, body)
            self._learn(answer, run, result)
            final = _settled(answer, attempts, batch_count, run)
            if final is None and answer.status == 429:
                rate_limit_retries += 1
                final = self._after_rate_limit(answer, attempts, rate_limit_retries, run)
            elif final is None:
                transient_retries += 1
                final = self._after_transient(
                    answer, attempts, transient_retries, self._clock() - first_attempt
                )
            if final is not None:
                return final
            result.retries[answer.cause] += 1
            logger.debug("retrying %d batches after %s", batch_count, answer.detail)

    def _attempt(self, endpoint: Endpoint, body: bytes) -> _Answer:
        """One POST; a network failure becomes an answer without a status."""
        try:
            status, headers, text = self._post(endpoint, body)
        except SSLError as exc:
            return _Answer(detail=type(exc).__name__, certificate_problem=_certificate_problem(exc))
        except NewConnectionError as exc:  # before TimeoutError: urllib3 derives it from that
            return _Answer(detail=type(exc).__name__)
        except Urllib3TimeoutError as exc:
            return _Answer(cause="timeout", detail=type(exc).__name__)
        except (ProtocolError, HTTPError, OSError) as exc:
            return _Answer(detail=type(exc).__name__)
        cause = f"status {status}"
        return _Answer(status=status, headers=headers, text=text, cause=cause, detail=cause)

    def _learn(self, answer: _Answer, run: _Run, result: _Result) -> None:
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
            if self.rate_limiter is not None:
                self.rate_limiter.observe(percentage)

    def _after_rate_limit(
        self, answer: _Answer, attempts: int, retry: int, run: _Run
    ) -> _Final | None:
        """Pause every worker as asked, or stop the run when the wait is too long."""
        policy = self.retry
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        if self.rate_limiter is not None:
            self.rate_limiter.rate_limited(retry_after)
        wait = policy.rate_limit_wait(retry_after, retry, self._random)
        stalled = self._clock() + wait - run.last_accepted
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
        return _Final("pending", attempts, status=429, body=answer.text, reason=reason)

    def _after_transient(
        self, answer: _Answer, attempts: int, retry: int, elapsed: float
    ) -> _Final | None:
        """Back off before the next attempt, or give up on the request."""
        policy = self.retry
        retry_after = parse_retry_after(answer.headers.get("Retry-After"))
        wait = max(policy.backoff(retry, self._random), retry_after or 0.0)
        if attempts >= policy.max_attempts or elapsed + wait > policy.deadline:
            limit = (
                f"{attempts} attempts"
                if attempts >= policy.max_attempts
                else f"the {policy.deadline:g} s deadline"
            )
            return _Final(
                "failed",
                attempts,
                status=answer.status,
                body=answer.text,
                reason=f"gave up after {limit}; last cause: {answer.detail}",
            )
        logger.debug("%s: waiting %.3f s (attempt %d)", answer.detail, wait, attempts)
        self._sleep(wait)
        return None

    def _wait_turn(self, run: _Run, batch_count: int) -> None:
        """Wait out a 429 pause, then the limiter's turn for ``batch_count`` batches."""
        self._wait_for_pause(run)
        if self.rate_limiter is None or run.stop.is_set():
            return
        wait = self.rate_limiter.acquire(batch_count)
        if wait > 0:
            self._sleep(wait)
            self._wait_for_pause(run)

    def _wait_for_pause(self, run: _Run) -> None:
        while not run.stop.is_set():
            remaining = run.pause_until - self._clock()
            if remaining <= 0:
                return
            self._sleep(remaining)

    def _post(self, endpoint: Endpoint, body: bytes) -> tuple[int, dict[str, str], str]:
        deadline = time.monotonic() + self._attempt_seconds
        response = self._pool.urlopen(
            "POST",
            self._urls[endpoint],
            body=body,
            headers=self._headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=False,
        )
        complete = False
        headers = dict(response.headers.items())
        try:
            chunks: list[bytes] = []
            size = 0
            read = getattr(response, "read1", response.read)
            try:
                while size <= self._max_response_bytes:
                    if time.monotonic() > deadline:
                        msg = "the response took longer than the attempt's timeout"
                        raise ReadTimeoutError(None, self._urls[endpoint], msg)  # type: ignore[arg-type]
                    # read1 returns what has arrived, so the deadline is checked between
                    # arrivals (read would wait for the whole amount).
                    chunk = read(min(8192, self._max_response_bytes + 1 - size))
                    if not chunk:
                        complete = True
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except (ProtocolError, HTTPError, OSError):
                # Any 2xx means mParticle took the batches, whatever became of its body.
                if not 200 <= response.status < 300:
                    raise
            data = b"".join(chunks)
            text = data[: self._max_response_bytes].decode("utf-8", "replace")
            return response.status, headers, text
        finally:
            if not complete:
                # Unread (oversized or broken) response: drop the connection, never reuse it.
                response.close()
            response.release_conn()


def _certificate_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _settled(answer: _Answer, attempts: int, batch_count: int, run: _Run) -> _Final | None:
    """The final outcome an answer decides, or None when it is worth another attempt."""
    status, text = answer.status, answer.text
    verdict = classify(
        status, certificate_problem=answer.certificate_problem, batch_count=batch_count
    )
    if verdict == "retry":
        return None
    if verdict == "accepted":
        return _Final("accepted", attempts, status=status)
    if verdict == "bisect":
        return _Final("bisect", attempts, status=status, body=text)
    if verdict == "rejected":
        reason = f"mParticle answered HTTP {status}"
        return _Final("rejected", attempts, status=status, body=text, reason=reason)
    if verdict == "untrusted server":
        reason = "the server's TLS certificate could not be verified"
    else:
        reason = (
            f"mParticle refused the credentials (HTTP {status}); check the API key "
            "and secret and the pod"
        )
    run.halt(reason, fatal=(reason, status))
    return _Final("failed", attempts, status=status, body=text, reason=reason)


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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


def _pending(run: _Run, attempts: int = 0) -> _Final:
    return _Final("pending", attempts, reason=run.stop_reason or "the run stopped")


def _outcomes(
    endpoint: Endpoint, batches: Iterable[PackedBatch], final: _Final
) -> Iterator[BatchOutcome]:
    status: OutcomeStatus = "failed" if final.kind == "bisect" else final.kind
    for batch in batches:
        yield BatchOutcome(
            status=status,
            endpoint=endpoint,
            source_request_id=batch.source_request_id,
            rows=batch.sourced.rows,
            http_status=final.status,
            response_body=None if status == "accepted" else final.body,
            reason=final.reason,
            attempts=final.attempts,
            sourced=batch.sourced,
        )
