"""Packing routed batches into requests, on the exact bytes that go on the wire.

Each batch is serialised once: the batch without its events, and each event on its own.
A batch's bytes, and a request's body, are then assembled by joining those pieces, so sizes
are known exactly without serialising twice and a split costs no re-encoding.

``source_request_id`` rule (exactly once, by construction): a batch without one gets a
UUID (version 8 layout) built from the SHA-256 of its canonical bytes, the primary keys of
its rows, its position when it is a part of a split batch, and — when the batches belong
to a sync with a state — the sync's name and a sequence number the state hands out once
per new batch (:class:`IdSequence`). So

* content sent as a *new* change always gets a new id, even when its bytes equal an
  earlier batch's (a value that flips back is not dropped as a duplicate);
* re-sending pending content keeps its id: a retry or a bisection half reuses the packed
  batch, and a resume or a plan replays the outbox's exact bytes; ids are never derived
  again for content already committed to the outbox.

Without a sequence (``EventsClient.upload``, no state) the id derives from the content
alone, so re-running the same upload is de-duplicated. A user-set id is kept when the
batch goes out whole; when routing or packing splits the batch, every part gets a derived
id whose input includes the user's id.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import orjson

from .._errors import ConfigurationError
from .._mapping.provenance import (
    RowProblem,
    RowRef,
    SourcedBatch,
    Stage,
    events_part,
    slot_setters,
)
from .._mapping.written import WrittenBatch, event_bytes
from .._wire.codec import _json_default, to_dict
from .._wire.values import utf8_text
from .routing import Endpoint, RoutedBatch

__all__ = [
    "MAX_BATCHES_PER_REQUEST",
    "MAX_BATCH_BYTES",
    "MAX_REQUEST_BYTES",
    "IdSequence",
    "PackedBatch",
    "Request",
    "derive_source_request_id",
    "pack",
    "request_body",
]

MAX_BATCHES_PER_REQUEST = 100
MAX_REQUEST_BYTES = 256_000
MAX_BATCH_BYTES = 128_000


@attrs.frozen(kw_only=True)
class PackedBatch:
    """One batch as sent: its id, its exact bytes, and the rows it came from."""

    source_request_id: str
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    sourced: SourcedBatch = attrs.field(repr=False)
    #: Identifies the batch's user for ordering (None: an anonymous batch, no ordering).
    user_key: bytes | None = attrs.field(default=None, repr=False)


_SET_ID, _SET_BODY, _SET_SOURCED, _SET_USER_KEY = slot_setters(
    PackedBatch, "source_request_id", "body", "sourced", "user_key"
)


def _packed_batch(
    source_request_id: str, body: bytes, sourced: SourcedBatch, user_key: bytes | None
) -> PackedBatch:
    """``PackedBatch(...)`` of these, by its slots (``slot_setters``)."""
    packed: PackedBatch = object.__new__(PackedBatch)
    _SET_ID(packed, source_request_id)
    _SET_BODY(packed, body)
    _SET_SOURCED(packed, sourced)
    _SET_USER_KEY(packed, user_key)
    return packed


@attrs.frozen(kw_only=True)
class Request:
    """One POST: the endpoint, the exact body, and the batches it holds (in body order)."""

    endpoint: Endpoint
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    batches: tuple[PackedBatch, ...]

    @classmethod
    def of(cls, endpoint: Endpoint, batches: Sequence[PackedBatch]) -> Request:
        """A request holding ``batches``; its body is assembled from their bytes."""
        return cls(endpoint=endpoint, body=request_body(batches), batches=tuple(batches))


def request_body(batches: Sequence[PackedBatch]) -> bytes:
    """The JSON array of the batches' bytes."""
    return b"[" + b",".join(batch.body for batch in batches) + b"]"


def derive_source_request_id(
    canonical: bytes, *, scope: str | None = None, sequence: int | None = None
) -> str:
    """A UUID-shaped id from the SHA-256 of a batch's canonical bytes.

    With ``sequence`` (a number a sync's state hands out once per new batch) and its
    ``scope`` (the sync's name), equal bytes sent as two different changes get two ids.
    """
    hashed = hashlib.sha256(canonical)
    if sequence is not None:
        hashed.update(_sequence_suffix(scope, sequence))
    return _uuid_text(hashed)


