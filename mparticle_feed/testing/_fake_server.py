"""A loopback HTTP server that behaves like mParticle's Events API, for tests and demos."""

from __future__ import annotations

import base64
import collections
import contextlib
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

import attrs
import orjson

from .._errors import ConfigurationError, PayloadError
from .._wire.codec import loads
from .._wire.models import Batch

__all__ = ["FakeEventsServer", "ReceivedRequest", "Reply"]

logger = logging.getLogger(__name__)

Action = Literal["respond", "reset", "hang", "partial", "close"]

_PATHS = ("/v2/events", "/v2/bulkevents", "/v2/bulkevents/historical")
_MAX_BODY_READ = 8 * 1024 * 1024


@attrs.frozen(kw_only=True)
class Reply:
    """One scripted answer, used for the next request instead of the normal behaviour.

    ``status=None`` keeps the normal (validating) behaviour, which lets a reply only add a
    ``delay``. ``action`` is what happens on the socket after the body was read:

    - ``"respond"``: answer ``status`` (with ``retry_after``, ``headers`` and ``body``);
    - ``"reset"``: close the connection with a TCP reset, answering nothing;
    - ``"close"``: close the connection cleanly, answering nothing;
    - ``"hang"``: answer nothing for ``hang_seconds`` (or until the server closes), then close;
    - ``"partial"``: send the status line and headers of a 202 and part of its body, then close.
    """

    status: int | None = None
    retry_after: str | float | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    action: Action = "respond"
    hang_seconds: float = 10.0


