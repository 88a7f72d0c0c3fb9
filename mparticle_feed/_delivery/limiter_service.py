"""Stage: delivery. One rate budget for a cluster: a limiter served from the driver.

mParticle's budget (batches a second) is per account, not per process. A distributed run
starts a :class:`LimiterService` on the driver around one shared limiter; every task's
client uses a :class:`RemoteLimiter`, a small picklable handle that forwards the three calls
of the rate-limiter protocol (``acquire``, ``rate_limited``, ``observe``) over TCP. A 429
seen by one task therefore pauses every task, and the cluster's batches are metered
against one budget.

The wire is one JSON line each way per call. Every call carries the run's token, made
fresh for each service; a call with another token is refused and counted, never served. A
task that cannot reach the service (a firewall between executors and the driver) falls
back, for the rest of its life, to a limiter of its own made by its ``fallback`` factory
(typically a static share of the budget), and says so once in the log.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import secrets
import socket
import socketserver
import threading
from collections.abc import Callable
from typing import Any

import orjson

from .._errors import ConfigurationError
from .limiter import RateLimiter

__all__ = ["LimiterService", "RemoteLimiter"]

logger = logging.getLogger(__name__)

_MAX_LINE = 4096


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.service._lock:
            self.server.service._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.service._lock:
            self.server.service._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def handle(self) -> None:
        service = self.server.service
        while True:
            try:
                line = self.rfile.readline(_MAX_LINE + 1)
            except OSError:
                return  # the task went away (or the service is closing): nothing to answer
            if not line:
                return
            try:
                call = orjson.loads(line)
                token = call["token"]
                operation = call["op"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                service._refuse()
                return
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), service._token.encode()
            ):
                service._refuse()
                return
            try:
                answer = service._serve(operation, call.get("value"))
            except (TypeError, ValueError):
                service._refuse()
                return
            try:
                self.wfile.write(orjson.dumps({"wait": answer}) + b"\n")
                self.wfile.flush()
            except OSError:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: LimiterService) -> None:
        self.service = service
        super().__init__(address, _Handler)


class LimiterService:
    """Serves ``limiter`` to a run's tasks over TCP, for one shared rate budget.

    ``host`` is the address tasks reach the driver at: loopback (the default) for local
    runs; the driver's cluster address when executors run on other machines. ``port`` 0
    picks a free port. Use it as a context manager (or :meth:`start` and :meth:`close`)
    and give each task :meth:`handle`.
    """

    def __init__(self, limiter: RateLimiter, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.limiter = limiter
        self._token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self.calls = 0
        self.refused = 0
        self._connections: set[socket.socket] = set()
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the service listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> LimiterService:
        """Serve in a background thread (``with`` does this)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"limiter-service-{self.address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving; tasks still running fall back to their own limiter."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        # Tasks hold their connections open; end them so no handler thread outlives the run.
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()

    def __enter__(self) -> LimiterService:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.address
        return (
            f"LimiterService(address='{host}:{port}', calls={self.calls}, refused={self.refused})"
        )

    def handle(self, fallback: Callable[[], RateLimiter], *, timeout: float = 5.0) -> RemoteLimiter:
        """A picklable limiter for a task: this service's budget, or ``fallback()``'s when
        the service cannot be reached (``fallback`` must pickle: a class, a ``partial``)."""
        host, port = self.address
        return RemoteLimiter(host, port, self._token, fallback=fallback, timeout=timeout)

    def _refuse(self) -> None:
        with self._lock:
            self.refused += 1
        logger.warning("limiter service: refused a call without this run's token")

    def _serve(self, operation: str, value: Any) -> float:
        with self._lock:
            self.calls += 1
        if operation == "acquire":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TypeError(operation)
            return float(self.limiter.acquire(value))
        number = _optional_number(value)
        if operation == "rate_limited":
            self.limiter.rate_limited(number)
        elif operation == "observe":
            self.limiter.observe(number)
        else:
            raise ValueError(operation)
        return 0.0


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(value)
    return float(value)


