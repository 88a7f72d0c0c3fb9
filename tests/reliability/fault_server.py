"""A loopback HTTP/1.1 server that misbehaves on purpose, one scripted request at a time.

It speaks just enough HTTP/1.1 to take the client's POSTs (keep-alive, Content-Length or
chunked bodies) and answers each request with the next scripted :data:`Action`: a status
with headers, a silent hang after reading the body, a TCP reset, a truncated response, or a
body of any size streamed in small chunks. Every complete request is recorded with its raw
bytes, the time it arrived (by an injectable clock, so a fake clock shared with the client
measures the client's waits exactly) and the ``source_request_id`` of each batch it holds.

The listening socket is bound when the server is built but only listens on :meth:`start`;
until then a connection to :attr:`url` is refused by the kernel, which is how a server
"coming up late" is staged without any race for the port.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeAlias

__all__ = [
    "Action",
    "FaultServer",
    "Hang",
    "Partial",
    "PerBody",
    "RecordedRequest",
    "Reply",
    "Reset",
    "ServedResponse",
    "iter_ids",
    "split_json_array",
]

_MAX_HEAD = 64 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Reply:
    """Answer with ``status``; ``stream_size`` streams that many filler bytes instead of ``body``."""

    status: int = 202
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0
    stream_size: int | None = None
    close: bool = False


@dataclass(frozen=True)
class Hang:
    """Read the whole request, then say nothing for ``seconds`` and close the connection."""

    seconds: float = 2.0


@dataclass(frozen=True)
class Reset:
    """Read the whole request, then abort the connection with a TCP RST (SO_LINGER 0)."""


@dataclass(frozen=True)
class Partial:
    """Send ``raw`` (a response cut short) and close: by default a 202 promising 100 bytes, sending 10."""

    raw: bytes = b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n0123456789"


Action: TypeAlias = Reply | Hang | Reset | Partial
Script: TypeAlias = Sequence[Action] | Callable[["RecordedRequest"], Action] | None


@dataclass(frozen=True)
class RecordedRequest:
    """One complete request as the server read it."""

    index: int
    connection: int
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    raw: bytes
    started_at: float
    received_at: float

    @property
    def batches(self) -> list[Any]:
        """The JSON batches in the body (a bulk array, or one object as a list of one)."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return []
        if isinstance(doc, list):
            return doc
        return [doc]

    @property
    def source_request_ids(self) -> list[str]:
        """The ``source_request_id`` of every batch in the body, in order."""
        return [
            b["source_request_id"]
            for b in self.batches
            if isinstance(b, dict) and isinstance(b.get("source_request_id"), str)
        ]

    @property
    def batch_sizes(self) -> list[int]:
        """The exact byte length of every batch as it appears in the body."""
        return [len(part) for part in split_json_array(self.body)]


@dataclass(frozen=True)
class ServedResponse:
    """What the server did for one request, and when (by its clock)."""

    request_index: int
    kind: str
    status: int | None
    at: float