@attrs.frozen(kw_only=True)
class ReceivedRequest:
    """One request as the server saw it. The Authorization header is redacted."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    #: The parsed batches, when the body was a valid document.
    batches: tuple[Batch, ...] | None = attrs.field(repr=False)
    #: The API key the request authenticated as (None when the header was missing or bad).
    api_key: str | None
    #: ``time.monotonic()`` when the request's headers had arrived.
    received_at: float
    #: The status answered; None when the connection was reset, closed or left hanging.
    status: int | None
    accepted: bool

    @property
    def source_request_ids(self) -> list[str | None]:
        """The ``source_request_id`` of every batch, in body order."""
        return [batch.source_request_id for batch in self.batches or ()]


def _error_body(messages: Sequence[str]) -> bytes:
    return orjson.dumps(
        {"errors": [{"code": "BAD_REQUEST", "message": message} for message in messages[:20]]}
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def setup(self) -> None:
        super().setup()
        self.server.fake.connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the connection was reset on purpose
        finally:
            self.server.fake.connection_closed(self.connection)

    def do_GET(self) -> None:
        self._send(405, b'{"errors":[{"code":"METHOD_NOT_ALLOWED","message":"use POST"}]}')

    def do_POST(self) -> None:
        received_at = time.monotonic()
        fake = self.server.fake
        length_header = self.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else -1
        except ValueError:
            length = -1
        if length < 0 or length > _MAX_BODY_READ:
            self.close_connection = True
            self._send(411 if length < 0 else 413, _error_body(["bad or missing Content-Length"]))
            return
        body = self.rfile.read(length)
        fake.handle(self, body, received_at)

    def _send(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeEventsServer) -> None:
        self.fake = fake
        super().__init__(address, _Handler)


class FakeEventsServer:
    """A loopback stand-in for mParticle's Events API, safe to use in tests and demos.

    It serves ``/v2/events``, ``/v2/bulkevents`` and ``/v2/bulkevents/historical`` on
    ``127.0.0.1`` and answers the way mParticle documents:

    - 401 without Basic credentials, 403 with credentials other than ``api_key``/``api_secret``;
    - 413 for a body over ``max_request_bytes`` (256,000), 400 for more than ``max_batches``
      (100) batches, for a batch over ``max_batch_bytes`` (128,000), or for a body that
      :func:`mparticle_feed.loads` refuses (with mParticle's ``{"errors": [...]}`` body);
    - on the historical path, 400 (``historical_violation_status``) when a batch has no
      events, or an event without a timestamp or younger than 72 hours by ``now()``;
    - 400 when a batch matches the ``reject`` predicate (to test bisection);
    - with ``rate_limit`` (batches a second), 429 when a request holds more batches than its
      token bucket (``rate_limit_burst`` batches, refilled at ``rate_limit`` a second) has
      left, with ``Retry-After`` (whole seconds until the bucket holds them) and
      ``X-mp-rate-limit-exceeded: app``; only requests that would be accepted are metered;
    - otherwise 202, with an ``X-mp-rate-limit-percentage-used`` header (the share of the
      bucket in use, or 1 without ``rate_limit``).

    Every request is recorded in :attr:`~FakeEventsServer.requests`. :meth:`script` queues scripted
    :class:`Reply` objects that answer the next requests instead (a status sequence,
    ``Retry-After``, a delay, a reset, a hang, a partial response). Like mParticle, the
    server deduplicates accepted batches by ``source_request_id`` in
    :meth:`accepted_batches`.

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
        self._now = now if now is not None else (lambda: datetime.now(timezone.utc))
        self._bucket = (
            None
            if rate_limit is None
            else _Bucket(rate_limit, rate_limit_burst or max(rate_limit, max_batches), clock)
        )
        self._lock = threading.Lock()
        self._script: collections.deque[Reply] = collections.deque()
        self._requests: list[ReceivedRequest] = []
        self._connections: set[socket.socket] = set()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", port), self)
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give ``EventsClient(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def port(self) -> int:
        """The TCP port the server listens on (chosen by the system when ``port=0``)."""
        return int(self._server.server_address[1])

    def start(self) -> FakeEventsServer:
        """Start serving in a background thread (``with`` does this for you)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-events-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, release hanging requests and close every connection."""
        self._release.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

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
            for reply in replies:
                self._script.append(Reply(status=reply) if isinstance(reply, int) else reply)

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def open_connections(self) -> int:
        """Client connections currently open to the server."""
        with self._lock:
            return len(self._connections)

    def accepted_requests(self) -> list[ReceivedRequest]:
        """The requests answered 202."""
        return [request for request in self.requests if request.accepted]

    def accepted_batches(self, *, dedupe: bool = True) -> list[Batch]:
        """Batches of 202-answered requests; with ``dedupe``, once per ``source_request_id``."""
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
        counts: collections.Counter[str] = collections.Counter()
        for request in self.accepted_requests():
            counts.update(i for i in request.source_request_ids if i is not None)
        return counts

    def clear(self) -> None:
        """Forget the recorded requests and any replies still scripted."""
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # --- request handling (server threads) -----------------------------------------------

    def connection_opened(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.add(connection)

    def connection_closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def handle(self, handler: _Handler, body: bytes, received_at: float) -> None:
        with self._lock:
            reply = self._script.popleft() if self._script else None
        api_key = self._api_key(handler.headers.get("Authorization"))
        headers = {
            name: ("<redacted>" if name.lower() == "authorization" else value)
            for name, value in handler.headers.items()
        }
        batches = self._parse(body)

        def record(status: int | None, accepted: bool = False) -> None:
            request = ReceivedRequest(
                method="POST",
                path=handler.path,
                headers=headers,
                body=body,
                batches=batches,
                api_key=api_key,
                received_at=received_at,
                status=status,
                accepted=accepted,
            )
            with self._lock:
                self._requests.append(request)

        if reply is not None and reply.delay > 0:
            self._release.wait(reply.delay)
        if reply is not None and reply.action != "respond":
            record(None)
            self._misbehave(handler, reply)
            return
        if reply is not None and reply.status is not None:
            extra = dict(reply.headers)
            if reply.retry_after is not None:
                extra["Retry-After"] = str(reply.retry_after)
            if reply.status == 429:
                extra.setdefault("X-mp-rate-limit-exceeded", "app")
            record(reply.status, accepted=200 <= reply.status < 300)
            handler._send(reply.status, reply.body or b"", extra)
            return
        status, answer = self._judge(handler, body, batches)
        extra = {"X-mp-rate-limit-percentage-used": "1"} if status == 202 else {}
        if status == 202 and self._bucket is not None:
            status, answer, extra = self._bucket.take(len(batches or ()))
        record(status, accepted=status == 202)
        handler._send(status, answer, extra)

    def _misbehave(self, handler: _Handler, reply: Reply) -> None:
        handler.close_connection = True
        connection = handler.connection
        if reply.action == "hang":
            self._release.wait(reply.hang_seconds)
        elif reply.action == "partial":
            head = b"HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: 100\r\n\r\n"
            handler.wfile.write(head + b'{"partial')
        elif reply.action == "reset":
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            connection.close()

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

    def _judge(
        self, handler: _Handler, body: bytes, batches: tuple[Batch, ...] | None
    ) -> tuple[int, bytes]:
        """The status and body mParticle would answer (docs/delivery.md)."""
        authorization = handler.headers.get("Authorization")
        if not authorization:
            return 401, _error_body(["authentication header missing"])
        if authorization != self._expected_auth:
            return 403, _error_body(["invalid API key or secret"])
        path = handler.path
        if path not in _PATHS:
            return 404, _error_body([f"no such endpoint {path}"])
        if handler.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
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
                    return f"historical batch {index}, event {number}: less than 72 hours old"
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