class RemoteLimiter:
    """A task's side of a :class:`LimiterService`: the rate-limiter protocol over TCP.

    Picklable (address, token, fallback factory); it opens one connection per thread where
    it is used. Once the service cannot be reached, every later call goes to a limiter made
    once by ``fallback()``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        *,
        fallback: Callable[[], RateLimiter],
        timeout: float = 5.0,
    ) -> None:
        if not token:
            msg = "a RemoteLimiter needs its run's token"
            raise ConfigurationError(msg)
        self.host = host
        self.port = port
        self._token = token
        self.fallback = fallback
        self._fallback: RateLimiter | None = None
        self.timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[tuple[Any, socket.socket]] = []
        self.fell_back = False

    def __reduce__(self) -> tuple[Any, ...]:
        # Connections and thread-local state stay behind; a copy connects on first use.
        return (
            _remote_limiter,
            (self.host, self.port, self._token, self.fallback, self.timeout),
        )

    def __repr__(self) -> str:
        mode = ", fell back" if self.fell_back else ""
        return f"RemoteLimiter(address='{self.host}:{self.port}'{mode})"

    def acquire(self, batches: int) -> float:
        """Reserve ``batches`` from the shared budget; the seconds to wait before sending."""
        answer = self._call("acquire", batches)
        return self._own().acquire(batches) if answer is None else answer

    def rate_limited(self, retry_after: float | None) -> None:
        """Tell the shared budget (and so every task) that mParticle answered 429."""
        if self._call("rate_limited", retry_after) is None:
            self._own().rate_limited(retry_after)

    def observe(self, percentage_used: float | None) -> None:
        """Pass an accepted request's ``X-mp-rate-limit-percentage-used`` on."""
        if self._call("observe", percentage_used) is None:
            self._own().observe(percentage_used)

    def _own(self) -> RateLimiter:
        with self._lock:
            if self._fallback is None:
                self._fallback = self.fallback()
            return self._fallback

    def _call(self, operation: str, value: Any) -> float | None:
        if self.fell_back:
            return None
        line = orjson.dumps({"token": self._token, "op": operation, "value": value}) + b"\n"
        try:
            stream = self._stream()
            stream.write(line)
            stream.flush()
            answer = stream.readline(_MAX_LINE + 1)
            if not answer:
                raise ConnectionError("the limiter service closed the connection")
            return float(orjson.loads(answer)["wait"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._drop_stream()
            with self._lock:
                if not self.fell_back:
                    self.fell_back = True
                    logger.warning(
                        "limiter service at %s:%d unreachable (%s); this task uses its "
                        "fallback limiter from now on",
                        self.host,
                        self.port,
                        type(exc).__name__,
                    )
            return None

    def _stream(self) -> Any:
        stream = getattr(self._local, "stream", None)
        if stream is None:
            connection = socket.create_connection((self.host, self.port), timeout=self.timeout)
            stream = connection.makefile("rwb")
            self._local.stream = stream
            with self._lock:
                self._open.append((stream, connection))
        return stream

    def _drop_stream(self) -> None:
        stream = getattr(self._local, "stream", None)
        self._local.stream = None
        with self._lock:
            mine = [pair for pair in self._open if pair[0] is stream]
            self._open = [pair for pair in self._open if pair[0] is not stream]
        _close_all(mine)

    def close(self) -> None:
        """Close the connections of every thread that used this handle."""
        with self._lock:
            pairs, self._open = self._open, []
        _close_all(pairs)
        self._local = threading.local()

    def __enter__(self) -> RemoteLimiter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _close_all(pairs: list[tuple[Any, socket.socket]]) -> None:
    for stream, connection in pairs:
        for resource in (stream, connection):
            with contextlib.suppress(OSError):
                resource.close()


def _remote_limiter(
    host: str, port: int, token: str, fallback: Callable[[], RateLimiter], timeout: float
) -> RemoteLimiter:
    return RemoteLimiter(host, port, token, fallback=fallback, timeout=timeout)
