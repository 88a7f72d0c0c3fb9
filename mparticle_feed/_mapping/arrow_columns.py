"""Mapping stage: the Arrow engine's column converters (see :mod:`.arrow`).

Each converter turns one column of a record batch into the values the wire models take, one
per row, with :data:`FLAG` where the row must go through the row path: a null where a value is
required, a value a fast check refuses, or a value the row path's own coercer rejects.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

from .._errors import ModelError
from .._source.coerce import MAX_TIMESTAMP_MS, EpochUnit
from .._wire.models import CustomEvent
from .attributes import _AttributeBuilder
from .columns import source_columns
from .compile import CompiledMapping
from .event_part import _event_name
from .limits import MAX_ATTRIBUTE_VALUE, MAX_EVENT_NAME
from .rejects import _Reject
from .sources import Column, Constant, Source, Struct

__all__ = [
    "FLAG",
    "ArrowValues",
    "arrow_compute",
    "Columns",
    "attribute_values",
    "by_row",
    "event_field",
    "event_names",
    "event_types",
    "identity_texts",
    "is_int",
    "is_text",
    "keys",
    "normalised",
    "per_value",
    "plain_type",
    "same_as_before",
    "struct_values",
    "timestamps",
]

#: A value the row path must see: the row holding it is mapped again by the row path.
FLAG: Any = type("_Flag", (), {"__repr__": lambda self: "<row path>"})()


#: Characters ``str.strip`` strips (``str.isspace``), as RE2 reads them.
_SPACE = (
    r"[\t-\r\x1c-\x20\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
)
#: A text ``str.strip`` changes.
_EDGE_SPACE = f"^{_SPACE}|{_SPACE}$"
_EDGE_SPACE_OR_EMPTY = f"{_EDGE_SPACE}|^$"


def normalised(pa: Any, batch: Any) -> Any:
    """Nanosecond timestamps truncated to microseconds, as a Python datetime holds them."""
    changed = False
    arrays = []
    fields = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type) and field.type.unit == "ns":
            target = pa.timestamp("us", tz=field.type.tz)
            arrays.append(column.cast(target, safe=False))
            fields.append(field.with_type(target))
            changed = True
        else:
            arrays.append(column)
            fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields)) if changed else batch


def arrow_compute() -> Any:
    """``pyarrow.compute``, imported on first use (pyarrow is an optional extra)."""
    return importlib.import_module("pyarrow.compute")


def is_text(pa: Any, tp: Any) -> bool:
    return bool(pa.types.is_string(tp) or pa.types.is_large_string(tp))


def is_int(pa: Any, tp: Any) -> bool:
    return bool(pa.types.is_integer(tp))


def per_value(
    values: list[Any],
    convert: Callable[[Any], Any],
    refused: tuple[type[BaseException], ...] = (_Reject,),
) -> list[Any]:
    """``convert`` on every non-null value; a value it refuses (raising one of ``refused``)
    becomes FLAG."""
    out: list[Any] = []
    append = out.append
    for value in values:
        if value is None:
            append(None)
            continue
        try:
            append(convert(value))
        except refused:
            append(FLAG)
    return out


class ArrowValues:
    """An attribute column's values left in Arrow (text, integers or booleans the policy
    keeps as they are): events written in Arrow join the column itself, and its Python
    values are read (:meth:`Columns.values`) only when a row is written otherwise."""

    __slots__ = ("column", "name")

    def __init__(self, name: str, column: Any) -> None:
        self.name = name
        self.column = column


class Columns:
    """One record batch's columns, each converted to Python values at most once."""

    def __init__(
        self, pa: Any, batch: Any, read: Any = None, offset: int = 0, matches: Any = None
    ) -> None:
        self.pa = pa
        self.batch = batch
        self.names = set(batch.schema.names)
        self._values: dict[str, list[Any]] = {}
        # The record batch this one is a slice of (from ``offset``), and the regular
        # expression matches over its columns, shared by its slices.
        self._read = batch if read is None else read
        self._offset = offset
        self._matches: dict[tuple[str, str], Any] = {} if matches is None else matches

    def type_of(self, name: str) -> Any:
        return self.batch.schema.field(name).type

    def values(self, name: str) -> list[Any]:
        cached = self._values.get(name)
        if cached is None:
            cached = self._values[name] = self.batch.column(name).to_pylist()
        return cached

    def matched(self, name: str, pattern: str) -> Any:
        """Per row, whether text column ``name`` matches ``pattern`` (null: False).

        Matched over the whole record batch once, for all its slices: Arrow compiles the
        expression on every call, which costs as much as matching thousands of rows.
        """
        whole = self._matches.get((name, pattern))
        if whole is None:
            compute = arrow_compute()
            found = compute.match_substring_regex(self._read.column(name), pattern)
            whole = self._matches[name, pattern] = compute.fill_null(found, False)
        return whole.slice(self._offset, self.batch.num_rows)

    def listed(self, values: Any) -> Any:
        """``values`` as Python values: an :class:`ArrowValues` column's, read now."""
        return self.values(values.name) if values.__class__ is ArrowValues else values

    def source_of(self, values: Any) -> Any:
        """The Arrow column whose Python values ``values`` is (the same list, or an
        :class:`ArrowValues`), else None."""
        if values.__class__ is ArrowValues:
            return values.column
        for name, cached in self._values.items():
            if cached is values:
                return self.batch.column(name)
        return None

    def value(self, name: str, index: int) -> Any:
        cached = self._values.get(name)
        if cached is not None:
            return cached[index]
        return self.batch.column(name)[index].as_py()

    def row(self, index: int, names: frozenset[str]) -> dict[str, Any]:
        """The row path's row: ``names`` (the columns the mapping reads), in schema order."""
        return {name: self.value(name, index) for name in self.batch.schema.names if name in names}


