"""Mapping stage: the Arrow engine, whole record batches through a compiled mapping.

An Arrow source (a ``pyarrow`` Table, RecordBatch or RecordBatchReader, or any object with the
Arrow PyCapsule stream interface, ``__arrow_c_stream__``: DuckDB relations, Polars frames,
ADBC results) is read one record batch at a time. Each mapped column is converted once, as a
column, into the values the wire models take; rows are then assembled from those lists
without a dict, a getter or a coercer call per field, and events written as JSON in Arrow,
column by column, where each value's JSON is proven (:mod:`.arrow_json`, :mod:`.arrow_lists`).

The row path (:mod:`.compile`, :mod:`.run`) stays the reference, and the engine leans on it:

- every value the column converters do not recognise goes through the row path's own coercer
  for that field, and a row with any value that fails (or any value a fast check flags) is
  mapped again by the row path, which rejects it with its field path and reason;
- a mapping using a feature listed in :func:`unvectorised` maps whole record batches through
  the row path, over the rows ``RecordBatch.to_pylist()`` gives.

Both paths read the same Python values: a row of the row path is what ``to_pylist()`` gives
for it, after nanosecond timestamps are truncated to microseconds (what a Python datetime
holds). pyarrow is optional; without it no source is taken for Arrow.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import compress
from operator import not_
from typing import Any, cast

import attrs

from .._source.rows import _column_names
from .._source.sources import arrow_reader, is_arrow_shaped, is_cursor
from .._wire.enums import Environment
from .._wire.models import CommerceEvent
from .arrow_columns import (
    Columns,
    normalised,
)
from .arrow_slice import WRITTEN_FIELDS, Converted, dict_maker
from .attributes import _AttributeBuilder
from .compile import CompiledMapping, _Mapped
from .provenance import RowRef
from .rejects import _Reject
from .sources import Attributes, Column, Constant, Struct, SyncKind
from .written import WrittenEvents, written_event_type, written_order
from .written_header import _IDENTITY_ORDER
from .written_structs import StructWriter, struct_writer

__all__ = ["ArrowEngine", "Run", "arrow_source_reader", "unvectorised"]

logger = logging.getLogger(__name__)

#: Rows converted to Python values at a time. A slice's column calls cost 1 to 2 ms
#: whatever its size; past this, the Python values held cost more than fewer calls save.
SLICE_ROWS = 16_384
#: Rows a record batch holds where the source lets the reader choose.
READER_ROWS = 65_536
#: Mapping fields the engine knows; any other field set away from its default (a kind or
#: feature added later) sends whole batches through the row path.
_KNOWN_FIELDS = frozenset(
    {
        "environment",
        "primary_key",
        "user_identities",
        "device_identities",
        "mpid",
        "ip",
        "application_info",
        "context",
        "user_attributes",
        "timezone",
        "epoch_unit",
        "timestamp_unixtime_ms",
        "source_message_id",
        "session_uuid",
        "location",
        "device_current_state",
        "custom_attributes",
        "custom_flags",
        "event_name",
        "custom_event_type",
        "product_action",
        "promotion_action",
        "product_impressions",
        "shopping_cart",
        "currency_code",
        "screen_name",
        "is_non_interactive",
        # Tagging and validation run after mapping, on either engine's batches.
        "data_plan",
    }
)


def _struct_writers(
    compiled: CompiledMapping, event_fields: list[tuple[str, Any, Any, Any]]
) -> dict[str, StructWriter]:
    """The commerce event's product action, a Struct of columns and constants, written as
    data (the object the differential tests cover; any other nested object is a model)."""
    if compiled.event_cls is not CommerceEvent:
        return {}
    out: dict[str, StructWriter] = {}
    for name, source, _, _ in event_fields:
        if name != "product_action":
            continue
        plan = compiled.struct_plans.get(name)
        if plan is None or not isinstance(source, Struct):
            continue
        writer = struct_writer(plan[0], compiled._coercers)
        names = [field for field, _ in source.fields]
        if (
            writer is not None
            and len(set(names)) == len(names)
            and all(field in writer.writers for field in names)
            and all(isinstance(item, (Column, Constant)) for _, item in source.fields)
        ):
            out[name] = writer
    return out


#: Mapping kinds the engine maps; any other kind sends whole batches through the row path.
_KNOWN_KINDS = frozenset({SyncKind.CUSTOM_EVENT, SyncKind.COMMERCE_EVENT, SyncKind.USER_ATTRIBUTES})

Result = tuple[RowRef, "_Mapped | _Reject"]


class Run:
    """Consecutive rows with the same user part: the first row mapped, and every row's event.

    What the row path would give for each row is ``first`` with that row's event; a run lets
    the batching take the rows in one step.
    """

    __slots__ = ("cuts", "events", "first", "keys", "numbers")

    def __init__(
        self,
        first: _Mapped,
        numbers: Sequence[int],
        keys: Sequence[str | None],
        events: Sequence[Any],
        cuts: list[int],
    ) -> None:
        self.first = first
        #: The rows' numbers and primary keys, side by side (no RowRef made a row).
        self.numbers = numbers
        self.keys = keys
        self.events = events
        #: Per row, the values it cut to mParticle's limits (counted for the rows kept).
        self.cuts = cuts


def _pyarrow() -> Any | None:
    try:
        return importlib.import_module("pyarrow")
    except ImportError:
        return None


def arrow_source_reader(source: object) -> Any | None:
    """A ``pyarrow.RecordBatchReader`` when the Arrow engine maps ``source``, else None (the
    row path reads it with :func:`rows_from`).

    Arrow-shaped sources are the ones :func:`rows_from` reads as Arrow (its
    :func:`arrow_reader`): pyarrow tables, batches and readers, DuckDB relations and other
    ``__arrow_c_stream__`` exporters, pandas and Polars DataFrames excepted. None without
    pyarrow. Duplicate column names raise :class:`MappingError`, as they do on the row path.
    """
    # A cursor is read as a cursor, as rows_from reads it, even DuckDB's; and pyarrow (tens
    # of megabytes) is imported only for a source that is Arrow-shaped.
    if is_cursor(source) or not is_arrow_shaped(source) or _pyarrow() is None:
        return None
    reader = arrow_reader(source, chunk_size=READER_ROWS)
    if reader is not None:
        _column_names([(name,) for name in reader.schema.names])
    return reader


# --- which mappings are vectorised --------------------------------------------------------


def unvectorised(compiled: CompiledMapping) -> str | None:
    """Why whole record batches of this mapping go through the row path; None when they do not.

    Vectorised: identities from columns; event fields from columns, constants, structs and
    lists of them; attribute maps of explicit ``attribute = column`` pairs. Not (yet): a
    :class:`Computed` source, a mapping kind other than custom events, commerce events and
    user attributes, device identities, ``mpid``, ``ip``, ``application_info``,
    ``context``, attribute maps with a prefix, ``remaining`` or a JSON column, and any mapping
    field this engine does not know.
    """
    mapping = compiled.mapping
    if mapping.kind not in _KNOWN_KINDS:
        # A kind added later has required fields and rules the column converters do not
        # know (a screen view's name, an event type per row): the row path maps it.
        return f"the mapping kind {mapping.kind.value!r}"
    computed = mapping.computed_field()
    for field in attrs.fields(type(mapping)):
        if not field.init:
            continue
        if field.name not in _KNOWN_FIELDS and getattr(mapping, field.name) != field.default:
            return f"the mapping field {field.name!r}"
        if field.name == computed:
            return f"a computed source ({computed})"
    if mapping.device_identities:
        return "device identities"
    for name in ("mpid", "ip", "application_info", "context"):
        if getattr(mapping, name) is not None:
            return name
    if not all(isinstance(source, Column) for _, source in mapping.user_identities):
        return "a user identity that is not a column"
    for name, maps in mapping.attribute_maps():
        reason = _unvectorised_attributes(name, maps, compiled.attribute_builders[name])
        if reason is not None:
            return reason
    if mapping.kind is SyncKind.CUSTOM_EVENT:
        if not isinstance(getattr(mapping, "event_name", None), (Column, Constant)):
            return "an event name that is not a column or a constant"
        if compiled.fixed_event_type is None and not isinstance(
            getattr(mapping, "custom_event_type", None), Column
        ):
            return "a custom event type that is neither a valid constant nor a column"
    elif mapping.kind is SyncKind.COMMERCE_EVENT:
        event_name = getattr(mapping, "event_name", None)
        if event_name is not None and not isinstance(event_name, (Column, Constant)):
            return "an event name that is not a column or a constant"
    return None


def _unvectorised_attributes(name: str, maps: Attributes, builder: _AttributeBuilder) -> str | None:
    if maps.prefix is not None or maps.remaining or maps.json_column is not None:
        return f"{name}: a prefix, remaining columns or a JSON column"
    if not all(isinstance(source, Column) for _, source in maps.columns):
        return f"{name}: an attribute that is not a column"
    if not all(checked for _, _, _, checked in builder.explicit):
        return f"{name}: an attribute name mParticle refuses"
    if builder.limit is not None and len(maps.columns) > builder.limit:
        return f"{name}: more attributes than mParticle allows"
    return None


class ArrowEngine:
    """Maps record batches with one compiled mapping; yields what the row path would."""

    def __init__(self, compiled: CompiledMapping) -> None:
        self.compiled = compiled
        self.fallback = unvectorised(compiled)
        self.writes = False
        self.written_batches = False
        self.order: dict[str, int] = {}
        self.event_type: Any = None
        self.struct_writers: dict[str, StructWriter] = {}
        self.user_attribute_dict: Callable[..., dict[str, Any]] | None = None
        mapping = compiled.mapping
        self.needed = compiled.used_columns  # the primary key's column included
        if self.fallback is not None:
            logger.info("Arrow source: the row path maps it (%s is not vectorised)", self.fallback)
            return
        self.per_row_user = mapping.kind is SyncKind.USER_ATTRIBUTES
        self.identity_columns = [
            (name, cast(Column, source).name) for name, source in mapping.user_identities
        ]
        environment = mapping.environment
        #: Batch headers written without checking each value (``written_header.known_header``),
        #: where a slice's user attribute columns are of plain types too.
        self.known_headers = (environment is None or environment.__class__ is Environment) and all(
            name in _IDENTITY_ORDER for name, _ in self.identity_columns
        )
        self.attribute_maps = [
            (
                name,
                compiled.attribute_builders[name],
                tuple(attr for attr, _ in maps.columns),
                tuple(cast(Column, source).name for _, source in maps.columns),
            )
            for name, maps in mapping.attribute_maps()
        ]
        #: Each run's user attribute dict from its values, one per attribute (no nulls).
        self.user_attribute_dict = next(
            (
                dict_maker(attr_names)
                for name, _, attr_names, _ in self.attribute_maps
                if name == "user_attributes" and attr_names
            ),
            None,
        )
        sources = {name: getattr(mapping, name) for name, _, _ in compiled.event_fields}
        self.event_fields = [
            (name, sources[name], get, coerce) for name, get, coerce in compiled.event_fields
        ]
        #: Custom events are written as data, without models (see :mod:`.written`), when
        #: every event field is one whose converter's output orjson writes as the model's
        #: hook does; the order of the data's keys is the codec's, taken from a model.
        #: Commerce objects (a product action) written as data: see :mod:`.written_structs`.
        self.struct_writers = _struct_writers(compiled, self.event_fields)
        self.writes = (
            mapping.kind in (SyncKind.CUSTOM_EVENT, SyncKind.COMMERCE_EVENT)
            and mapping.data_plan is None
            and all(
                name in WRITTEN_FIELDS or name in self.struct_writers
                for name, _, _, _ in self.event_fields
            )
        )
        if self.writes:
            cls = cast("type[Any]", compiled.event_cls)  # a custom or a commerce event
            self.order = written_order(cls)
            self.event_type = written_event_type(cls)
        #: Batches are :class:`WrittenBatch` es (header written without a model where that
        #: is proven; events as data where ``writes``, else models): a data plan's step
        #: rebuilds batches, so it gets the row path's.
        self.written_batches = mapping.data_plan is None and compiled.event_cls is not None

    # --- driving ---------------------------------------------------------------------------

    def results(self, reader: Any) -> Iterator[Result | Run]:
        pa = _pyarrow()
        assert pa is not None
        number = 0
        for read in reader:
            # Slices of a record batch: the Python values of a slice at a time stay few, so
            # memory stays flat and the garbage collector has little to scan.
            matches: dict[tuple[str, str], Any] = {}
            for offset in range(0, read.num_rows, SLICE_ROWS):
                batch = normalised(pa, read.slice(offset, SLICE_ROWS))
                columns = Columns(pa, batch, read, offset, matches)
                if self.fallback is not None or not self.needed <= columns.names:
                    # A missing column: the row path names it in every row's rejection.
                    for row in batch.to_pylist():
                        number += 1
                        yield self._row_path(row, number)
                    continue
                yield from self._batch(columns, batch.num_rows, number)
                number += batch.num_rows

    def _row_path(self, row: Mapping[str, Any], number: int) -> Result:
        compiled = self.compiled
        try:
            key = compiled.primary_key(row)
        except _Reject as exc:
            return RowRef(number), exc
        ref = RowRef(number, key)
        try:
            return ref, compiled.map_row(row)
        except _Reject as exc:
            return ref, exc

    # --- one record batch ------------------------------------------------------------------

    def _batch(self, columns: Columns, rows: int, start: int) -> Iterator[Result | Run]:
        """One slice of a record batch: its columns converted, then its rows in runs.

        A run starts at the first row, at a row the row path maps and the row after it, at
        a row whose user part differs from the row before's, and at a row with a float zero
        user attribute (0.0 == -0.0, written apart); the rest is cut in slices.
        """
        part = Converted(self, columns, rows)
        events = part.events(rows)  # may flag rows whose event the model refuses
        flagged = part.flagged
        starts = {0, *part.zeros, *compress(range(1, rows), map(not_, part.same))}
        starts.update(flagged)
        starts.update(index + 1 for index in flagged)
        bounds = sorted(index for index in starts if index < rows)
        part.users_at([index for index in bounds if index not in flagged])
        truncated = part.truncated
        # Tuples: a run's slices of them, held in an open batch, are left by the garbage
        # collector once it has seen they hold no containers (a list is scanned as long as
        # it lives). Written events and their timestamps side by side, not paired.
        keys = tuple(part.keys)
        held = tuple(events)
        written = part.written is not None
        stamps = tuple(part.stamps)
        mixed = written and None in cast("list[bytes | None]", part.written)
        for first, end in zip(bounds, [*bounds[1:], rows], strict=True):
            event = held[first]
            if written and event.__class__ is bytes:
                event = (stamps[first], event)  # the event as a written batch holds it
            mapped = None if first in flagged else part.mapped(first, event, truncated[first])
            if mapped is None:
                # Flagged, or no identity: the row path maps or rejects each row, with the reason.
                for index in range(first, end):
                    yield self._row_path(columns.row(index, self.needed), start + index + 1)
                continue
            numbers = range(start + first + 1, start + end + 1)
            run_events: Sequence[Any] = (
                WrittenEvents(held[first:end], stamps[first:end], mixed=mixed)
                if written
                else held[first:end]
            )
            yield Run(mapped, numbers, keys[first:end], run_events, truncated[first:end])
