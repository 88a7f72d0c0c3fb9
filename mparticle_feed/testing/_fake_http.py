"""The fake server's HTTP/1.1 transport (test kit, outside the pipeline's stages).

It speaks just enough HTTP/1.1 for an HTTP client's POSTs (keep-alive, ``Content-Length`` or
chunked bodies, TLS when given a context) and carries out an :class:`Answer` on the socket:
a response with its body given or streamed, a hang, a TCP reset, a clean close, or a
response cut short. What to answer is decided by the caller (``_fake_server``).

The listening socket is bound at construction but listens only from :meth:`Transport.start`:
until then the kernel refuses connections, which stages a server that comes up late without
any race for the port.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Literal

import attrs

__all__ = ["Action", "Answer", "Incoming", "Transport"]

Action = Literal["respond", "reset", "hang", "partial", "close"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 8 * 1024 * 1024
_CHUNK = 64 * 1024
# A partial response promises this many body bytes and sends fewer.
_PARTIAL_PROMISE = 100
_PARTIAL_SENT = b'{"partial"'


@attrs.frozen
class Incoming:
    """One complete request as read from a connection."""

    connection: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    #: The server clock's reading when the request's head had arrived.
    received_at: float

    def header(self, name: str) -> str | None:
        """A header's value, the name matched without regard to case."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@attrs.frozen(kw_only=True)
class Answer:
    """What to do on the socket for one request."""

    action: Action = "respond"
    status: int = 202
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    stream_size: int | None = None
    hang_seconds: float = 0.0
    keep_alive: bool = True
    #: Called once the action is carried out (the response sent, the hang over).
    then: Callable[[], None] | None = None


class _PeerClosedError(Exception):
    """The peer closed the connection before a whole request arrived."""