def keys(compiled: CompiledMapping, columns: Columns, rows: int) -> list[Any]:
    column = compiled.key_column
    if column is None:
        return [None] * rows
    values = columns.values(column)
    if is_text(columns.pa, columns.type_of(column)):
        if not columns.batch.column(column).null_count:
            return values  # the column's own list
        return [FLAG if value is None else value for value in values]
    primary_key = compiled.primary_key
    out: list[Any] = []
    for value in values:
        try:
            out.append(primary_key({column: value}))
        except _Reject:
            out.append(FLAG)
    return out


def identity_texts(compiled: CompiledMapping, columns: Columns, column: str) -> list[Any]:
    tp = columns.type_of(column)
    values = columns.values(column)
    if is_text(columns.pa, tp) or is_int(columns.pa, tp):
        return identity_values(
            columns, column, values, nulls=columns.batch.column(column).null_count > 0
        )
    to_text = compiled._to_text
    return per_value(values, lambda value: to_text(value, "").strip())


def identity_values(columns: Columns, column: str, values: list[Any], *, nulls: bool) -> list[Any]:
    """Values of a text or integer identity column (all its rows' or some; ``nulls``: whether
    any is null) as the row path reads them: text stripped, integers as text. These never
    refuse a value."""
    if is_text(columns.pa, columns.type_of(column)):
        # str.strip on each: quicker than any Arrow check for short texts such as ids.
        if not nulls:
            return list(map(str.strip, values))
        return [None if value is None else value.strip() for value in values]
    return [None if value is None else str(value) for value in values]


def identity_kept(columns: Columns, column: str) -> bool:
    """Whether :func:`identity_values` reads the column (it never refuses a value)."""
    tp = columns.type_of(column)
    return is_text(columns.pa, tp) or is_int(columns.pa, tp)


def attribute_kept(columns: Columns, column: str) -> bool:
    """Whether the attribute policy keeps every value of the column as it is (checked
    column-wise): booleans, 64-bit integers, finite floats, text none of it over the limit."""
    tp = columns.type_of(column)
    pa = columns.pa
    if pa.types.is_boolean(tp):
        return True
    if pa.types.is_signed_integer(tp) or (pa.types.is_unsigned_integer(tp) and tp.bit_width < 64):
        return True  # every value fits a signed 64-bit integer
    compute = arrow_compute()
    if is_text(pa, tp):
        # No value longer in UTF-8 bytes than the limit (in characters, never more than
        # bytes): every value is kept, without a check per value.
        longest = compute.max(compute.binary_length(columns.batch.column(column))).as_py()
        return longest is None or longest <= MAX_ATTRIBUTE_VALUE
    if pa.types.is_floating(tp):
        # Every value finite (or null).
        return compute.all(compute.is_finite(columns.batch.column(column))).as_py() is not False
    return False


