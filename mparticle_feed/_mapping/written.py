"""Mapping stage: batches whose events are carried as written JSON data, without models.

The Arrow engine writes a custom event straight from its columns as the plain data the
codec writes for it (``{"event_type": ..., "data": {...}}``, keys in the codec's order,
values the model's converters give). A :class:`WrittenBatch` carries those events with the
batch's user part (one :class:`Batch` without events, built once per batch); routing,
packing and the state differ read the events as data, and orjson writes them as it writes
the models, so every byte, id and hash is the one the model path makes.

A :class:`WrittenBatch` is a :class:`SourcedBatch`: code that reads ``.batch`` gets the
model batch, built on first use from the same data (each event's data is its model's
keyword arguments, the converters' outputs, which the converters give back unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, cast, overload

import attrs
import orjson

from .._errors import ModelError
from .._wire.codec import _json_default, from_dict, kept_bytes
from .._wire.commerce import ProductAction
from .._wire.common import UserIdentities
from .._wire.enums import CustomEventType, ProductActionType
from .._wire.models import Batch, CommerceEvent, CustomEvent
from .provenance import RowRef, RowSpan, SourcedBatch, slot_setters

__all__ = [
    "CUSTOM_EVENT_TYPE",
    "HeaderParts",
    "WrittenBatch",
    "WrittenEvents",
    "WrittenField",
    "append_unpaired",
    "event_bytes",
    "event_data",
    "paired",
    "unpaired",
    "write_events",
    "written_event_type",
    "written_order",
]

#: Events with every field the Arrow engine writes as data: the codec's hook gives the order
#: of their keys, and what it writes for ``event_type``.
_PROBES = {
    CustomEvent: _json_default(
        CustomEvent(
            event_name="probe",
            custom_event_type=CustomEventType.OTHER,
            timestamp_unixtime_ms=0,
            source_message_id="probe",
            session_uuid="00000000-0000-4000-8000-000000000000",
            custom_attributes={"probe": 0},
            custom_flags={"probe": 0},
        )
    ),
    CommerceEvent: _json_default(
        CommerceEvent(
            event_name="probe",
            timestamp_unixtime_ms=0,
            source_message_id="probe",
            session_uuid="00000000-0000-4000-8000-000000000000",
            custom_attributes={"probe": 0},
            custom_flags={"probe": 0},
            product_action=ProductAction(action=ProductActionType.PURCHASE),
        )
    ),
}
CUSTOM_EVENT_TYPE: Any = _PROBES[CustomEvent]["event_type"]
_ORDERS = {
    cls: {key: rank for rank, key in enumerate(probe["data"])} for cls, probe in _PROBES.items()
}


#: A key of a written custom event: its name, the attribute names (None for a scalar), the
#: values per row (a scalar's) or per attribute (a map's).
WrittenField = tuple[str, "tuple[str, ...] | None", list[Any]]


def written_order(cls: type[Any] = CustomEvent) -> dict[str, int]:
    """The rank of each key of an event's ``data`` in what the codec writes (custom and
    commerce events: the classes the Arrow engine writes)."""
    return _ORDERS[cls]


def written_event_type(cls: type[Any]) -> Any:
    """What the codec writes for the ``event_type`` of a ``cls`` event."""
    return _PROBES[cls]["event_type"]


def write_events(
    fields: list[WrittenField], flagged: set[int], event_type: Any = CUSTOM_EVENT_TYPE
) -> list[bytes | None]:
    """Each row's event as the codec writes it, from the columns, without a model (None for
    the rows in ``flagged``, and where JSON cannot carry a value). ``event_type`` is what
    the codec writes for the event's class.

    An attribute map's dict is built for its row only and dropped once written: few
    containers live at once, so the garbage collector has little to walk.
    """
    dumps = orjson.dumps
    out: list[bytes | None] = []
    append = out.append
    dense = _dense(fields)
    if dense is not None:
        # Every row has the same keys: its data is zipped from the columns, in C.
        keys, rows = dense
        for index, row in enumerate(zip(*rows, strict=True)):
            if index in flagged:
                append(None)
                continue
            try:
                written = dumps(
                    {"event_type": event_type, "data": dict(zip(keys, row, strict=True))}
                )
            except orjson.JSONEncodeError:
                append(None)  # text JSON cannot carry (a lone surrogate): a model's
                continue
            append(kept_bytes(written))
        return out
    spec = [(key, names) for key, names, _ in fields]
    columns = [
        values if names is None else zip(*values, strict=True) for _, names, values in fields
    ]
    for index, values in enumerate(zip(*columns, strict=True)):
        if index in flagged:
            append(None)
            continue
        data = {}
        for (key, names), item in zip(spec, values, strict=True):
            value = (
                item
                if names is None
                else {n: v for n, v in zip(names, item, strict=True) if v is not None} or None
            )
            if value is not None:
                data[key] = value
        try:
            written = dumps({"event_type": event_type, "data": data})
        except orjson.JSONEncodeError:
            # Text JSON cannot carry (a lone surrogate): a model, which packing reports.
            append(None)
            continue
        append(kept_bytes(written))
    return out


def _dense(fields: list[WrittenField]) -> tuple[list[str], list[Iterable[Any]]] | None:
    """The keys every row writes and their values per row (a map's as a dict per row), when
    no value is null: a null column is left out of every row; a column null in some rows
    only, or a map with a null value, gives None (each row is then written key by key)."""
    keys: list[str] = []
    rows: list[Iterable[Any]] = []
    for key, names, values in fields:
        if names is None:
            if None not in values:
                keys.append(key)
                rows.append(values)
            elif values.count(None) != len(values):
                return None
            continue
        if any(None in column for column in values):
            return None
        keys.append(key)
        rows.append(map(dict, map(zip, repeat(names), zip(*values, strict=True))))
    # No key at all: zipping nothing would give no rows; each row is written key by key.
    return (keys, rows) if keys else None


def event_bytes(event: Any) -> bytes:
    """A written batch's event (``blobs[i]``: bytes, or a model) as the codec writes it
    (raises orjson.JSONEncodeError)."""
    if event.__class__ is bytes:
        return event
    return orjson.dumps(event, default=_json_default)


def event_data(event: Any) -> Any:
    """What the codec's hook gives for a written batch's event: the decoded data, or the
    model itself."""
    return orjson.loads(event) if event.__class__ is bytes else event


class WrittenEvents(Sequence[Any]):
    """Events side by side with their timestamps: ``events[i]`` is bytes (an event the Arrow
    engine wrote) or a model, ``stamps[i]`` the written event's timestamp. An item is what
    a written batch holds: (timestamp, bytes), or the model; a slice is a
    :class:`WrittenEvents`. The engine's runs and open batches keep their events so, with
    no tuple per event for the garbage collector to count and scan."""

    __slots__ = ("events", "mixed", "stamps")

    def __init__(
        self, events: Sequence[Any], stamps: Sequence[int | None], *, mixed: bool = True
    ) -> None:
        self.events = events
        self.stamps = stamps
        #: False when every event is bytes (none is a model).
        self.mixed = mixed

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> WrittenEvents: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return WrittenEvents(self.events[index], self.stamps[index], mixed=self.mixed)
        event = self.events[index]
        return (self.stamps[index], event) if event.__class__ is bytes else event


def paired(blobs: Sequence[Any], stamps: Sequence[int | None]) -> list[Any]:
    """Events as a written batch hands them on: (timestamp, bytes) where written, else the
    model (or None) as it is."""
    return [
        (stamp, blob) if blob.__class__ is bytes else blob
        for stamp, blob in zip(stamps, blobs, strict=True)
    ]


def unpaired(events: Iterable[Any]) -> WrittenEvents:
    """:func:`paired`'s inverse, in lists: bytes (or the model, or None) beside timestamps."""
    blobs: list[Any] = []
    stamps: list[int | None] = []
    mixed = False
    for event in events:
        mixed = append_unpaired(event, blobs, stamps) or mixed
    return WrittenEvents(blobs, stamps, mixed=mixed)


def append_unpaired(event: Any, blobs: list[Any], stamps: list[int | None]) -> bool:
    """Append an event, (timestamp, bytes) or a model, to ``blobs`` and ``stamps`` (None for
    a model's); True for a model."""
    if event.__class__ is tuple:
        stamps.append(event[0])
        blobs.append(event[1])
        return False
    stamps.append(None)
    blobs.append(event)
    return True


#: A written batch's header: the model, or the fields it is built from on first use, with
#: the header's bytes and the user key (None where the model is written by packing).
HeaderParts = tuple["Batch | None", "dict[str, Any] | None", "bytes | None", "bytes | None"]

#: SourcedBatch's own slots, which WrittenBatch's properties of the same names stand before.
_ROWS_SLOT: Any = SourcedBatch.__dict__["rows"]
_EVENT_ROWS_SLOT: Any = SourcedBatch.__dict__["event_rows"]


class WrittenBatch(SourcedBatch):
    """A sourced batch whose events are written data (a model where the row path mapped it).

    ``header`` is the batch without events; ``blobs[i]`` is event ``i`` as the codec
    writes it (or the event model itself, which orjson writes through the codec's hook) and
    ``stamps[i]`` a written event's timestamp; ``all_written`` when no event is a model. The
    constructor takes those three, or ``written``: each event as (timestamp, bytes) or a model.
    ``header_json`` (when set) is the header as the codec writes it, and ``user_key`` what
    packing orders the user's batches by: packing then builds no model. Without ``header``,
    the header model is built on first use from ``header_kwargs``.

    Its rows are given as ``rows`` and ``event_rows``, or as a :class:`RowSpan` of every
    row with an event (``span``): their :class:`RowRef` s are then made on first use.
    """

    __slots__ = (
        "_header",
        "_model",
        "_span",
        "all_written",
        "blobs",
        "event_cls",
        "header_json",
        "header_kwargs",
        "stamps",
        "user_key",
    )

    blobs: tuple[Any, ...]
    stamps: tuple[int | None, ...]
    all_written: bool
    event_cls: type[Any]
    header_json: bytes | None
    header_kwargs: dict[str, Any] | None
    user_key: bytes | None
    _header: Batch | None
    _model: Batch | None
    _span: RowSpan | None

    def __init__(
        self,
        *,
        header: Batch | None = None,
        written: Sequence[Any] | None = None,
        blobs: tuple[Any, ...] = (),
        stamps: tuple[int | None, ...] = (),
        all_written: bool = False,
        event_cls: type[Any],
        event_rows: tuple[RowRef, ...] | None = None,
        rows: tuple[RowRef, ...] | None = None,
        span: RowSpan | None = None,
        header_kwargs: dict[str, Any] | None = None,
        header_json: bytes | None = None,
        user_key: bytes | None = None,
    ) -> None:
        if span is None:
            if event_rows is None or rows is None:
                msg = "a written batch needs its rows and event rows, or their span"
                raise ModelError(msg)
            counted = len(event_rows)
            _ROWS_SLOT.__set__(self, rows)
            _EVENT_ROWS_SLOT.__set__(self, event_rows)
        else:
            counted = len(span)
        if written is not None:
            events = unpaired(written)
            blobs, stamps, all_written = (
                tuple(events.events),
                tuple(events.stamps),
                not events.mixed,
            )
        if len(blobs) != counted or len(stamps) != counted:
            # SourcedBatch's own check, which this constructor bypasses.
            msg = f"{len(blobs)} events but {counted} event_rows"
            raise ModelError(msg)
        self._fill(
            (header, header_kwargs, header_json, user_key),
            event_cls,
            (blobs, stamps, all_written),
            span,
        )

    def _fill(
        self,
        header: HeaderParts,
        event_cls: type[Any],
        events: tuple[tuple[Any, ...], tuple[int | None, ...], bool],
        span: RowSpan | None,
    ) -> None:
        model, header_kwargs, header_json, user_key = header
        blobs, stamps, all_written = events
        if model is None and header_kwargs is None:
            msg = "a written batch needs its header or the header's fields"
            raise ModelError(msg)
        # SourcedBatch is frozen: its slots are set directly (``slot_setters``).
        _SET_HEADER(self, model)
        _SET_HEADER_KWARGS(self, header_kwargs)
        _SET_HEADER_JSON(self, header_json)
        _SET_USER_KEY(self, user_key)
        _SET_BLOBS(self, blobs)
        _SET_STAMPS(self, stamps)
        _SET_EVENT_CLS(self, event_cls)
        _SET_SPAN(self, span)
        _SET_MODEL(self, None)
        _SET_ALL_WRITTEN(self, all_written)

    @classmethod
    def spanned(
        cls,
        header: HeaderParts,
        event_cls: type[Any],
        events: tuple[tuple[Any, ...], tuple[int | None, ...], bool],
        span: RowSpan,
    ) -> WrittenBatch:
        """A batch of rows that all have an event (the Arrow engine's common batch), made
        without the keyword constructor's steps: ``header`` is (header, header_kwargs,
        header_json, user_key), ``events`` (blobs, stamps, all_written)."""
        blobs, stamps, _ = events
        if len(blobs) != len(span) or len(stamps) != len(span):
            msg = f"{len(blobs)} events but {len(span)} event_rows"
            raise ModelError(msg)
        self = cls.__new__(cls)
        self._fill(header, event_cls, events, span)
        return self

    def event_stamps(self) -> Sequence[int | None]:
        """Each event's ``timestamp_unixtime_ms``."""
        if self.all_written:
            return self.stamps
        return [
            stamp if blob.__class__ is bytes else blob.timestamp_unixtime_ms
            for stamp, blob in zip(self.stamps, self.blobs, strict=True)
        ]

    @property
    def rows(self) -> tuple[RowRef, ...]:
        span = self._span
        if span is None:
            rows: tuple[RowRef, ...] = _ROWS_SLOT.__get__(self, SourcedBatch)
            return rows
        # Every row has an event: the rows are the event rows.
        return self.event_rows

    @property
    def event_rows(self) -> tuple[RowRef, ...]:
        try:
            event_rows: tuple[RowRef, ...] = _EVENT_ROWS_SLOT.__get__(self, SourcedBatch)
        except AttributeError:
            span = cast(RowSpan, self._span)
            event_rows = tuple(map(RowRef, span.numbers, span.keys))
            _EVENT_ROWS_SLOT.__set__(self, event_rows)
        return event_rows

    def _primary_keys(self) -> Sequence[str]:
        span = self._span
        if span is None:
            return super()._primary_keys()
        keys = span.keys
        if None in keys:
            return [key for key in keys if key is not None]
        return cast("Sequence[str]", keys)

    def _event_count(self) -> int:
        return len(self.blobs)

    @property
    def header(self) -> Batch:
        """The batch without events (built once, when only its fields were kept)."""
        header = self._header
        if header is None:
            kwargs = dict(cast("dict[str, Any]", self.header_kwargs))
            identities = kwargs.get("user_identities")
            if identities.__class__ is tuple:  # (name, text) pairs, as the engine keeps them
                identities = dict(identities)
            if identities.__class__ is dict:
                kwargs["user_identities"] = UserIdentities(**identities)
            header = Batch(**kwargs)
            object.__setattr__(self, "_header", header)
        return header

    @property
    def batch(self) -> Batch:
        """The model batch the row path builds, from the written events (built once)."""
        model: Batch | None = self._model
        if model is None:
            events = tuple(_event_model(self.event_cls, event) for event in self.blobs)
            model = attrs.evolve(self.header, events=events or None)
            object.__setattr__(self, "_model", model)
        return model

    def _events_part(
        self, indexes: Sequence[int], event_rows: tuple[RowRef, ...], rows: tuple[RowRef, ...]
    ) -> WrittenBatch:
        # events_part's cut (routing, packing and the differ), on the written events.
        blobs, stamps = self.blobs, self.stamps
        return WrittenBatch(
            header=self._header,
            header_kwargs=self.header_kwargs,
            header_json=self.header_json,
            user_key=self.user_key,
            blobs=tuple([blobs[i] for i in indexes]),
            stamps=tuple([stamps[i] for i in indexes]),
            all_written=self.all_written,
            event_cls=self.event_cls,
            event_rows=event_rows,
            rows=rows,
        )

    def __eq__(self, other: object) -> bool:
        # Equal to the plain sourced batch it stands for (the row path's), either way round.
        if not isinstance(other, SourcedBatch):
            return NotImplemented
        return (self.batch, self.event_rows, self.rows) == (
            other.batch,
            other.event_rows,
            other.rows,
        )

    def __hash__(self) -> int:
        return hash(_plain(self.batch, self.event_rows, self.rows))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as the plain sourced batch it stands for.
        return (_plain, (self.batch, self.event_rows, self.rows))


(
    _SET_HEADER,
    _SET_HEADER_KWARGS,
    _SET_HEADER_JSON,
    _SET_USER_KEY,
    _SET_BLOBS,
    _SET_STAMPS,
    _SET_EVENT_CLS,
    _SET_SPAN,
    _SET_MODEL,
    _SET_ALL_WRITTEN,
) = slot_setters(
    WrittenBatch,
    "_header",
    "header_kwargs",
    "header_json",
    "user_key",
    "blobs",
    "stamps",
    "event_cls",
    "_span",
    "_model",
    "all_written",
)


def _event_model(cls: type[Any], event: Any) -> Any:
    """The model of a written event (bytes; a model is itself): a custom event from its data,
    as its keyword arguments; any other through the codec, as ``loads`` reads it."""
    if event.__class__ is not bytes:
        return event
    if cls is CustomEvent:
        return cls(**orjson.loads(event)["data"])
    events = from_dict({"events": [orjson.loads(event)]}).events
    assert events is not None
    return events[0]


def _plain(batch: Batch, event_rows: tuple[RowRef, ...], rows: tuple[RowRef, ...]) -> SourcedBatch:
    return SourcedBatch(batch=batch, event_rows=event_rows, rows=rows)
