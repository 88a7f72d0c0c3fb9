"""Mapping stage: the batch being filled for one user, as the row path and the Arrow engine
fill it (one user's rows; the regroup window holds several of these)."""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import Any, cast

from .._wire.common import DeviceInfo, UserIdentities
from .._wire.models import Batch
from .compile import _KnownMapped, _Mapped
from .limits import MAX_USER_ATTRIBUTES
from .provenance import RowRef, RowSpan, SourcedBatch
from .written import (
    HeaderParts,
    WrittenBatch,
    WrittenEvents,
    append_unpaired,
    paired,
    unpaired,
)
from .written_header import known_header, written_header

__all__ = ["_Pending", "_WrittenPending", "_with_event"]


class _Pending:
    """The batch being filled: one user's consecutive rows."""

    __slots__ = (
        "environment",
        "event_rows",
        "events",
        "first",
        "merged",
        "rows",
        "user_attributes",
        "written",
    )

    def __init__(self, environment: Any, written: type[Any] | None = None) -> None:
        self.environment = environment
        #: The event class of events written as data (the Arrow engine's), or None.
        self.written = written
        self.first: _Mapped | None = None
        self.events: list[Any] = []
        #: The rows with an event; None while that is every row (one list fewer a batch).
        self.event_rows: list[RowRef] | None = None
        self.rows: list[RowRef] = []
        self.user_attributes: dict[str, Any] = {}
        #: The attribute dict merged last: a row reusing it (same user columns) adds nothing.
        self.merged: dict[str, Any] | None = None

    def accepts(self, mapped: _Mapped, limit: int) -> bool:
        first = self.first
        if first is None:
            return True
        if mapped.user_key != first.user_key:
            return False
        if mapped.event is not None and len(self.events) >= limit:
            return False
        extra = mapped.user_attributes
        if extra and extra is not self.merged:
            current = self.user_attributes
            if extra.items() <= current.items():
                return True  # the usual case: the same attributes again, nothing new
            for key, value in extra.items():
                if key in current and current[key] != value:
                    return False  # a later value would overwrite an earlier one
            if len(current.keys() | extra.keys()) > MAX_USER_ATTRIBUTES:
                return False
        return True

    def full(self, limit: int) -> bool:
        return len(self.events) >= limit

    def row_count(self) -> int:
        return len(self.rows)

    def add_event(self, event: Any, ref: RowRef) -> None:
        """A row with the user part of the row added last: only its event is new."""
        self.events.append(event)
        if self.event_rows is not None:
            self.event_rows.append(ref)
        self.rows.append(ref)

    def add(self, mapped: _Mapped, ref: RowRef) -> None:
        if self.first is None:
            self.first = mapped
        if mapped.event is not None:
            self.events.append(mapped.event)
            if self.event_rows is not None:
                self.event_rows.append(ref)
        elif self.event_rows is None:
            self.event_rows = list(self.rows)  # the rows so far, each with its event
        self._merge(mapped)
        self.rows.append(ref)

    def _merge(self, mapped: _Mapped) -> None:
        extra = mapped.user_attributes
        if extra and extra is not self.merged:
            if self.user_attributes is self.merged:
                # The first row's own dict (see start): copied before it changes.
                self.user_attributes = dict(self.user_attributes)
            self.user_attributes.update(extra)
            self.merged = extra

    def add_events(
        self, events: Sequence[Any], numbers: Sequence[int], keys: Sequence[str | None]
    ) -> None:
        """Rows with the user part of the row added last: only their events are new."""
        refs = list(map(RowRef, numbers, keys))
        self.events.extend(events)
        if self.event_rows is not None:
            self.event_rows.extend(refs)
        self.rows.extend(refs)

    def start(
        self,
        first: _Mapped,
        events: Sequence[Any],
        numbers: Sequence[int],
        keys: Sequence[str | None],
    ) -> None:
        """The first rows of a new batch: ``first`` (the first row mapped, its event
        ``events[0]``), then rows with its user part and the other events."""
        self.add(first, RowRef(numbers[0], keys[0]))
        if len(numbers) > 1:
            self.add_events(events[1:], numbers[1:], keys[1:])

    def room(self, limit: int) -> int:
        """Events this batch takes before it is full."""
        return limit - len(self.events)

    def flush(self) -> SourcedBatch:
        """The batch of the rows added (the group is not used again)."""
        first = self.first
        assert first is not None
        written = self.written
        if written is not None:
            return self._flush_written(first, written)
        batch = self._batch(first, tuple(self.events) if self.events else None)
        rows, event_rows = self._row_tuples()
        return SourcedBatch(batch=batch, event_rows=event_rows, rows=rows)

    def _batch(self, first: _Mapped, events: tuple[Any, ...] | None) -> Batch:
        """The batch model: ``first``'s user part, the attributes merged, ``events``."""
        return Batch(
            events=events,
            environment=self.environment,
            user_identities=UserIdentities(**_any_kwargs(first.identities))
            if first.identities
            else None,
            device_info=DeviceInfo(**_any_kwargs(first.device)) if first.device else None,
            mpid=first.mpid,
            mp_deviceid=first.mp_deviceid,
            ip=first.ip,
            application_info=first.application_info,
            context=first.context,
            user_attributes=self.user_attributes or None,
            **dict(first.extras),
        )

    def _flush_written(self, first: _Mapped, written: type[Any]) -> WrittenBatch:
        """The Arrow engine's batch: its header written without a model where that is proven
        (:func:`written_header`; :func:`known_header` where the engine proved the first
        row's values plain and no other row added attributes), else the model, built now as
        the row path builds it."""
        merged = self.merged
        if first.__class__ is _KnownMapped and (merged is None or merged is first.user_attributes):
            # Only first's attributes (same-user rows of its run reuse its dict): proven plain.
            header = known_header(self.environment, first, self.user_attributes)
        else:
            header = written_header(self.environment, first, self.user_attributes)
        if header is None:
            return self._written_batch(written, (self._batch(first, None), None, None, None))
        # Only identities and user attributes: the model, when asked for, from those.
        fields = {
            "environment": self.environment,
            "user_identities": first.identities,
            "user_attributes": self.user_attributes or None,
        }
        return self._written_batch(written, (None, fields, header[0], header[1]))

    def _written_batch(self, written: type[Any], header: HeaderParts) -> WrittenBatch:
        """The batch with its events and rows, its header as given: (the model,
        header_kwargs, header_json, user_key)."""
        rows, event_rows = self._row_tuples()
        model, header_kwargs, header_json, user_key = header
        return WrittenBatch(
            header=model,
            header_kwargs=header_kwargs,
            header_json=header_json,
            user_key=user_key,
            event_cls=written,
            written=self.events,
            rows=rows,
            event_rows=event_rows,
        )

    def _row_tuples(self) -> tuple[tuple[RowRef, ...], tuple[RowRef, ...]]:
        """The batch's rows and its event rows (one tuple when every row has an event)."""
        rows = tuple(self.rows)
        return rows, rows if self.event_rows is None else tuple(self.event_rows)


