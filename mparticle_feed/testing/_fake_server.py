"""A loopback HTTP server that behaves like mParticle's Events API (test kit, outside the stages).

For tests and demos: it judges requests the way mParticle documents, records them, and can be
scripted to fail the way a real service and network do (see :class:`FakeEventsServer`).
"""

from __future__ import annotations

import base64
import collections
import logging
import math
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone

import attrs
import orjson
from urllib3 import HTTPHeaderDict

from .._errors import ConfigurationError, PayloadError
from .._wire.codec import loads
from .._wire.models import Batch
from ._fake_http import Answer, Incoming, Transport
from ._fake_replies import Outcome, ReceivedRequest, Reply

__all__ = ["FakeEventsServer", "Responder"]

logger = logging.getLogger(__name__)

#: Decides a request's answer: a :class:`Reply`, a bare status, or None for the normal one.
Responder = Callable[[ReceivedRequest], "Reply | int | None"]

_PATHS = ("/v2/events", "/v2/bulkevents", "/v2/bulkevents/historical")
_OUTCOMES: dict[str, Outcome] = {
    "reset": "reset",
    "close": "close",
    "hang": "hang",
    "partial": "partial",
}


def _error_body(messages: Sequence[str]) -> bytes:
    return orjson.dumps(
        {"errors": [{"code": "BAD_REQUEST", "message": message} for message in messages[:20]]}
    )


def _as_reply(reply: Reply | int | None) -> Reply | None:
    return Reply(status=reply) if isinstance(reply, int) else reply