def attribute_values(
    columns: Columns, builder: _AttributeBuilder, attr: str, column: str
) -> list[Any]:
    values = columns.values(column)
    if attribute_kept(columns, column):
        return values  # the column's own list
    tp = columns.type_of(column)
    pa = columns.pa
    if is_text(pa, tp):
        return [
            FLAG if value is not None and len(value) > MAX_ATTRIBUTE_VALUE else value
            for value in values
        ]
    if pa.types.is_floating(tp):
        return [value if value is None or math.isfinite(value) else FLAG for value in values]

    def convert(value: Any) -> Any:
        out: dict[str, Any] = {}
        builder._put(out, attr, value)
        return out[attr]

    return per_value(values, convert)


def event_field(  # noqa: PLR0917 - one call site, the parts of an event field
    compiled: CompiledMapping,
    columns: Columns,
    rows: int,
    name: str,
    source: Source,
    get: Callable[[Mapping[str, Any]], Any],
    coerce: Callable[[Any, str], Any],
) -> list[Any]:
    required = name == "timestamp_unixtime_ms"
    plan = compiled.struct_plans.get(name)
    if (
        plan is not None
        and isinstance(source, Struct)
        and all(isinstance(item, (Column, Constant)) for _, item in source.fields)
    ):
        return struct_values(columns, rows, source, plan)
    if isinstance(source, Column):
        if required:
            fast = timestamps(compiled, columns, source.name)
            if fast is not None:
                return fast
        values = columns.values(source.name)
    else:
        wanted = sorted(set(source_columns(source)))
        lists = [columns.values(column) for column in wanted]
        values = []
        for index in range(rows):
            try:
                values.append(get({c: v[index] for c, v in zip(wanted, lists, strict=True)}))
            except _Reject:
                values.append(FLAG)
    out = per_value(values, lambda value: value if value is FLAG else coerce(value, name))
    if required:
        return [FLAG if value is None else value for value in out]
    return out


def struct_values(
    columns: Columns,
    rows: int,
    source: Struct,
    plan: tuple[type, dict[str, tuple[Callable[[Any, str], Any], type | None]], list[str]],
) -> list[Any]:
    """A model per row from a Struct of columns and constants, field by field as columns:
    what the row path's builder (``struct_from_sources``) makes of each row, FLAG where it
    rejects one. ``plan`` is the field's entry in ``CompiledMapping.struct_plans``."""
    cls, table, required = plan
    parts: list[tuple[str, list[Any]]] = []
    for field, item in source.fields:
        coerce, as_is = table[field]

        def convert(
            value: Any, field: str = field, coerce: Any = coerce, as_is: Any = as_is
        ) -> Any:
            return value if value.__class__ is as_is else coerce(value, field)

        if isinstance(item, Constant):
            # Coerced once: a constant is the same value, and the same result, in every row.
            parts.append((field, per_value([item.value], convert) * rows))
        else:
            parts.append((field, per_value(columns.values(cast(Column, item).name), convert)))
    out: list[Any] = []
    append = out.append
    for index in range(rows):
        kwargs: dict[str, Any] = {}
        for field, values in parts:
            value = values[index]
            if value is not None:
                kwargs[field] = value
                if value is FLAG:
                    break
        else:
            for key in required:
                if key not in kwargs:
                    break
            else:
                try:
                    append(cls(**kwargs))
                except ModelError:
                    append(FLAG)
                continue
        append(FLAG)
    return out