class _BadRequestError(Exception):
    """The request cannot be read; answer ``status`` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Transport:
    """A loopback listener with one thread a connection, answering through ``handle``."""

    def __init__(
        self,
        handle: Callable[[Incoming], Answer],
        *,
        port: int,
        clock: Callable[[], float],
        tls: ssl.SSLContext | None,
        name: str,
    ) -> None:
        self._handle = handle
        self._clock = clock
        self._tls = tls
        self._name = name
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self._connections: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._next_connection = 0
        self._listening = False
        self._tls_failures = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self.port: int = self._listener.getsockname()[1]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._listening or self.stopping.is_set():
                return
            self._listening = True
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self._spawn(self._accept_loop, f"{self._name}-accept")

    def close(self) -> None:
        """Stop accepting, cut every open connection and join the threads."""
        self.stopping.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._connections.values())
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._connections)

    @property
    def tls_failures(self) -> int:
        with self._lock:
            return self._tls_failures

    # --- serving -----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                number = self._next_connection
                self._next_connection += 1
                self._connections[number] = sock
            self._spawn(self._serve, f"{self._name}-conn-{number}", sock, number)

    def _serve(self, sock: socket.socket, number: int) -> None:
        buffer = bytearray()
        try:
            if self._tls is not None:
                sock = self._handshake(sock, number)
            while not self.stopping.is_set():
                try:
                    request = self._read_request(sock, number, buffer)
                except _BadRequestError as bad:
                    body = b'{"errors":[{"code":"BAD_REQUEST","message":"%s"}]}' % str(bad).encode()
                    self._respond(sock, Answer(status=bad.status, body=body, keep_alive=False))
                    return
                answer = self._handle(request)
                try:
                    keep = self._carry_out(sock, answer)
                finally:
                    if answer.then is not None:
                        answer.then()
                if not keep:
                    return
        except (_PeerClosedError, OSError):
            return
        finally:
            with self._lock:
                self._connections.pop(number, None)
            with contextlib.suppress(OSError):
                sock.close()

    def _handshake(self, sock: socket.socket, number: int) -> socket.socket:
        assert self._tls is not None
        try:
            wrapped = self._tls.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self._tls_failures += 1
            raise _PeerClosedError from None
        with self._lock:
            self._connections[number] = wrapped
        return wrapped

    def _recv(self, sock: socket.socket, buffer: bytearray) -> None:
        data = sock.recv(_CHUNK)
        if not data:
            raise _PeerClosedError
        buffer.extend(data)

    def _read_request(self, sock: socket.socket, number: int, buffer: bytearray) -> Incoming:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > _MAX_HEAD:
                raise _PeerClosedError
            self._recv(sock, buffer)
        received_at = self._clock()
        head_end = buffer.index(b"\r\n\r\n") + 4
        lines = bytes(buffer[: head_end - 4]).decode("latin-1").split("\r\n")
        del buffer[:head_end]
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise _BadRequestError(400, "malformed request line")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        request = Incoming(number, parts[0], parts[1], headers, b"", received_at)
        if (request.header("Transfer-Encoding") or "").lower() == "chunked":
            body = self._read_chunked(sock, buffer)
        else:
            body = self._read_sized(sock, buffer, request)
        return attrs.evolve(request, body=body)

    def _read_sized(self, sock: socket.socket, buffer: bytearray, request: Incoming) -> bytes:
        declared = request.header("Content-Length")
        if declared is None:
            if request.method in ("GET", "HEAD"):
                return b""
            raise _BadRequestError(411, "Content-Length required")
        try:
            length = int(declared)
        except ValueError:
            raise _BadRequestError(400, "bad Content-Length") from None
        if not 0 <= length <= _MAX_BODY:
            raise _BadRequestError(413, "request body too large")
        while len(buffer) < length:
            self._recv(sock, buffer)
        body = bytes(buffer[:length])
        del buffer[:length]
        return body

    def _read_chunked(self, sock: socket.socket, buffer: bytearray) -> bytes:
        body = bytearray()
        while True:
            while b"\r\n" not in buffer:
                self._recv(sock, buffer)
            line_end = buffer.index(b"\r\n") + 2
            size = int(bytes(buffer[: line_end - 2]).split(b";")[0], 16)
            del buffer[:line_end]
            while len(buffer) < size + 2:
                self._recv(sock, buffer)
            body.extend(buffer[:size])
            del buffer[: size + 2]
            if len(body) > _MAX_BODY:
                raise _BadRequestError(413, "request body too large")
            if size == 0:
                return bytes(body)

    # --- answering ---------------------------------------------------------------------

    def _carry_out(self, sock: socket.socket, answer: Answer) -> bool:
        """Do what ``answer`` says; False when the connection is finished."""
        if answer.action == "respond":
            self._respond(sock, answer)
            return answer.keep_alive
        if answer.action == "hang":
            self._hang(sock, answer.hang_seconds)
        elif answer.action == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif answer.action == "partial":
            head = _head(answer.status, _PARTIAL_PROMISE, {"Content-Type": "application/json"})
            sock.sendall(head + _PARTIAL_SENT)
        return False

    def _hang(self, sock: socket.socket, seconds: float) -> None:
        """Say nothing for ``seconds``, but notice when the client gives up and hangs up."""
        deadline = time.monotonic() + seconds
        sock.settimeout(0.02)
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                try:
                    if not sock.recv(_CHUNK):
                        return
                except TimeoutError:
                    continue
        finally:
            sock.settimeout(None)

    def _respond(self, sock: socket.socket, answer: Answer) -> None:
        headers = {"Content-Type": "application/json", **answer.headers}
        if not answer.keep_alive:
            headers["Connection"] = "close"
        if answer.stream_size is None:
            sock.sendall(_head(answer.status, len(answer.body), headers) + answer.body)
            return
        sock.sendall(_head(answer.status, answer.stream_size, headers))
        filler = b"x" * _CHUNK
        left = answer.stream_size
        while left > 0 and not self.stopping.is_set():
            piece = filler[: min(left, _CHUNK)]
            try:
                sock.sendall(piece)
            except OSError:
                return  # the client stopped reading, as a capped reader should
            left -= len(piece)


def _head(status: int, length: int, headers: Mapping[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {length}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