class FakeEventsServer:
    """A loopback stand-in for mParticle's Events API, safe to use in tests and demos.

    It serves ``/v2/events``, ``/v2/bulkevents`` and ``/v2/bulkevents/historical`` on
    ``127.0.0.1`` and answers the way mParticle documents:

    - 401 without Basic credentials, 403 with credentials other than ``api_key``/``api_secret``;
    - 413 for a body over ``max_request_bytes`` (256,000), 400 for more than ``max_batches``
      (100) batches, for a batch over ``max_batch_bytes`` (128,000), or for a body that
      :func:`mparticle_feed.loads` refuses (with mParticle's ``{"errors": [...]}`` body);
    - on the historical path, 400 (``historical_violation_status``) when a batch has no
      events, or an event without a timestamp or younger than ``historical_min_age`` (72 hours)
      by ``now()``;
    - 400 when a batch matches the ``reject`` predicate (to test bisection);
    - with ``rate_limit`` (batches a second), 429 when a request holds more batches than its
      token bucket (``rate_limit_burst`` batches, refilled at ``rate_limit`` a second) has
      left, with ``Retry-After`` (whole seconds until the bucket holds them) and
      ``X-mp-rate-limit-exceeded: app``; only requests that would be accepted are metered;
    - otherwise 202, with an ``X-mp-rate-limit-percentage-used`` header (the share of the
      bucket in use, or 1 without ``rate_limit``).

    Faults, to test a pipeline against an outage, come from :class:`Reply` objects (a
    status, ``Retry-After``, a delay, a reset, a clean close, a hang, a response cut short,
    a huge streamed body). A request's reply is, first found: the next one queued by
    :meth:`script`; what ``responder`` returns for it (a function of the
    :class:`ReceivedRequest`, e.g. :class:`PerBody`); ``default``; else the normal answer.
    With ``tls`` (a server-side :class:`ssl.SSLContext`) it serves HTTPS. The port is bound
    at construction but listens only from :meth:`start` (``with`` starts it): until then
    connections are refused, as by a service that comes up late.

    Every request is recorded in :attr:`requests`, in arrival order. Like mParticle, the
    server deduplicates accepted batches by ``source_request_id`` in
    :meth:`accepted_batches`. ``clock`` times the requests and the rate limit: give it the
    :class:`~mparticle_feed.testing.FakeClock` the client sleeps on to measure the
    client's waits exactly. ``on_answer`` is called with each request once its answer was
    sent (or its fault carried out).

    Use it as a context manager::

        with FakeEventsServer() as server:
            client = EventsClient("test-key", "test-secret", base_url=server.url)
    """

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        api_secret: str = "test-secret",  # noqa: S107 (a fake server's fixed test credential)
        max_batches: int = 100,
        max_request_bytes: int = 256_000,
        max_batch_bytes: int = 128_000,
        historical_min_age: timedelta = timedelta(hours=72),
        historical_violation_status: int = 400,
        reject: Callable[[Batch], bool] | None = None,
        validate: bool = True,
        now: Callable[[], datetime] | None = None,
        port: int = 0,
        rate_limit: float | None = None,
        rate_limit_burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        default: Reply | int | None = None,
        responder: Responder | None = None,
        on_answer: Callable[[ReceivedRequest], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._expected_auth = "Basic " + base64.b64encode(
            f"{api_key}:{api_secret}".encode()
        ).decode("ascii")
        self.max_batches = max_batches
        self.max_request_bytes = max_request_bytes
        self.max_batch_bytes = max_batch_bytes
        self.historical_min_age = historical_min_age
        self.historical_violation_status = historical_violation_status
        self.reject = reject
        self.validate = validate
        self.default = _as_reply(default)
        self.responder = responder
        self.on_answer = on_answer
        self._now = now if now is not None else (lambda: datetime.now(timezone.utc))
        self._clock = clock
        self._bucket = (
            None
            if rate_limit is None
            else _Bucket(rate_limit, rate_limit_burst or max(rate_limit, max_batches), clock)
        )
        self._lock = threading.Lock()
        self._script: collections.deque[Reply] = collections.deque()
        self._requests: list[ReceivedRequest] = []
        self._scheme = "https" if tls is not None else "http"
        self._transport = Transport(
            self._handle, port=port, clock=clock, tls=tls, name="fake-events-server"
        )

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give ``EventsClient(base_url=...)``."""
        return f"{self._scheme}://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        """The TCP port the server listens on (chosen by the system when ``port=0``)."""
        return self._transport.port

    def start(self) -> FakeEventsServer:
        """Start listening and serving in background threads (``with`` does this for you)."""
        self._transport.start()
        return self

    def close(self) -> None:
        """Stop serving, release hanging and delayed requests and close every connection."""
        self._transport.close()

    def __enter__(self) -> FakeEventsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FakeEventsServer(url={self.url!r}, requests={len(self._requests)})"

    # --- scripting and inspection --------------------------------------------------------

    def script(self, *replies: Reply | int) -> None:
        """Answer the next requests with ``replies``, in order (an int is a bare status)."""
        with self._lock:
            self._script.extend(Reply(status=r) if isinstance(r, int) else r for r in replies)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """Client connections currently open to the server."""
        return self._transport.open_connections

    @property
    def tls_failures(self) -> int:
        """Connections dropped because their TLS handshake failed (with ``tls``)."""
        return self._transport.tls_failures

    def wait_for_open_connections(self, at_most: int = 0, *, timeout: float = 2.0) -> int:
        """Wait until at most ``at_most`` connections are open, or ``timeout`` (real) seconds.

        A client's hang-up reaches the server a moment after the client returns, so a test
        of "no connection outlives ``close()``" waits here; returns the count at the end.
        """
        deadline = time.monotonic() + timeout
        while True:
            count = self.open_connections
            if count <= at_most or time.monotonic() >= deadline:
                return count
            time.sleep(0.01)

    def accepted_requests(self) -> list[ReceivedRequest]:
        """The requests answered with a 2xx."""
        return [request for request in self.requests if request.accepted]

    def accepted_batches(self, *, dedupe: bool = True) -> list[Batch]:
        """Batches of accepted requests; with ``dedupe``, once per ``source_request_id``."""
        seen: set[str] = set()
        result: list[Batch] = []
        for request in self.accepted_requests():
            for batch in request.batches or ():
                key = batch.source_request_id
                if dedupe and key is not None:
                    if key in seen:
                        continue
                    seen.add(key)
                result.append(batch)
        return result

    def accepted_ids(self) -> collections.Counter[str]:
        """How many times each ``source_request_id`` was in an accepted request."""
        return _count_ids(self.accepted_requests())

    def received_ids(self) -> collections.Counter[str]:
        """How many times each ``source_request_id`` reached the server, whatever the answer."""
        return _count_ids(self.requests)

    def clear(self) -> None:
        """Forget the recorded requests and any replies still scripted."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # --- request handling (server threads) -----------------------------------------------

    def _handle(self, incoming: Incoming) -> Answer:
        batches = self._parse(incoming.body)
        with self._lock:
            request = ReceivedRequest(
                index=len(self._requests),
                connection=incoming.connection,
                method=incoming.method,
                path=incoming.path,
                headers=HTTPHeaderDict(
                    {
                        name: ("<redacted>" if name.lower() == "authorization" else value)
                        for name, value in incoming.headers.items()
                    }
                ),
                body=incoming.body,
                batches=batches,
                api_key=self._api_key(incoming.header("Authorization")),
                received_at=incoming.received_at,
                status=None,
                accepted=False,
                outcome="pending",
            )
            self._requests.append(request)
            reply = self._script.popleft() if self._script else None
        if reply is None and self.responder is not None:
            reply = _as_reply(self.responder(request))
        if reply is None:
            reply = self.default
        if reply is not None and reply.delay > 0:
            self._transport.stopping.wait(reply.delay)
        answer, status, accepted = self._answer(incoming, batches, reply)
        outcome = _OUTCOMES.get(answer.action, "answered")
        done = attrs.evolve(
            request, status=status, accepted=accepted, outcome=outcome, answered_at=self._clock()
        )
        with self._lock:
            if request.index < len(self._requests) and self._requests[request.index] is request:
                self._requests[request.index] = done
        if self.on_answer is None:
            return answer
        on_answer = self.on_answer
        return attrs.evolve(answer, then=lambda: on_answer(done))

    def _answer(
        self, incoming: Incoming, batches: tuple[Batch, ...] | None, reply: Reply | None
    ) -> tuple[Answer, int | None, bool]:
        """The answer to carry out, the status it gives and whether it accepts."""
        if reply is not None and reply.action != "respond":
            answer = Answer(
                action=reply.action,
                status=reply.status if reply.status is not None else 202,
                hang_seconds=reply.hang_seconds,
            )
            return answer, None, False
        if reply is not None and reply.status is not None:
            extra = dict(reply.headers)
            if reply.retry_after is not None:
                extra["Retry-After"] = str(reply.retry_after)
            if reply.status == 429:
                extra.setdefault("X-mp-rate-limit-exceeded", "app")
            answer = Answer(
                status=reply.status,
                headers=extra,
                body=reply.body or b"",
                stream_size=reply.stream_size,
                keep_alive=reply.keep_alive,
            )
            return answer, reply.status, 200 <= reply.status < 300
        status, body = self._judge(incoming, batches)
        extra = {"X-mp-rate-limit-percentage-used": "1"} if status == 202 else {}
        if status == 202 and self._bucket is not None:
            status, body, extra = self._bucket.take(len(batches or ()))
        keep_alive = reply.keep_alive if reply is not None else True
        return (
            Answer(status=status, headers=extra, body=body, keep_alive=keep_alive),
            status,
            (status == 202),
        )

    def _api_key(self, authorization: str | None) -> str | None:
        # Only the matching header is decoded: a wrong one may hold someone's secret.
        if authorization != self._expected_auth:
            return None
        return base64.b64decode(authorization[6:]).decode().split(":", 1)[0]

    def _parse(self, body: bytes) -> tuple[Batch, ...] | None:
        try:
            parsed = loads(body)
        except PayloadError:
            return None
        return tuple(parsed) if isinstance(parsed, list) else (parsed,)

    def _judge(self, incoming: Incoming, batches: tuple[Batch, ...] | None) -> tuple[int, bytes]:
        """The status and body mParticle would answer (docs/delivery.md)."""
        if incoming.method != "POST":
            return 405, _error_body([f"use POST, not {incoming.method}"])
        body = incoming.body
        authorization = incoming.header("Authorization")
        if not authorization:
            return 401, _error_body(["authentication header missing"])
        if authorization != self._expected_auth:
            return 403, _error_body(["invalid API key or secret"])
        path = incoming.path
        if path not in _PATHS:
            return 404, _error_body([f"no such endpoint {path}"])
        if (incoming.header("Content-Type") or "").split(";")[0].strip() != "application/json":
            return 415, _error_body(["Content-Type must be application/json"])
        if len(body) > self.max_request_bytes:
            return 413, _error_body(
                [f"request of {len(body)} bytes exceeds {self.max_request_bytes}"]
            )
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, _error_body(["malformed JSON"])
        bulk = path != "/v2/events"
        if bulk != isinstance(raw, list):
            expected = "an array of batches" if bulk else "one batch object"
            return 400, _error_body([f"the body must be {expected}"])
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > self.max_batches:
            return 400, _error_body([f"{len(items)} batches exceed {self.max_batches}"])
        for index, item in enumerate(items):
            size = len(orjson.dumps(item))
            if size > self.max_batch_bytes:
                return 400, _error_body(
                    [f"batch {index} of {size} bytes exceeds {self.max_batch_bytes}"]
                )
        if self.validate and batches is None:
            try:
                loads(body)
            except PayloadError as exc:
                return 400, _error_body(list(exc.problems))
        parsed = batches or ()
        if path.endswith("/historical"):
            problem = self._historical_problem(parsed)
            if problem is not None:
                return self.historical_violation_status, _error_body([problem])
        if self.reject is not None:
            for index, batch in enumerate(parsed):
                if self.reject(batch):
                    return 400, _error_body([f"batch {index} is invalid"])
        return 202, b""

    def _historical_problem(self, batches: Iterator[Batch] | Sequence[Batch]) -> str | None:
        now_ms = int(self._now().timestamp() * 1000)
        min_age_ms = self.historical_min_age // timedelta(milliseconds=1)
        for index, batch in enumerate(batches):
            if not batch.events:
                return f"historical batch {index} has no events"
            for number, event in enumerate(batch.events):
                stamp = event.timestamp_unixtime_ms
                if stamp is None:
                    return f"historical batch {index}, event {number}: no timestamp_unixtime_ms"
                if now_ms - stamp < min_age_ms:
                    hours = self.historical_min_age / timedelta(hours=1)
                    return (
                        f"historical batch {index}, event {number}: less than {hours:g} hours old"
                    )
        return None


class _Bucket:
    """The server's rate limit: a token bucket in batches, like an account's."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        if not (rate > 0 and burst >= 1):
            msg = f"rate_limit must be positive and its burst at least 1, got {rate}, {burst}"
            raise ConfigurationError(msg)
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = burst
        self._updated = clock()

    def take(self, batches: int) -> tuple[int, bytes, dict[str, str]]:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if batches > self._tokens:
                seconds = (batches - self._tokens) / self.rate
                headers = {
                    "Retry-After": str(max(1, math.ceil(seconds))),
                    "X-mp-rate-limit-exceeded": "app",
                }
                return 429, _error_body(["rate limit exceeded"]), headers
            self._tokens -= batches
            used = 100 * (self.burst - self._tokens) / self.burst
        return 202, b"", {"X-mp-rate-limit-percentage-used": str(round(used))}


def _count_ids(requests: Sequence[ReceivedRequest]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for request in requests:
        counts.update(i for i in request.source_request_ids if i is not None)
    return counts