def timestamps(compiled: CompiledMapping, columns: Columns, column: str) -> list[Any] | None:
    """Epoch milliseconds straight from integer or zoned timestamp columns; None for other
    types (their values go through the row path's coercer)."""
    pa = columns.pa
    tp = columns.type_of(column)
    array = columns.batch.column(column)
    unit = compiled.mapping.epoch_unit
    if pa.types.is_timestamp(tp) and tp.tz is not None:
        raw: list[Any] = array.cast(pa.int64()).to_pylist()
        scale = {"s": 1000, "ms": 1, "us": -1000}[tp.unit]
    elif is_int(pa, tp):
        raw = columns.values(column)
        scale = {
            EpochUnit.SECONDS: 1000,
            EpochUnit.MILLISECONDS: 1,
            EpochUnit.MICROSECONDS: -1000,
        }[unit]
    else:
        return None
    if scale > 1:
        ms = [None if value is None else value * scale for value in raw]
    elif scale < 0:
        # Floor division: what the row path's Decimal floor and datetime arithmetic give.
        ms = [None if value is None else value // -scale for value in raw]
    else:
        ms = raw
        if raw and array.null_count == 0 and is_int(pa, tp):
            bounds = arrow_compute().min_max(array)
            if bounds["min"].as_py() >= 0 and bounds["max"].as_py() <= MAX_TIMESTAMP_MS:
                return raw  # the column's own values: the JSON writer reads the column
    return [value if value is not None and 0 <= value <= MAX_TIMESTAMP_MS else FLAG for value in ms]


def event_names(
    compiled: CompiledMapping, columns: Columns, rows: int
) -> tuple[list[Any], list[int]]:
    source = getattr(compiled.mapping, "event_name", None)
    if source is None:
        return [None] * rows, [0] * rows
    required = compiled.event_cls is CustomEvent
    if isinstance(source, Constant):
        values: list[Any] = [source.value] * rows
        text_type = isinstance(source.value, str)
    else:
        column = cast(Column, source).name
        text_type = is_text(columns.pa, columns.type_of(column))
        if text_type and _names_kept(columns, column, required=required):
            return columns.values(column), [0] * rows
        values = columns.values(column)
    if not text_type:
        to_text = compiled._to_text
        values = per_value(values, lambda value: to_text(value, "event_name"))
    names: list[Any] = []
    truncated: list[int] = []
    same = True
    for value in values:
        cut = 0
        if value is None:
            name = FLAG if required else None
        elif value is FLAG:
            name = FLAG
        else:
            try:
                name, cut = _event_name(value, "event_name")
            except _Reject:
                name = FLAG  # the row path rejects it, with the reason
        names.append(name)
        truncated.append(cut)
        same = same and name is value
    # Every name as the column holds it: the column's own list (the JSON writer reads it).
    return (values if same else names), truncated


def _names_kept(columns: Columns, column: str, *, required: bool) -> bool:
    """Whether the event-name policy keeps every name of a text column as it is: none null
    (where a name is required), empty, with a space ``strip`` takes off, or over the limit."""
    array = columns.batch.column(column)
    if required and array.null_count:
        return False
    compute = arrow_compute()
    if compute.any(columns.matched(column, _EDGE_SPACE_OR_EMPTY)).as_py():
        return False
    longest = compute.max(compute.utf8_length(array)).as_py()
    return longest is None or longest <= MAX_EVENT_NAME


def event_types(compiled: CompiledMapping, columns: Columns, rows: int) -> list[Any] | None:
    if compiled.fixed_event_type is not None or compiled.custom_event_type is None:
        return None
    column = cast(Column, getattr(compiled.mapping, "custom_event_type", None)).name
    known: dict[Any, Any] = {}
    out: list[Any] = []
    for value in columns.values(column):
        if value is None:
            out.append(FLAG)
            continue
        hit = known.get(value) if value.__class__ is str else None
        if hit is None:
            try:
                hit = compiled._to_event_type(value, "custom_event_type")
            except _Reject:
                hit = FLAG
            if value.__class__ is str:
                known[value] = hit
        out.append(hit)
    return out


def by_row(lists: list[list[Any]], rows: int) -> list[tuple[Any, ...]]:
    """Column lists turned into one tuple per row (empty tuples when there are no columns)."""
    return list(zip(*lists, strict=True)) if lists else [()] * rows


def same_as_before(columns: Columns, names: list[str], rows: int) -> list[bool] | None:
    """Per row after the first, whether its source values in ``names`` equal the row
    before's (nulls equal), compared as Arrow columns; None where Arrow cannot compare.

    Equal source values convert to equal values, so such rows share their user part. (Rows
    whose values differ but convert alike are taken one by one: the batching then finds
    them the same user, as the row path does.)
    """
    pa = columns.pa
    compute = arrow_compute()
    result = pa.array([True] * max(rows - 1, 0), pa.bool_())
    try:
        for name in dict.fromkeys(names):
            column = columns.batch.column(name)
            later, earlier = column.slice(1), column.slice(0, rows - 1)
            equal = compute.or_(
                compute.fill_null(compute.equal(later, earlier), False),
                compute.and_(compute.is_null(later), compute.is_null(earlier)),
            )
            result = compute.and_(result, equal)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    same: list[bool] = result.to_pylist()
    return same


def plain_type(pa: Any, tp: Any) -> bool:
    """Arrow types whose attribute values are str, int (64-bit), bool or a finite float."""
    if pa.types.is_unsigned_integer(tp):
        return bool(tp.bit_width < 64)
    return bool(
        pa.types.is_boolean(tp)
        or is_text(pa, tp)
        or pa.types.is_signed_integer(tp)
        or pa.types.is_floating(tp)
    )
