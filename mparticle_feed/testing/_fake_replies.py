"""What the fake server is told to answer and what it records (test kit, outside the stages).

:class:`Reply` scripts one answer (a status sequence, ``Retry-After``, a slow answer, a reset,
a hang, a response cut short, a huge body); :class:`PerBody` scripts each distinct body's
fate however a client's workers interleave; :class:`ReceivedRequest` is one request as the
server saw it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from typing import Literal

import attrs

from .._errors import ConfigurationError
from .._wire.models import Batch
from ._fake_http import Action

__all__ = ["Outcome", "PerBody", "ReceivedRequest", "Reply", "split_json_array"]

#: What became of a request: answered, one of the socket faults, or still being handled.
Outcome = Literal["answered", "reset", "close", "hang", "partial", "pending"]

_ACTIONS = frozenset({"respond", "reset", "hang", "partial", "close"})


def _check_action(_: object, __: object, value: str) -> None:
    if value not in _ACTIONS:
        msg = f"Reply(action={value!r}): expected one of {sorted(_ACTIONS)}"
        raise ConfigurationError(msg)


def _check_non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value < 0:
        msg = f"Reply({attribute.name}={value!r}) must not be negative"
        raise ConfigurationError(msg)


@attrs.frozen(kw_only=True)
class Reply:
    """One scripted answer, used for a request instead of the normal behaviour.

    ``status=None`` keeps the normal (validating) behaviour, which lets a reply only add a
    ``delay`` (a slow server). ``action`` is what happens on the socket once the body was
    read:

    - ``"respond"``: answer ``status`` (with ``retry_after``, ``headers`` and ``body``; with
      ``stream_size``, a body of that many filler bytes streamed in chunks instead, to test
      a client that caps what it reads); ``keep_alive=False`` closes the connection after
      (also after the normal answer, with ``status=None``);
    - ``"reset"``: close the connection with a TCP reset, answering nothing;
    - ``"close"``: close the connection cleanly, answering nothing;
    - ``"hang"``: answer nothing for ``hang_seconds`` (less if the client hangs up or the
      server closes), then close;
    - ``"partial"``: send the status line and headers of ``status`` (202 when None)
      promising 100 body bytes, send 10, then close.
    """

    status: int | None = None
    retry_after: str | float | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes | None = None
    delay: float = attrs.field(default=0.0, validator=_check_non_negative)
    action: Action = attrs.field(default="respond", validator=_check_action)
    hang_seconds: float = attrs.field(default=10.0, validator=_check_non_negative)
    stream_size: int | None = None
    keep_alive: bool = True

    def __attrs_post_init__(self) -> None:
        if self.stream_size is not None and (self.status is None or self.stream_size < 0):
            msg = f"Reply(stream_size={self.stream_size!r}) needs a status and a size >= 0"
            raise ConfigurationError(msg)


@attrs.frozen(kw_only=True)
class ReceivedRequest:
    """One request as the server saw it. The Authorization header is redacted."""

    #: The request's place in arrival order (0 for the first).
    index: int
    #: Which connection it came on (numbered from 0 as they were accepted).
    connection: int
    method: str
    path: str
    #: The request's headers, looked up without regard to case.
    headers: Mapping[str, str]
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    #: The parsed batches, when the body was a valid document.
    batches: tuple[Batch, ...] | None = attrs.field(repr=False)
    #: The API key the request authenticated as (None when the header was missing or bad).
    api_key: str | None
    #: The server clock's reading when the request's headers had arrived.
    received_at: float
    #: The status answered; None when there was no answer (a socket fault) or not yet.
    status: int | None
    accepted: bool
    #: What became of the request ("pending" while a responder or a delay still holds it).
    outcome: Outcome = "answered"
    #: The server clock's reading when the answer (or the fault) began; None while pending.
    answered_at: float | None = None

    @property
    def source_request_ids(self) -> list[str | None]:
        """The ``source_request_id`` of every batch, in body order."""
        return [batch.source_request_id for batch in self.batches or ()]

    @property
    def batch_sizes(self) -> list[int]:
        """The exact byte length of every batch as it appears in the body."""
        return [len(part) for part in split_json_array(self.body)]


class PerBody:
    """A responder keyed by body: the n-th arrival of each distinct body gets ``replies[n]``.

    A retry resends the same bytes, so this scripts every request's fate however the
    client's workers interleave: ``FakeEventsServer(responder=PerBody(503))`` answers each
    request's first attempt 503 and judges its retry normally. An int is a bare status.
    """

    def __init__(self, *replies: Reply | int) -> None:
        self._replies = [Reply(status=r) if isinstance(r, int) else r for r in replies]
        self._seen: Counter[bytes] = Counter()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PerBody({', '.join(map(repr, self._replies))})"

    def __call__(self, request: ReceivedRequest) -> Reply | None:
        with self._lock:
            arrival = self._seen[request.body]
            self._seen[request.body] += 1
        return self._replies[arrival] if arrival < len(self._replies) else None


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
            elif c == 0x22:  # the closing quote
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