def split_json_array(body: bytes) -> list[bytes]:
    """The raw bytes of each top-level element of a JSON array (a non-array is one element)."""
    data = body.strip()
    if not data.startswith(b"["):
        return [data] if data else []
    parts: list[bytes] = []
    depth = 0
    in_string = False
    escaped = False
    start = 1
    for i in range(1, len(data)):
        c = data[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == 0x5C:  # backslash
                escaped = True
            elif c == 0x22:
                in_string = False
            continue
        if c == 0x22:
            in_string = True
        elif c in (0x7B, 0x5B):
            depth += 1
        elif c in (0x7D, 0x5D):
            if depth == 0:  # the closing bracket of the array
                element = data[start:i].strip()
                if element:
                    parts.append(element)
                break
            depth -= 1
        elif c == 0x2C and depth == 0:
            parts.append(data[start:i].strip())
            start = i + 1
    return parts


class _PeerClosedError(Exception):
    """The peer closed the connection before a whole request arrived."""


class FaultServer:
    """A scripted, recording loopback HTTP server (see the module docstring).

    ``script`` is a sequence of actions taken by requests in arrival order (then
    ``default``), or a function of the recorded request returning its action.
    ``clock`` timestamps requests and responses; pass the fake clock the client sleeps on.
    """

    def __init__(
        self,
        script: Script = None,
        *,
        default: Action | None = None,
        clock: Callable[[], float] = time.monotonic,
        start: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._script = script
        self._tls = tls
        self.tls_failures = 0
        self._default: Action = default if default is not None else Reply(202)
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._responses: list[ServedResponse] = []
        self._connections: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._next_connection = 0
        self._connections_total = 0
        self._listening = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        if start:
            self.start()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin listening (connections were refused until now)."""
        with self._lock:
            if self._listening or self._stopping.is_set():
                return
            self._listening = True
        self._listener.listen(64)
        self._listener.settimeout(0.05)
        self._spawn(self._accept_loop, "fault-server-accept")

    def start_later(self, seconds: float) -> None:
        """Begin listening after ``seconds`` of real time."""
        timer = threading.Timer(seconds, self.start)
        timer.name = "fault-server-timer"
        timer.daemon = True
        timer.start()
        with self._lock:
            self._threads.append(timer)

    def close(self) -> None:
        """Stop accepting, cut every open connection and join the server's threads."""
        self._stopping.set()
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

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what the server saw ----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every complete request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def responses(self) -> list[ServedResponse]:
        """What was done for each request, in order."""
        with self._lock:
            return list(self._responses)

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed by either side."""
        with self._lock:
            return len(self._connections)

    @property
    def connections_total(self) -> int:
        """Connections accepted since the server started."""
        with self._lock:
            return self._connections_total

    def wait_for_open_connections(self, at_most: int = 0, timeout: float = 2.0) -> int:
        """Wait (real time, bounded) until the server has seen clients hang up; returns the count."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.open_connections
            if count <= at_most or time.monotonic() >= deadline:
                return count
            time.sleep(0.01)

    def id_counts(self) -> Counter[str]:
        """How many times each ``source_request_id`` reached the server."""
        return Counter(i for r in self.requests for i in r.source_request_ids)

    def accepted_id_counts(self) -> Counter[str]:
        """How many times each ``source_request_id`` was answered with a 2xx."""
        done = {
            r.request_index
            for r in self.responses
            if r.kind == "reply" and r.status is not None and 200 <= r.status < 300
        }
        return Counter(i for r in self.requests if r.index in done for i in r.source_request_ids)

    # -- serving ----------------------------------------------------------------------

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
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
                self._connections_total += 1
                self._connections[number] = sock
            self._spawn(self._serve, f"fault-server-conn-{number}", sock, number)

    def _serve(self, sock: socket.socket, number: int) -> None:
        buffer = bytearray()
        try:
            if self._tls is not None:
                try:
                    sock = self._tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    with self._lock:
                        self.tls_failures += 1
                    raise _PeerClosedError from None
                with self._lock:
                    self._connections[number] = sock
            while not self._stopping.is_set():
                request = self._read_request(sock, number, buffer)
                if not self._act(sock, request):
                    return
        except (_PeerClosedError, OSError):
            return
        finally:
            with self._lock:
                self._connections.pop(number, None)
            with contextlib.suppress(OSError):
                sock.close()

    def _recv(self, sock: socket.socket, buffer: bytearray) -> None:
        data = sock.recv(_CHUNK)
        if not data:
            raise _PeerClosedError
        buffer.extend(data)

    def _read_request(self, sock: socket.socket, number: int, buffer: bytearray) -> RecordedRequest:
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > _MAX_HEAD:
                raise _PeerClosedError
            self._recv(sock, buffer)
        started_at = self._clock()
        head_end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:head_end])
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        del buffer[:head_end]
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, raw_body = self._read_chunked(sock, buffer)
        else:
            length = int(headers.get("content-length", "0"))
            while len(buffer) < length:
                self._recv(sock, buffer)
            body = bytes(buffer[:length])
            raw_body = body
            del buffer[:length]
        with self._lock:
            request = RecordedRequest(
                index=len(self._requests),
                connection=number,
                method=method,
                path=path,
                headers=headers,
                body=body,
                raw=head + raw_body,
                started_at=started_at,
                received_at=self._clock(),
            )
            self._requests.append(request)
        return request

    def _read_chunked(self, sock: socket.socket, buffer: bytearray) -> tuple[bytes, bytes]:
        body = bytearray()
        raw = bytearray()
        while True:
            while b"\r\n" not in buffer:
                self._recv(sock, buffer)
            line_end = buffer.index(b"\r\n") + 2
            size = int(bytes(buffer[: line_end - 2]).split(b";")[0], 16)
            raw.extend(buffer[:line_end])
            del buffer[:line_end]
            while len(buffer) < size + 2:
                self._recv(sock, buffer)
            body.extend(buffer[:size])
            raw.extend(buffer[: size + 2])
            del buffer[: size + 2]
            if size == 0:
                return bytes(body), bytes(raw)

    def _next_action(self, request: RecordedRequest) -> Action:
        script = self._script
        if script is None:
            return self._default
        if callable(script):
            return script(request)
        return script[request.index] if request.index < len(script) else self._default

    def _served(self, request: RecordedRequest, kind: str, status: int | None) -> None:
        with self._lock:
            self._responses.append(ServedResponse(request.index, kind, status, self._clock()))

    def _act(self, sock: socket.socket, request: RecordedRequest) -> bool:
        """Carry out the request's action; False when the connection is finished."""
        action = self._next_action(request)
        if isinstance(action, Hang):
            self._served(request, "hang", None)
            self._hang(sock, action.seconds)
            return False
        if isinstance(action, Reset):
            self._served(request, "reset", None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if isinstance(action, Partial):
            self._served(request, "partial", None)
            sock.sendall(action.raw)
            return False
        if action.delay:
            self._stopping.wait(action.delay)
        # Stamped before sending: the client may act on the answer before this thread resumes.
        self._served(request, "reply", action.status)
        self._send_reply(sock, action)
        return not action.close

    def _hang(self, sock: socket.socket, seconds: float) -> None:
        """Say nothing for ``seconds``, but notice when the client gives up and hangs up."""
        deadline = time.monotonic() + seconds
        sock.settimeout(0.02)
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                try:
                    if not sock.recv(_CHUNK):
                        return
                except TimeoutError:
                    continue
        finally:
            sock.settimeout(None)

    def _send_reply(self, sock: socket.socket, reply: Reply) -> None:
        try:
            reason = HTTPStatus(reply.status).phrase
        except ValueError:
            reason = "Unknown"
        length = reply.stream_size if reply.stream_size is not None else len(reply.body)
        head = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {length}"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        if reply.close:
            head.append("Connection: close")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if reply.stream_size is None:
            sock.sendall(reply.body)
            return
        filler = b"x" * _CHUNK
        left = reply.stream_size
        while left > 0 and not self._stopping.is_set():
            piece = filler[: min(left, _CHUNK)]
            try:
                sock.sendall(piece)
            except OSError:
                return  # the client stopped reading, as a capped reader should
            left -= len(piece)


def iter_ids(requests: Sequence[RecordedRequest]) -> Iterator[str]:
    """Every ``source_request_id`` in ``requests``, repeats included."""
    for request in requests:
        yield from request.source_request_ids


class PerBody:
    """A script keyed by body: the n-th arrival of a given body gets ``sequence[n]``.

    Retries resend the same bytes, so this scripts each request's fate however the
    client's workers interleave.
    """

    def __init__(self, sequence: Sequence[Action], default: Action | None = None) -> None:
        self._sequence = list(sequence)
        self._default: Action = default if default is not None else Reply(202)
        self._seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Action:
        with self._lock:
            n = self._seen[request.body]
            self._seen[request.body] += 1
        return self._sequence[n] if n < len(self._sequence) else self._default