class _WrittenPending(_Pending):
    """The Arrow engine's batch being filled: while every row has an event, its rows are
    kept as their numbers and keys, and handed on as a :class:`RowSpan` (a row's
    :class:`RowRef` is made only if the batch's rows are asked for), and its written events
    as bytes beside their timestamps (paired only when the batch is flushed); else as
    :class:`_Pending` keeps them."""

    __slots__ = ("keys", "mixed", "numbers", "spanned", "stamps")

    numbers: Sequence[int]
    keys: Sequence[str | None]
    # A run's tuples until a row is added (_own); then lists. Written events are bytes here
    # (their timestamps in ``stamps``), handed on so to the WrittenBatch.
    events: Sequence[Any]  # type: ignore[assignment]
    stamps: Sequence[int | None] | None

    def __init__(self, environment: Any, written: type[Any]) -> None:
        # Not _Pending's: the first row added (``add`` or ``start``) sets the events, row
        # numbers and keys, and ``rows`` is made only when a row without an event comes. A
        # batch held open in the regroup window is then a few objects, not one per row.
        self.environment = environment
        self.written = written
        self.first: _Mapped | None = None
        self.event_rows: list[RowRef] | None = None
        self.merged: dict[str, Any] | None = None
        self.spanned = True
        #: Whether an event is a model (not bytes): pairing then looks at each.
        self.mixed = False

    def row_count(self) -> int:
        return len(self.numbers) if self.spanned else len(self.rows)

    def add(self, mapped: _Mapped, ref: RowRef) -> None:
        if self.spanned and mapped.event is None:
            # A row without an event: from here on, rows and events as _Pending keeps them.
            self.spanned = False
            if self.first is None:
                self.events, self.user_attributes, self.rows = [], {}, []
            else:
                self.events = paired(self.events, cast("Sequence[int | None]", self.stamps))
                self.rows = list(map(RowRef, self.numbers, self.keys))
            self.stamps = None
        if not self.spanned:
            super().add(mapped, ref)
            return
        if self.first is None:
            self.start(mapped, (mapped.event,), (ref.row_number,), (ref.primary_key,))
            return
        self._merge(mapped)
        self.add_event(mapped.event, ref)

    def add_event(self, event: Any, ref: RowRef) -> None:
        if not self.spanned:
            super().add_event(event, ref)
            return
        events, stamps, numbers, keys = self._own()
        if append_unpaired(event, events, stamps):
            self.mixed = True
        numbers.append(ref.row_number)
        keys.append(ref.primary_key)

    def add_events(
        self, events: Sequence[Any], numbers: Sequence[int], keys: Sequence[str | None]
    ) -> None:
        if not self.spanned:
            super().add_events(events, numbers, keys)
            return
        written = events if isinstance(events, WrittenEvents) else unpaired(events)
        own_events, own_stamps, own_numbers, own_keys = self._own()
        own_events.extend(written.events)
        own_stamps.extend(written.stamps)
        self.mixed = self.mixed or written.mixed
        own_numbers.extend(numbers)
        own_keys.extend(keys)

    def start(
        self,
        first: _Mapped,
        events: Sequence[Any],
        numbers: Sequence[int],
        keys: Sequence[str | None],
    ) -> None:
        if first.event is None:
            super().start(first, events, numbers, keys)
            return
        self.first = first
        # Else rows the row path mapped (or the push of one row): its event is first's.
        written = (
            events if isinstance(events, WrittenEvents) else unpaired([first.event, *events[1:]])
        )
        # The run's own events, timestamps, row numbers and keys (the engine's tuples), kept
        # until a row is added (``_own``).
        self.events, self.stamps, self.mixed = written.events, written.stamps, written.mixed
        if first.user_attributes:
            # The first row's dict, shared until another row's attributes change it (_merge).
            self.user_attributes = self.merged = first.user_attributes
        else:
            self.user_attributes = {}
        self.numbers = numbers
        self.keys = keys

    def _own(self) -> tuple[list[Any], list[int | None], array[int], list[str | None]]:
        """The events, timestamps, row numbers and keys as lists (an array) that rows are
        added to."""
        events, stamps, numbers, keys = self.events, self.stamps, self.numbers, self.keys
        if not isinstance(numbers, array) or not isinstance(events, list):
            events = self.events = list(events)
            stamps = self.stamps = list(cast("Sequence[int | None]", stamps))
            numbers = self.numbers = array("q", numbers)
            keys = self.keys = list(keys)
        return (
            events,
            cast("list[int | None]", stamps),
            numbers,
            cast("list[str | None]", keys),
        )

    def _written_batch(self, written: type[Any], header: HeaderParts) -> WrittenBatch:
        stamps = self.stamps
        if not self.spanned or stamps is None:
            return super()._written_batch(written, header)
        return WrittenBatch.spanned(
            header,
            written,
            (tuple(self.events), tuple(stamps), not self.mixed),
            RowSpan(self.numbers, self.keys),
        )


def _with_event(first: _Mapped, event: Any) -> _Mapped:
    """What the row path maps a later row of ``first``'s run to: its user part, this event."""
    # Positional, in _Mapped's field order, as compile.py builds it: cheaper than evolve().
    return _Mapped(
        first.user_key,
        first.identities,
        first.device,
        first.mpid,
        first.mp_deviceid,
        first.ip,
        first.application_info,
        first.context,
        first.user_attributes,
        event,
        0,
    )


def _any_kwargs(pairs: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return dict(pairs)