def _sequence_suffix(scope: str | None, sequence: int) -> bytes:
    scope_bytes = (scope or "").encode("utf-8", "surrogatepass")
    return b"\x00sync:%d:%s\x00seq:%d" % (len(scope_bytes), scope_bytes, sequence)


def _uuid_text(hashed: Any) -> str:
    """The UUID-shaped id of a SHA-256 (see :func:`derive_source_request_id`)."""
    # The first 16 bytes in hex, formatted by hand (uuid.UUID() costs more than the hash):
    # byte 6's high half is the version (8: custom, hash-based), byte 8's two high bits the
    # RFC 4122 variant (10).
    text = hashed.hexdigest()
    variant = _VARIANT_DIGITS[text[16]]
    return f"{text[:8]}-{text[8:12]}-8{text[13:16]}-{variant}{text[17:20]}-{text[20:32]}"


#: A hex digit with its two high bits set to the RFC 4122 variant (10).
_VARIANT_DIGITS = {digit: "89ab"[int(digit, 16) & 0x3] for digit in "0123456789abcdef"}


@attrs.define
class IdSequence:
    """The sequence numbers of one sync's new batches: ``next`` is the first unused one.

    The state stores ``next`` with every outbox request, so a number is never handed
    out twice for a sync (numbers of batches that never reached the outbox are skipped).
    """

    scope: str
    next: int = 0

    def take(self) -> int:
        number = self.next
        self.next += 1
        return number


def _model_bytes(value: Any) -> bytes:
    """JSON bytes of models (and of plain data holding them), as ``dumps`` writes them."""
    return orjson.dumps(value, default=_json_default)


def _written(value: Any) -> Any:
    """A value as written: a nested model becomes its dict, so an empty one is falsy."""
    if value is None or isinstance(value, (str, int, dict)):
        return value
    return _json_default(value)


class _Pieces:
    """A batch cut into its serialised header (everything but the events) and events.

    The events are written as one JSON array; each event's own bytes are written only
    when a batch is too large and must be split.
    """

    __slots__ = (
        "_each",
        "_written_events",
        "events_json",
        "header_rest",
        "sourced",
        "user_id",
        "user_key",
    )

    def __init__(self, sourced: SourcedBatch) -> None:
        # The codec's hook gives a model's written fields, nested models left as they are
        # (orjson asks it again for those), so no tree is built. It may hand back the
        # model's own storage: copy before popping.
        self.sourced = sourced
        self._each: list[bytes] | None = None
        self._written_events: Sequence[Any] | None = None
        self.user_id: str | None = None
        if isinstance(sourced, WrittenBatch) and sourced.header_json is not None:
            # Header and events written already: nothing to build, the pieces are joined.
            self._each = (
                list(sourced.blobs)
                if sourced.all_written
                else [event_bytes(event) for event in sourced.blobs]
            )
            self.events_json = _array(self._each) if self._each else None
            # The engine never sets a batch's own id (user_id stays None).
            self.header_rest = sourced.header_json[1:]
            self.user_key = sourced.user_key
            return
        if isinstance(sourced, WrittenBatch):
            # Events written as bytes already (orjson's compact array is the items joined
            # by commas): the header is the batch without them.
            document: dict[str, Any] = dict(_json_default(sourced.header))
            self._each = [event_bytes(event) for event in sourced.blobs]
            self.events_json = _array(self._each) if self._each else None
        else:
            document = dict(_json_default(sourced.batch))
            self._written_events = document.pop("events", None)
            self.events_json = (
                None if self._written_events is None else _model_bytes(self._written_events)
            )
        self.user_id = document.pop("source_request_id", None)
        header = _model_bytes(document)  # never "{}": environment is always written
        self.header_rest = header[1:]  # '"environment":...}'
        identity = [
            _written(document.get(key)) for key in ("mpid", "mp_deviceid", "user_identities")
        ]
        if not any(identity):
            identity = [_written(document.get("device_info"))]
        self.user_key = _model_bytes(identity) if any(identity) else None

    def each_event(self) -> list[bytes]:
        """Every event's own bytes, in order (written on first use: only splits need them)."""
        if self._each is None:
            self._each = [_model_bytes(event) for event in self._written_events or ()]
        return self._each

    def body(self, events_json: bytes | None, source_request_id: str | None) -> bytes:
        prefix = b"{"
        if source_request_id is not None:
            prefix += b'"source_request_id":' + orjson.dumps(source_request_id) + b","
        if events_json is not None:
            prefix += b'"events":' + events_json + b","
        return prefix + self.header_rest

    def size(self, events_json_bytes: int | None, id_bytes: int) -> int:
        return _batch_size(len(self.header_rest), events_json_bytes, id_bytes)


def _batch_size(rest_bytes: int, events_json_bytes: int | None, id_bytes: int) -> int:
    """The bytes of ``_Pieces.body``: "{", the id (``id_bytes`` quoted, 0 for none), the
    events' array (None for none) and the header's rest, braces and keys counted exactly."""
    size = 1 + rest_bytes
    if id_bytes:
        size += len(b'"source_request_id":,') + id_bytes
    if events_json_bytes is not None:
        size += len(b'"events":,') + events_json_bytes
    return size


def _array(items: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


_UUID_JSON_BYTES = 38  # a quoted 36-character UUID
#: What a derived id adds to a batch's canonical bytes: its key and value, and a comma.
_ID_FIELD_BYTES = len(b'"source_request_id":,') + _UUID_JSON_BYTES


def _packed(
    pieces: _Pieces,
    events_json: bytes | None,
    sourced: SourcedBatch,
    whole: bool,
    part: int | None = None,
    *,
    ids: IdSequence | None = None,
) -> PackedBatch:
    if pieces.user_id is not None and whole:
        source_request_id = pieces.user_id
    else:
        canonical = pieces.body(events_json, pieces.user_id)
        source_request_id = _derived_id(canonical, sourced, part, ids)
    return _packed_batch(
        source_request_id, pieces.body(events_json, source_request_id), sourced, pieces.user_key
    )


def _derived_id(
    canonical: bytes, sourced: SourcedBatch, part: int | None, ids: IdSequence | None
) -> str:
    """:func:`derive_source_request_id` of a batch's canonical bytes, its rows' primary keys
    and, for a part of a split batch, its position."""
    hashed = hashlib.sha256(canonical)
    keys = sourced._primary_keys()
    if keys:
        # Two rows may map to identical batches; their primary keys keep the ids apart.
        hashed.update(b"\x00keys:" + orjson.dumps(keys))
    if part is not None:
        # Parts of one batch may hold identical events; the position keeps them apart.
        hashed.update(b"\x00part:%d" % part)
    if ids is not None:
        hashed.update(_sequence_suffix(ids.scope, ids.take()))
    return _uuid_text(hashed)


def _packed_written(
    sourced: WrittenBatch, max_batch_bytes: int, ids: IdSequence | None
) -> PackedBatch | None:
    """A batch the Arrow engine wrote whole (header and every event as bytes), packed as
    :func:`_split` packs it, without its pieces; None when it must be split for size or
    holds an event model (then :func:`_split` packs it).

    The engine never sets a batch's own id, so the id is always derived.
    """
    header_json = sourced.header_json
    assert header_json is not None
    if not sourced.all_written:
        return None
    blobs = sourced.blobs
    # The canonical bytes (no id), as _Pieces.body writes them: "{", the events, the rest.
    if blobs:
        canonical = b"".join((b'{"events":[', b",".join(blobs), b"],", header_json[1:]))
    else:
        canonical = header_json
    if len(canonical) + _ID_FIELD_BYTES > max_batch_bytes:
        return None
    source_request_id = _derived_id(canonical, sourced, None, ids)
    return _packed_batch(
        source_request_id,
        b"".join((b'{"source_request_id":"', source_request_id.encode(), b'",', canonical[1:])),
        sourced,
        sourced.user_key,
    )


def _split(
    routed: RoutedBatch, max_batch_bytes: int, ids: IdSequence | None = None
) -> Iterator[PackedBatch | RowProblem]:
    """Serialise one routed batch, splitting it by events when it is too large."""
    sourced = routed.sourced
    try:
        pieces = _Pieces(sourced)
    except orjson.JSONEncodeError:
        # Values the models let through but JSON cannot carry (an int beyond 64 bits, a
        # lone surrogate): the rows holding one are rejected here rather than ending the run.
        yield from _split_unwritable(routed, max_batch_bytes, ids)
        return
    user_id_bytes = 0 if pieces.user_id is None else len(orjson.dumps(pieces.user_id))
    keeps_user_id = routed.whole and pieces.user_id is not None
    events_json = pieces.events_json
    whole_size = pieces.size(
        None if events_json is None else len(events_json),
        user_id_bytes if keeps_user_id else _UUID_JSON_BYTES,
    )
    if whole_size <= max_batch_bytes:
        yield _packed(pieces, events_json, sourced, routed.whole, ids=ids)
        return
    events = [] if events_json is None else pieces.each_event()
    # Parts always get derived (UUID) ids, so the overhead of a part is fixed.
    overhead = pieces.size(len(b"[]"), _UUID_JSON_BYTES)
    if not events or overhead > max_batch_bytes:
        for row in sourced.rows:
            yield RowProblem(
                row=row,
                stage=Stage.PACKING,
                reason=(
                    f"the batch's user-level fields alone take {overhead:,} bytes; "
                    f"a batch may hold at most {max_batch_bytes:,}"
                ),
            )
        return
    part: list[int] = []
    part_size = overhead
    part_number = 0

    def emit(indexes: list[int], number: int) -> PackedBatch:
        return _packed(
            pieces,
            _array([events[i] for i in indexes]),
            events_part(sourced, indexes),
            False,
            number,
            ids=ids,
        )

    for index, event in enumerate(events):
        cost = len(event) + (1 if part else 0)
        if overhead + len(event) > max_batch_bytes:
            yield RowProblem(
                row=sourced.event_rows[index],
                stage=Stage.PACKING,
                reason=(
                    f"this event alone makes a {overhead + len(event):,}-byte batch; "
                    f"a batch may hold at most {max_batch_bytes:,} bytes"
                ),
                field=f"events[{index}]",
            )
            continue
        if part and part_size + cost > max_batch_bytes:
            yield emit(part, part_number)
            part_number += 1
            part, part_size = [], overhead
            cost = len(event)
        part.append(index)
        part_size += cost
    if part:
        yield emit(part, part_number)


def _split_unwritable(
    routed: RoutedBatch, max_batch_bytes: int, ids: IdSequence | None
) -> Iterator[PackedBatch | RowProblem]:
    """A batch JSON cannot carry whole: each row whose event holds the value is rejected,
    naming its field, and the rest of the batch is packed. A value in the user-level fields
    (an identity, a user attribute) is every row's: all of them are rejected."""
    sourced = routed.sourced
    header = events_part(sourced, [])
    try:
        _Pieces(header)
    except orjson.JSONEncodeError as exc:
        yield from _all_rejected(
            sourced,
            f"the batch's user-level fields cannot be written as JSON: {exc}",
            _unwritable_path(to_dict(header.batch)),
        )
        return
    refused: dict[RowRef, RowProblem] = {}
    for index, row in enumerate(sourced.event_rows):
        if row in refused:
            continue
        alone = events_part(sourced, [index])
        try:
            _Pieces(alone)
        except orjson.JSONEncodeError as exc:
            found = _unwritable_path(to_dict(alone.batch).get("events"))
            refused[row] = RowProblem(
                row=row,
                stage=Stage.PACKING,
                reason=f"the event cannot be written as JSON: {exc}",
                # The path inside the event, as the mapping names fields.
                field=None if found is None else _EVENT_PREFIX.sub("", found),
            )
    if not refused:
        # Every event written alone, not the whole (never seen): nothing to single out.
        yield from _all_rejected(sourced, "the batch cannot be written as JSON", None)
        return
    yield from refused.values()
    # A refused row's other events go with it: a row is sent whole or not at all.
    kept = [i for i, row in enumerate(sourced.event_rows) if row not in refused]
    rest = events_part(sourced, kept)
    if rest.rows:
        yield from _split(attrs.evolve(routed, sourced=rest, whole=False), max_batch_bytes, ids)


def _all_rejected(sourced: SourcedBatch, reason: str, field: str | None) -> Iterator[RowProblem]:
    for row in sourced.rows:
        yield RowProblem(row=row, stage=Stage.PACKING, reason=reason, field=field)


#: What :func:`_unwritable_path` puts before a path inside the one event it is given.
_EVENT_PREFIX = re.compile(r"^\[0\]\.(data\.)?")


def _unwritable_path(value: Any, path: str = "") -> str | None:
    """The path of the first value in ``value`` (plain data) that JSON cannot carry: text
    with a lone surrogate, an integer beyond 64 bits, a type orjson does not write (a float
    subclass such as ``numpy.float64``); None when there is none."""
    if isinstance(value, str):
        return None if utf8_text(value) else path
    if value is None or isinstance(value, bool) or value.__class__ is float:
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**64 else path
    if isinstance(value, dict):
        for key, item in value.items():
            # A name JSON cannot carry is shown escaped: the path itself is written out.
            name = key.encode("utf-8", "backslashreplace").decode() if isinstance(key, str) else key
            inner = f"{path}.{name}" if path else str(name)
            if key.__class__ is not str or not utf8_text(key):
                return inner
            found = _unwritable_path(item, inner)
            if found is not None:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _unwritable_path(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return path


def pack(
    routed: Iterable[RoutedBatch | RowProblem],
    *,
    max_batches: int = MAX_BATCHES_PER_REQUEST,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    ids: IdSequence | None = None,
) -> Iterator[Request | RowProblem]:
    """Pack routed batches into requests, lazily and deterministically.

    One request per endpoint is filled at a time, in input order, and sent on as soon as the
    next batch would break a limit; so batches of one user keep their order within each
    endpoint. Row problems from earlier stages pass through unchanged. Inconsistent limits
    raise :class:`ConfigurationError` at the call, not at the first batch. ``ids`` (a sync's
    :class:`IdSequence`) makes every new batch's id unique to this change.
    """
    check_packing_limits(max_batches, max_request_bytes, max_batch_bytes)
    return _pack(routed, max_batches, max_request_bytes, max_batch_bytes, ids)


def check_packing_limits(max_batches: int, max_request_bytes: int, max_batch_bytes: int) -> None:
    """Raise :class:`ConfigurationError` unless a batch of the largest size fits a request."""
    if max_batches < 1:
        msg = f"max_batches must be at least 1, got {max_batches}"
        raise ConfigurationError(msg)
    if max_batch_bytes < 1 or max_batch_bytes + 2 > max_request_bytes:
        msg = (
            f"max_batch_bytes ({max_batch_bytes}) must be positive and leave room for the "
            f"request's brackets within max_request_bytes ({max_request_bytes})"
        )
        raise ConfigurationError(msg)


def _pack(
    routed: Iterable[RoutedBatch | RowProblem],
    max_batches: int,
    max_request_bytes: int,
    max_batch_bytes: int,
    ids: IdSequence | None = None,
) -> Iterator[Request | RowProblem]:
    open_batches: dict[Endpoint, list[PackedBatch]] = {}
    open_sizes: dict[Endpoint, int] = {}
    for item in routed:
        if isinstance(item, RowProblem):
            yield item
            continue
        endpoint = item.endpoint
        sourced = item.sourced
        whole = (
            _packed_written(sourced, max_batch_bytes, ids)
            if sourced.__class__ is WrittenBatch and sourced.header_json is not None
            else None
        )
        for packed in (whole,) if whole is not None else _split(item, max_batch_bytes, ids):
            if isinstance(packed, RowProblem):
                yield packed
                continue
            current = open_batches.setdefault(endpoint, [])
            size = open_sizes.get(endpoint, 2)
            cost = len(packed.body) + (1 if current else 0)
            if current and (len(current) >= max_batches or size + cost > max_request_bytes):
                yield Request.of(endpoint, current)
                current = open_batches[endpoint] = []
                size, cost = 2, len(packed.body)
            current.append(packed)
            open_sizes[endpoint] = size + cost
    for endpoint, batches in open_batches.items():
        if batches:
            yield Request.of(endpoint, batches)
