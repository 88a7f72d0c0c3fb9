"""Compiling a mapping: one closure per mapped field, built once when the mapping is made.

Running them over rows is :mod:`.run`'s job. A bad value raises :class:`_Reject` naming the field path; the row is recorded as
rejected and the run goes on. Only the batch being filled is held in memory.

Limit policy for mParticle's documented limits, applied here and documented in docs/mapping.md:

- event name over 256 characters: truncated to 256, as mParticle does for S2S (counted);
- attribute name over 256 characters, attribute value over 4096 characters, more than 100
  attributes on an event, more than 100 user attributes on a row, a user attribute list over
  1000 entries or with an entry over 512 characters: the row is rejected;
- rows of one user whose user attributes would exceed 100 together go to separate batches.
"""

from __future__ import annotations

import difflib
import logging
import math
import operator
import types
import typing
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import tzinfo
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._errors import MappingError, ModelError, type_name
from .._source.coerce import (
    MAX_TIMESTAMP_MS,
    CoercionError,
    EpochUnit,
    parse_json,
    to_bool,
    to_decimal,
    to_float,
    to_int,
    to_key_str,
    to_scalar,
    to_str,
    to_timestamp_ms,
    to_user_attribute,
)
from .._wire.common import DEVICE_IDENTITY_FIELDS, ApplicationInfo, Context, DeviceInfo
from .._wire.enums import CustomEventType, EventType, ProductActionType, PromotionActionType
from .._wire.models import EVENT_CLASSES, Batch, CommerceEvent, CustomEvent, Event, ScreenViewEvent
from .._wire.sparse import layout
from .._wire.values import (
    UserAttributeValue,
    decimal_number,
    optional_decimal,
    optional_device_id,
    optional_device_uuid,
    optional_ip,
    optional_timestamp_ms,
    optional_uuid,
    timestamp_ms,
)
from .sources import (
    RESERVED_USER_ATTRIBUTES,
    Attributes,
    Column,
    Computed,
    Constant,
    ListOf,
    Source,
    Struct,
    SyncKind,
)

if TYPE_CHECKING:  # the mapping classes import this module to compile themselves
    from .spec import CommerceEventMapping, CustomEventMapping, EventMapping, RowMapping

__all__ = ["CompiledMapping", "check_columns", "compile_mapping"]

logger = logging.getLogger(__name__)

MAX_EVENT_NAME = 256
MAX_ATTRIBUTE_NAME = 256
MAX_ATTRIBUTE_VALUE = 4096
MAX_EVENT_ATTRIBUTES = 100
MAX_USER_ATTRIBUTES = 100
MAX_USER_ATTRIBUTE_LIST = 1000
MAX_USER_ATTRIBUTE_LIST_ENTRY = 512
_INT64 = 2**63

_RESERVED_LOWER = frozenset(name.lower() for name in RESERVED_USER_ATTRIBUTES)
#: Column value types for which equal values always map to the same output.
_CACHEABLE_TYPES = frozenset({str, int, bool, float, type(None)})


class _Reject(Exception):  # noqa: N818 - control flow, never escapes this module
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _under(path: str, field: str | None) -> str:
    """A field reported by a coercer called with a path relative to ``path``, made whole."""
    return _join(path, field) if field else path


Getter = Callable[[Mapping[str, Any]], Any]
Coercer = Callable[[Any, str], Any]


# --- sources → getters ----------------------------------------------------------------------


def _getter(source: Source, path: str) -> Getter:
    if isinstance(source, Column):
        name = source.name

        def column(row: Mapping[str, Any]) -> Any:
            try:
                return row[name]
            except KeyError:
                raise _Reject(path, f"column {name!r} is not in the row") from None

        return column
    if isinstance(source, Constant):
        value = source.value
        return lambda _row: value
    if isinstance(source, Computed):
        function, label = source.function, source.qualified_name

        def computed(row: Mapping[str, Any]) -> Any:
            try:
                return function(row)
            except Exception as exc:  # noqa: BLE001 - user code; its failure rejects only this row
                raise _Reject(path, f"{label} raised {type(exc).__name__}: {exc}") from None

        return computed
    if isinstance(source, Struct):
        parts = [(name, _getter(item, _join(path, name))) for name, item in source.fields]
        return lambda row: {name: get(row) for name, get in parts}
    items = [_getter(item, f"{path}[{index}]") for index, item in enumerate(source.items)]
    return lambda row: [get(row) for get in items]


def _columns_of(source: Source | None) -> Iterator[str]:
    if isinstance(source, Column):
        yield source.name
    elif isinstance(source, Struct):
        for _, item in source.fields:
            yield from _columns_of(item)
    elif isinstance(source, ListOf):
        for item in source.items:
            yield from _columns_of(item)


# --- wire types → coercers -------------------------------------------------------------------


def _wrap(function: Callable[[Any], Any]) -> Coercer:
    def coerce(value: Any, path: str) -> Any:
        try:
            return function(value)
        except (CoercionError, ModelError) as exc:
            raise _Reject(path, str(exc)) from None

    return coerce


def _then(first: Coercer, converter: Callable[[Any], Any]) -> Coercer:
    def coerce(value: Any, path: str) -> Any:
        result = first(value, path)
        try:
            return converter(result)
        except ModelError as exc:
            raise _Reject(path, str(exc)) from None

    return coerce


def _decimal(value: Any, path: str) -> Decimal:
    """to_decimal, with the floats and ints of JSON columns handled without a detour."""
    cls = value.__class__
    if cls is float:
        if math.isfinite(value):
            return Decimal(repr(value))  # as to_decimal does: the float's shortest text
    elif cls is int:
        return Decimal(value)
    try:
        return to_decimal(value)
    except CoercionError as exc:
        raise _Reject(path, str(exc)) from None


def _as_built(value: Any, path: str) -> Any:
    """The coercer of a value its getter already built and checked."""
    return value


def _model_decimal(value: Any, path: str) -> Any:
    """For a field whose model converter makes the Decimal: a finite float or an int goes
    to it as it is (the converter turns it into the same Decimal, and caches it)."""
    cls = value.__class__
    if cls is int or (cls is float and math.isfinite(value)):
        return value
    return _decimal(value, path)


def _by_value(coercer: Coercer, enum: type[Enum]) -> Coercer:
    """``coercer`` with its answers for each member's exact value worked out in advance."""
    known: dict[str, Any] = {}
    for member in enum:
        if isinstance(member.value, str):
            try:
                known[member.value] = coercer(member.value, "")
            except _Reject:
                continue  # a value the model refuses stays refused, row by row

    def coerce(value: Any, path: str) -> Any:
        if value.__class__ is str:
            result = known.get(value)
            if result is not None:
                return result
        return coercer(value, path)

    return coerce


def _parsed(value: Any, path: str) -> Any:
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        try:
            return parse_json(value)
        except CoercionError as exc:
            raise _Reject(path, str(exc)) from None
    return value


def _refuse_table(source: Source | None, path: str) -> None:
    """A table (or list) where one value is expected is a mistake: refuse it at load."""
    if isinstance(source, (Struct, ListOf)):
        kind = "a table" if isinstance(source, Struct) else "a list"
        raise MappingError(
            f"{path}: expected a column, a constant or a computed value, got {kind} "
            "(a misspelt column/const key?)"
        )


def _non_optional(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


class _Coercers:
    """Coercers for wire model classes, specialised for one mapping's timezone and epoch unit."""

    def __init__(self, tz: tzinfo | None, unit: EpochUnit) -> None:
        self.tz = tz
        self.unit = unit
        self._structs: dict[type, Coercer] = {}
        self._tables: dict[type, tuple[dict[str, tuple[Coercer, type | None]], list[str]]] = {}

    def timestamp(self, value: Any, path: str) -> int:
        if (
            value.__class__ is int
            and self.unit is EpochUnit.MILLISECONDS
            and 0 <= value <= MAX_TIMESTAMP_MS
        ):
            return value  # what to_timestamp_ms returns for it, without the calls
        try:
            return to_timestamp_ms(value, unit=self.unit, tz=self.tz)
        except CoercionError as exc:
            raise _Reject(path, str(exc)) from None

    def for_field(self, field: attrs.Attribute[Any]) -> Coercer:
        converter: Any = field.converter
        tp = _non_optional(field.type)
        if converter in (optional_timestamp_ms, timestamp_ms):
            return self.timestamp
        if converter in (optional_uuid, optional_ip, optional_device_uuid, optional_device_id):
            return _then(_wrap(to_str), converter)
        if isinstance(tp, type) and issubclass(tp, Enum):
            coercer = _then(_wrap(to_str), converter) if converter else _wrap(tp)
            return _by_value(coercer, tp)
        if tp is Decimal:
            return _model_decimal if converter in (optional_decimal, decimal_number) else _decimal
        if field.type == UserAttributeValue:  # a change event's new and old values
            tz = self.tz
            return _wrap(lambda value: to_user_attribute(value, tz=tz))
        simple = {str: to_str, bool: to_bool, int: to_int, float: to_float}
        if tp in simple:
            return _wrap(simple[tp])
        if isinstance(tp, type) and attrs.has(tp):
            return self.struct(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is tuple and args and attrs.has(args[0]):
            return self.struct_list(args[0])
        if origin is tuple and args and args[0] is str:
            return self.string_list
        if origin is dict and attrs.has(args[1]):
            return self.struct_map(args[1])
        if origin is dict and args[1] is str:
            return self.string_map
        if origin is dict and typing.get_origin(args[1]) is dict:
            return self.nested_string_map
        if origin is dict:
            return self.scalar_map
        raise MappingError(
            f"field {field.name} of type {tp!r} cannot be mapped"
        )  # pragma: no cover

    def struct(self, cls: type) -> Coercer:
        cached = self._structs.get(cls)
        if cached is not None:
            return cached
        plans: dict[str, Coercer] = {}
        #: field name -> (its coercer, the type its values may have to pass unchanged)
        table: dict[str, tuple[Coercer, type | None]] = {}
        # A class met again while its own plans are built (none today) finds this entry.
        self._structs[cls] = lambda value, path: struct(value, path)  # noqa: PLW0108
        fields = attrs.fields(attrs.resolve_types(cls))
        for field in fields:
            plans[field.name] = self.for_field(field)
        # A str or int field without a converter keeps a value of exactly that type as it
        # is: no coercer call for it.
        for field in fields:
            tp = _non_optional(field.type)
            as_is: type | None = None
            if field.converter is None and tp in (str, int):
                as_is = tp
            elif plans[field.name] is _model_decimal:
                as_is = int  # what _model_decimal returns unchanged (bool is not int)
            table[field.name] = (plans[field.name], as_is)
        required = [f.name for f in fields if f.default is attrs.NOTHING]
        self._tables[cls] = (table, required)
        name = cls.__name__
        lookup = table.get

        def struct(value: Any, path: str) -> Any:
            if value.__class__ is not dict:
                value = _parsed(value, path)
                if not isinstance(value, Mapping):
                    raise _Reject(
                        path, f"expected a {name} object (or JSON text), got {type_name(value)}"
                    )
            kwargs: dict[str, Any] = {}
            for key, item in value.items():
                entry = lookup(key) if key.__class__ is str or isinstance(key, str) else None
                if entry is None:
                    raise _Reject(_join(path, str(key)), f"{name} has no field {key!r}")
                if item is None:
                    continue
                plan, as_is = entry
                if item.__class__ is as_is:
                    kwargs[key] = item
                else:
                    # The field's path is built only on rejection: most rows have none.
                    try:
                        kwargs[key] = plan(item, key)
                    except _Reject as exc:
                        raise _Reject(_under(path, exc.field), exc.reason) from None
            for key in required:
                if key not in kwargs:
                    raise _Reject(_join(path, key), "required field is missing or null")
            try:
                return cls(**kwargs)
            except ModelError as exc:
                raise _Reject(path, str(exc)) from None

        self._structs[cls] = struct
        return struct

    def table(self, cls: type) -> tuple[dict[str, tuple[Coercer, type | None]], list[str]]:
        """``cls``'s field coercers (with the exact type each passes unchanged), and its
        required fields."""
        self.struct(cls)
        return self._tables[cls]

    def struct_from_sources(self, cls: type, source: Struct, path: str) -> Getter | None:
        """``cls`` built straight from a Struct's sources: what ``struct`` does with the dict
        the Struct's getter builds, without building it. None when that would differ (a
        field named twice).

        Its coercion loop repeats ``struct``'s on purpose: a shared helper costs a call per
        nested field, about 5% of the end-to-end benchmark (e), which sits near its target.
        """
        self.struct(cls)
        table, required = self._tables[cls]
        names = [name for name, _ in source.fields]
        if len(set(names)) != len(names) or not set(names) <= table.keys():
            return None
        parts = [
            (name, table[name][0], table[name][1], _getter(item, _join(path, name)))
            for name, item in source.fields
        ]
        getters = [get for _, _, _, get in parts]

        def build(row: Mapping[str, Any]) -> Any:
            # Every source is read first, as the Struct's getter does, then coerced in order.
            values = [get(row) for get in getters]
            kwargs: dict[str, Any] = {}
            for (name, plan, as_is, _), item in zip(parts, values, strict=True):
                if item is None:
                    continue
                if item.__class__ is as_is:
                    kwargs[name] = item
                else:
                    try:
                        kwargs[name] = plan(item, name)
                    except _Reject as exc:
                        raise _Reject(_under(path, exc.field), exc.reason) from None
            for key in required:
                if key not in kwargs:
                    raise _Reject(_join(path, key), "required field is missing or null")
            try:
                return cls(**kwargs)
            except ModelError as exc:
                raise _Reject(path, str(exc)) from None

        return build

    def struct_list(self, cls: type) -> Coercer:
        item_coercer = self.struct(cls)

        def struct_list(value: Any, path: str) -> tuple[Any, ...]:
            value = _parsed(value, path)
            if isinstance(value, Mapping):
                value = [value]  # one object where a list is expected: a list of one
            if not isinstance(value, (list, tuple)):
                raise _Reject(path, f"expected a list of objects, got {type_name(value)}")
            out = []
            for index, item in enumerate(value):
                if item is None:
                    raise _Reject(f"{path}[{index}]", "null where an object is expected")
                try:
                    out.append(item_coercer(item, ""))
                except _Reject as exc:
                    raise _Reject(_under(f"{path}[{index}]", exc.field), exc.reason) from None
            return tuple(out)

        return struct_list

    def struct_map(self, cls: type) -> Coercer:
        """Named objects (GDPR consent purposes): a name whose sources are all null is left out."""
        item_coercer = self.struct(cls)

        def struct_map(value: Any, path: str) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, item in self._map(value, path).items():
                if item is None or (isinstance(item, Mapping) and _all_null(item)):
                    continue
                where = _join(path, str(key))
                try:
                    out[str(key)] = item_coercer(item, "")
                except _Reject as exc:
                    raise _Reject(_under(where, exc.field), exc.reason) from None
            return out or None  # type: ignore[return-value]  # None: the field is left unset

        return struct_map

    def string_list(self, value: Any, path: str) -> tuple[str, ...]:
        """A list of names: a driver's array, a JSON array, or one name."""
        value = (
            _parsed(value, path) if isinstance(value, str) and value.lstrip()[:1] == "[" else value
        )
        items = value if isinstance(value, (list, tuple)) else [value]
        out = []
        for index, item in enumerate(items):
            if item is None:
                continue
            try:
                text = to_str(item).strip()
            except CoercionError as exc:
                raise _Reject(f"{path}[{index}]", str(exc)) from None
            if text:
                out.append(text)
        return tuple(out)

    def _map(self, value: Any, path: str) -> Mapping[Any, Any]:
        value = _parsed(value, path)
        if not isinstance(value, Mapping):
            raise _Reject(path, f"expected an object of attributes, got {type_name(value)}")
        return value

    def string_map(self, value: Any, path: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, item in self._map(value, path).items():
            if item is None:
                continue
            where = _join(path, str(key))
            out[str(key)] = _as_text(item, where, self.tz)
        return out

    def nested_string_map(self, value: Any, path: str) -> dict[str, dict[str, str]]:
        return {
            str(key): self.string_map(item, _join(path, str(key)))
            for key, item in self._map(value, path).items()
            if item is not None
        }

    def scalar_map(self, value: Any, path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in self._map(value, path).items():
            if item is None:
                continue
            try:
                out[str(key)] = to_scalar(item, tz=self.tz)
            except CoercionError as exc:
                raise _Reject(_join(path, str(key)), str(exc)) from None
        return out


def _all_null(value: Mapping[Any, Any]) -> bool:
    """True when every leaf of nested sources is null: flat columns of an absent object."""
    return all(
        item is None or (isinstance(item, Mapping) and _all_null(item)) for item in value.values()
    )


def _empty(value: Any) -> bool:
    """A batch-level value with nothing in it, which is left out rather than sent empty."""
    if value is None or value in ((), {}):
        return True
    if attrs.has(type(value)):
        return all(_empty(getattr(value, field.name)) for field in attrs.fields(type(value)))
    return False


def _as_text(value: Any, path: str, tz: tzinfo | None) -> str:
    """String-typed attribute values (product custom_attributes): scalars rendered as text."""
    try:
        scalar = to_scalar(value, tz=tz)
    except CoercionError as exc:
        raise _Reject(path, str(exc)) from None
    if isinstance(scalar, bool):
        return "true" if scalar else "false"
    if isinstance(scalar, float):
        return repr(scalar)
    return str(scalar)


# --- attribute maps ---------------------------------------------------------------------------


@attrs.frozen
class _AttributeMap:
    field: str
    explicit: tuple[tuple[str, Getter], ...]
    #: For each explicit pair, the column its value is read from (None: not a column).
    explicit_columns: tuple[str | None, ...]
    prefix: str | None
    strip_prefix: bool
    remaining: bool
    json_column: str | None
    user: bool  # user attributes (lists allowed, '$' reserved) or event attributes
    limit: int | None  # how many attributes one row may set


def _check_name(name: Any, field: str, *, user: bool) -> str:
    if not isinstance(name, str):
        raise _Reject(field, f"attribute name {name!r} is not text")
    if not name:
        raise _Reject(field, "an attribute name is empty")
    if len(name) > MAX_ATTRIBUTE_NAME:
        raise _Reject(
            _join(field, name[:40] + "..."),
            f"attribute name is {len(name)} characters; mParticle allows {MAX_ATTRIBUTE_NAME}",
        )
    if user and name.startswith("$") and name.lower() not in _RESERVED_LOWER:
        raise _Reject(_join(field, name), "names starting with '$' are reserved by mParticle")
    return name


def _is_plain(value: Any) -> bool:
    """A value every attribute accepts as it is: short text, an int, a bool, a finite float."""
    cls = value.__class__
    if cls is str:
        return len(value) <= MAX_ATTRIBUTE_VALUE
    return (
        (cls is int and -_INT64 <= value < _INT64)
        or cls is bool
        or (cls is float and math.isfinite(value))
    )


def _check_text(value: Any, path: str, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        raise _Reject(path, f"value is {len(value)} characters; mParticle allows {limit}")


class _AttributeBuilder:
    def __init__(
        self,
        spec: _AttributeMap,
        used: frozenset[str],
        prefixes: tuple[str, ...],
        tz: tzinfo | None,
    ) -> None:
        self.spec = spec
        self.used = used
        self.prefixes = prefixes
        self.tz = tz
        # Explicit names are fixed by the mapping: check them once here, not on every row.
        explicit = []
        for (name, get), column in zip(spec.explicit, spec.explicit_columns, strict=True):
            try:
                _check_name(name, spec.field, user=spec.user)
            except _Reject:
                checked = False  # checked (and rejected) per row, as any other name
            else:
                checked = True
            explicit.append((name, column, get, checked))
        self.explicit = tuple(explicit)
        self.has_rest = spec.prefix is not None or spec.remaining or spec.json_column is not None
        self.limit = spec.limit
        # The common case, every explicit source a column with a valid name: one itemgetter
        # fetches all their values at once.
        self.fetch_all: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        if explicit and all(column is not None and ok for _, column, _, ok in explicit):
            columns = [column for _, column, _, _ in explicit]
            getter = operator.itemgetter(*columns)
            self.fetch_all = getter if len(columns) > 1 else lambda row: (getter(row),)
            self.names = tuple(name for name, _, _, _ in explicit)

    def _value(self, value: Any, path: str) -> Any:
        try:
            if self.spec.user:
                result = to_user_attribute(value, tz=self.tz)
            else:
                result = to_scalar(value, tz=self.tz)
        except CoercionError as exc:
            raise _Reject(path, str(exc)) from None
        if isinstance(result, list):
            if len(result) > MAX_USER_ATTRIBUTE_LIST:
                raise _Reject(
                    path,
                    f"list has {len(result)} entries; mParticle allows {MAX_USER_ATTRIBUTE_LIST}",
                )
            for index, item in enumerate(result):
                _check_text(item, f"{path}[{index}]", MAX_USER_ATTRIBUTE_LIST_ENTRY)
        else:
            _check_text(result, path, MAX_ATTRIBUTE_VALUE)
        return result

    def _put(self, out: dict[str, Any], name: Any, value: Any) -> None:
        if value is None:
            return
        field = self.spec.field
        checked = _check_name(name, field, user=self.spec.user)
        if _is_plain(value):
            out[checked] = value
        else:
            out[checked] = self._value(value, _join(field, checked))

    def build(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        values: tuple[Any, ...] | None = None
        if self.fetch_all is not None:
            try:
                values = self.fetch_all(row)
            except KeyError:
                values = None  # the loop below rejects the row, naming the column
        if values is not None:
            for name, value in zip(self.names, values, strict=True):
                if value is None:
                    continue
                # _is_plain inlined: this runs for every attribute of every row.
                cls = value.__class__
                if (
                    (cls is str and len(value) <= MAX_ATTRIBUTE_VALUE)
                    or (cls is int and -_INT64 <= value < _INT64)
                    or cls is bool
                    or (cls is float and math.isfinite(value))
                ):
                    out[name] = value
                else:
                    self._put(out, name, value)
        else:
            self._explicit(row, out)
        if self.has_rest or (self.limit is not None and len(out) > self.limit):
            return self._rest(row, out)
        return out

    def _explicit(self, row: Mapping[str, Any], out: dict[str, Any]) -> None:
        for name, column, get, checked in self.explicit:
            if column is None:
                value = get(row)
            else:
                try:
                    value = row[column]
                except KeyError:
                    value = get(row)  # raises the missing column's rejection
            if value is None:
                continue
            if checked:
                # _is_plain inlined: this runs for every attribute of every row.
                cls = value.__class__
                if (
                    (cls is str and len(value) <= MAX_ATTRIBUTE_VALUE)
                    or (cls is int and -_INT64 <= value < _INT64)
                    or cls is bool
                    or (cls is float and math.isfinite(value))
                ):
                    out[name] = value
                    continue
            self._put(out, name, value)

    def _rest(self, row: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        """The prefix, remaining and JSON parts of the map, and the count limit."""
        spec = self.spec
        if spec.prefix is not None:
            prefix, cut = spec.prefix, len(spec.prefix) if spec.strip_prefix else 0
            for column, value in row.items():
                if (
                    isinstance(column, str)
                    and column.startswith(prefix)
                    and column not in self.used
                ):
                    self._put(out, column[cut:], value)
        if spec.remaining:
            for column, value in row.items():
                if not isinstance(column, str):
                    raise _Reject(spec.field, f"column name {column!r} is not text")
                if column in self.used or column.startswith(self.prefixes):
                    continue
                self._put(out, column, value)
        if spec.json_column is not None:
            try:
                raw = row[spec.json_column]
            except KeyError:
                raise _Reject(
                    spec.field, f"column {spec.json_column!r} is not in the row"
                ) from None
            if raw is not None:
                document = _parsed(raw, spec.field)
                if not isinstance(document, Mapping):
                    raise _Reject(spec.field, f"column {spec.json_column!r} is not a JSON object")
                for name, value in document.items():
                    self._put(out, name, value)
        if spec.limit is not None and len(out) > spec.limit:
            raise _Reject(
                spec.field,
                f"{len(out)} attributes; mParticle allows {spec.limit} per {'batch' if spec.user else 'event'}",
            )
        return out


# --- compiling a mapping -------------------------------------------------------------------------


@attrs.define
class _Mapped:
    """One row, mapped: the user part (the batch key) and at most one event."""

    user_key: tuple[Any, ...]
    identities: tuple[tuple[str, str], ...]
    device: tuple[tuple[str, Any], ...]
    mpid: int | None
    mp_deviceid: str | None
    ip: str | None
    application_info: ApplicationInfo | None
    context: Context | None
    user_attributes: dict[str, Any] | None
    event: Event | None
    truncated: int
    #: Other batch-level fields (consent_state, partner_identities, ...): (name, value) pairs.
    extras: tuple[tuple[str, Any], ...] = ()


_COMMERCE_FIELDS = (
    "product_action",
    "promotion_action",
    "product_impressions",
    "shopping_cart",
    "currency_code",
    "screen_name",
    "is_non_interactive",
    "event_name",
)
#: The event class of each single-type event mapping (the general one chooses per row).
_EVENT_CLASS_OF_KIND: dict[SyncKind, type[Event]] = {
    SyncKind.CUSTOM_EVENT: CustomEvent,
    SyncKind.COMMERCE_EVENT: CommerceEvent,
    SyncKind.SCREEN_VIEW: ScreenViewEvent,
}

#: Batch-level fields a mapping may give, mapped as their wire models have them.
BATCH_EXTRAS = (
    "consent_state",
    "partner_identities",
    "integration_attributes",
    "attribution_info",
    "deleted_user_attributes",
)

_EVENT_FIELDS = (
    "timestamp_unixtime_ms",
    "source_message_id",
    "session_uuid",
    "location",
    "device_current_state",
)


class CompiledMapping:
    """A mapping turned into per-field closures; ``map_row`` maps one row or raises _Reject."""

    def __init__(self, mapping: RowMapping) -> None:
        self.mapping = mapping
        self._to_text = _wrap(to_str)
        self._to_event_type = _then(self._to_text, _custom_event_type)
        self._to_ip = _then(self._to_text, optional_ip)
        tz = zoneinfo.ZoneInfo(mapping.timezone) if mapping.timezone else None
        coercers = _Coercers(tz, mapping.epoch_unit)
        self.key_column = mapping.key_column
        for group in ("user_identities", "device_identities"):
            for name, source in getattr(mapping, group):
                _refuse_table(source, _join(group, name))
        for name in ("mpid", "ip"):
            _refuse_table(getattr(mapping, name), name)
        self.identities = [
            (name, _getter(source, _join("user_identities", name)))
            for name, source in mapping.user_identities
        ]
        # Identities read from columns (the usual case) are fetched together.
        self.identity_fetch: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        identity_columns = [source for _, source in mapping.user_identities]
        if identity_columns and all(isinstance(c, Column) for c in identity_columns):
            getter = operator.itemgetter(*(cast(Column, c).name for c in identity_columns))
            self.identity_fetch = (
                getter if len(identity_columns) > 1 else lambda row: (getter(row),)
            )
        device_fields = {
            field.name: field for field in attrs.fields(attrs.resolve_types(DeviceInfo))
        }
        self.device: list[tuple[str, Getter, Coercer]] = []
        self.mp_deviceid: tuple[Getter, Coercer] | None = None
        for name, source in mapping.device_identities:
            if name == "mp_deviceid":
                self.mp_deviceid = (
                    _getter(source, "mp_deviceid"),
                    _then(_wrap(to_str), optional_device_uuid),
                )
            else:
                path = _join("device_info", name)
                self.device.append(
                    (name, _getter(source, path), coercers.for_field(device_fields[name]))
                )
        self.mpid = None if mapping.mpid is None else _getter(mapping.mpid, "mpid")
        self.ip = None if mapping.ip is None else _getter(mapping.ip, "ip")
        self.application_info = self._nested(
            mapping.application_info, "application_info", coercers.struct(ApplicationInfo)
        )
        self.context = self._nested(mapping.context, "context", coercers.struct(Context))
        self.extras = self._batch_extras(mapping, coercers)
        self.device_extra = self._device_extra(mapping, coercers)

        used: set[str] = set()
        if self.key_column:
            used.add(self.key_column)
        for field in attrs.fields(type(mapping)):
            if not field.init:
                continue
            value = getattr(mapping, field.name)
            if isinstance(value, tuple):
                for item in value:
                    if isinstance(item, tuple) and len(item) == 2:
                        used.update(_columns_of(item[1]))
            elif isinstance(value, Attributes):
                for _, source in value.columns:
                    used.update(_columns_of(source))
                if value.json_column:
                    used.add(value.json_column)
            elif isinstance(value, (Column, Struct, ListOf)):
                used.update(_columns_of(value))
        self.used_columns = frozenset(used)
        prefixes = tuple(maps.prefix for _, maps in mapping.attribute_maps() if maps.prefix)

        self.attribute_builders: dict[str, _AttributeBuilder] = {}
        for name, maps in mapping.attribute_maps():
            user = name == "user_attributes"
            limit = (
                MAX_USER_ATTRIBUTES
                if user
                else (MAX_EVENT_ATTRIBUTES if name == "custom_attributes" else None)
            )
            spec = _AttributeMap(
                field=name,
                explicit=tuple(
                    (attr, _getter(source, _join(name, attr))) for attr, source in maps.columns
                ),
                explicit_columns=tuple(
                    source.name if isinstance(source, Column) else None
                    for _, source in maps.columns
                ),
                prefix=maps.prefix,
                strip_prefix=maps.strip_prefix,
                remaining=maps.remaining,
                json_column=maps.json_column,
                user=user,
                limit=limit,
            )
            self.attribute_builders[name] = _AttributeBuilder(spec, self.used_columns, prefixes, tz)
        self.user_attributes = self.attribute_builders.get("user_attributes")
        self._plan_user_cache(mapping)
        self.event_attributes = [
            (name, self.attribute_builders[name])
            for name in ("custom_attributes", "custom_flags")
            if name in self.attribute_builders
        ]

        self.event_cls: type[Event] | None = None
        self.event_fields: list[tuple[str, Getter, Coercer]] = []
        #: Required fields of the event class that the mapping gives (null: the row is rejected).
        self.required_event_fields: tuple[str, ...] = ()
        #: The general event mapping: the event type and the type's own fields, per row.
        self.event_type: Getter | None = None
        self.event_data: Getter | None = None
        self._coercers = coercers
        #: Event fields built straight from a Struct's sources: the model class, and its
        #: coercion table and required fields (what that builder uses; the Arrow engine too).
        self.struct_plans: dict[
            str, tuple[type, dict[str, tuple[Coercer, type | None]], list[str]]
        ] = {}
        self.event_name: Getter | None = None
        self.custom_event_type: Getter | None = None
        #: The custom event type, when a constant gives a valid one: coerced once, not per row.
        self.fixed_event_type: CustomEventType | None = None
        if mapping.kind is not SyncKind.USER_ATTRIBUTES:
            cls: type[Event] = _EVENT_CLASS_OF_KIND.get(mapping.kind, CustomEvent)
            self.event_cls = cls
            fields = {field.name: field for field in attrs.fields(attrs.resolve_types(cls))}
            names = list(_EVENT_FIELDS)
            if mapping.kind is SyncKind.SCREEN_VIEW:
                names += ["screen_name", "activity_type"]
                self.required_event_fields = ("screen_name",)
            elif mapping.kind is SyncKind.EVENT:
                general = cast("EventMapping", mapping)
                self.event_type = _getter(general.event_type, "event_type")
                if general.data is not None:
                    self.event_data = _getter(general.data, "data")
            elif mapping.kind is SyncKind.COMMERCE_EVENT:
                commerce = cast("CommerceEventMapping", mapping)
                names += [n for n in _COMMERCE_FIELDS if n != "event_name"]
                if commerce.event_name is not None:
                    self.event_name = _getter(commerce.event_name, "event_name")
            elif mapping.kind is SyncKind.CUSTOM_EVENT:
                custom = cast("CustomEventMapping", mapping)
                _refuse_table(custom.event_name, "event_name")
                _refuse_table(custom.custom_event_type, "custom_event_type")
                self.event_name = _getter(custom.event_name, "event_name")
                self.custom_event_type = _getter(custom.custom_event_type, "custom_event_type")
                self.fixed_event_type = self._fixed_event_type(custom.custom_event_type)
            for name in names:
                source = getattr(mapping, name)
                if source is None:
                    continue
                self._check_struct(source, fields[name], name)
                tp = _non_optional(fields[name].type)
                if typing.get_origin(tp) is None and isinstance(tp, type) and not attrs.has(tp):
                    _refuse_table(source, name)  # a scalar field: text, a number, an enum
                built = (
                    coercers.struct_from_sources(tp, source, name)
                    if isinstance(source, Struct) and isinstance(tp, type) and attrs.has(tp)
                    else None
                )
                if built is not None:
                    self.event_fields.append((name, built, _as_built))
                    self.struct_plans[name] = (tp, *coercers.table(tp))
                else:
                    self.event_fields.append(
                        (name, _getter(source, name), coercers.for_field(fields[name]))
                    )

    def _batch_extras(
        self, mapping: RowMapping, coercers: _Coercers
    ) -> list[tuple[str, Getter, Coercer]]:
        fields = {field.name: field for field in attrs.fields(attrs.resolve_types(Batch))}
        extras = []
        for name in BATCH_EXTRAS:
            source = getattr(mapping, name)
            if source is None:
                continue
            self._check_struct(source, fields[name], name)
            extras.append((name, _getter(source, name), coercers.for_field(fields[name])))
        return extras

    def _device_extra(
        self, mapping: RowMapping, coercers: _Coercers
    ) -> tuple[Getter, Coercer] | None:
        """``device_info``'s other fields (platform, os_version, ...); identities go elsewhere."""
        source = mapping.device_info
        if source is None:
            return None
        fields = {field.name: field for field in attrs.fields(attrs.resolve_types(Batch))}
        self._check_struct(source, fields["device_info"], "device_info")
        if isinstance(source, Struct):
            named = {name for name, _ in source.fields} & set(DEVICE_IDENTITY_FIELDS)
            if named:
                raise MappingError(
                    f"device_info: {', '.join(sorted(named))} are device identities; map them "
                    "under device_identities, where they are trimmed and count as the row's identity"
                )
        return _getter(source, "device_info"), coercers.struct(DeviceInfo)

    def _plan_user_cache(self, mapping: RowMapping) -> None:
        """Reuse of the user part between consecutive rows with the same user columns.

        Only when the user part is identities and explicit user attributes read straight from
        columns: then it is a function of those columns' values alone.
        """
        self.user_fetch: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        self._last_raw: tuple[Any, ...] | None = None
        self._last_types: tuple[type, ...] | None = None
        self._last_user: tuple[Any, Any, Any] = ((), None, ())
        builder = self.user_attributes
        if (
            self.identity_fetch is None
            or self.device
            or self.mp_deviceid is not None
            or self.mpid is not None
            or self.ip is not None
            or self.application_info is not None
            or self.context is not None
            or self.extras
            or self.device_extra is not None
            or builder is None
            or builder.fetch_all is None
            or builder.has_rest
            or len(builder.names) > MAX_USER_ATTRIBUTES
        ):
            return
        columns = [cast(Column, source).name for _, source in mapping.user_identities]
        columns += [column for _, column, _, _ in builder.explicit if column is not None]
        self.user_fetch = operator.itemgetter(*columns)  # at least two: an identity, an attribute

    def _fixed_event_type(self, source: Source) -> CustomEventType | None:
        if not isinstance(source, Constant) or source.value is None:
            return None
        try:
            fixed: CustomEventType = self._to_event_type(source.value, "custom_event_type")
        except _Reject:
            return None  # rejected on every row, with the reason, as any other bad value
        return fixed

    def _nested(
        self, source: Source | None, path: str, coercer: Coercer
    ) -> tuple[Getter, Coercer, str] | None:
        if source is None:
            return None
        return _getter(source, path), coercer, path

    def _check_struct(self, source: Source, field: attrs.Attribute[Any], path: str) -> None:
        """Catch a misspelt nested field name when the mapping is built, not on every row."""
        tp = _non_optional(field.type)
        if typing.get_origin(tp) is tuple:
            tp = typing.get_args(tp)[0]
            if isinstance(source, ListOf):
                for index, item in enumerate(source.items):
                    self._check_struct_of(item, tp, f"{path}[{index}]")
                return
        self._check_struct_of(source, tp, path)

    def _check_struct_of(self, source: Source, tp: Any, path: str) -> None:
        if not (isinstance(source, Struct) and isinstance(tp, type) and attrs.has(tp)):
            return
        fields = {field.name: field for field in attrs.fields(attrs.resolve_types(tp))}
        for name, item in source.fields:
            if name not in fields:
                raise MappingError(f"{path}: {tp.__name__} has no field {name!r}")
            self._check_struct(item, fields[name], _join(path, name))

    def _any_event(self, row: Mapping[str, Any], kwargs: dict[str, Any]) -> tuple[Event, int]:
        """The general mapping's event: its class from the row's event type, its own fields
        from ``data``, with the common fields already in ``kwargs``."""
        assert self.event_type is not None
        raw = self.event_type(row)
        if raw is None:
            raise _Reject("event_type", "event type is null")
        cls = _event_class(raw if raw.__class__ is str else self._to_text(raw, "event_type"))
        table, required = self._coercers.table(cls)
        if self.event_data is not None:
            data = self.event_data(row)
            if data is not None:
                data = _parsed(data, "data")
                if not isinstance(data, Mapping):
                    raise _Reject(
                        "data",
                        f"expected an object of {cls.__name__} fields, got {type_name(data)}",
                    )
                for key, item in data.items():
                    entry = table.get(key) if isinstance(key, str) else None
                    if entry is None or key in kwargs:
                        raise _Reject(
                            _join("data", str(key)),
                            f"{cls.__name__} has no field {key!r} to map here",
                        )
                    if item is not None:
                        try:
                            kwargs[key] = entry[0](item, key)
                        except _Reject as exc:
                            raise _Reject(_under("data", exc.field), exc.reason) from None
        for name, builder in self.event_attributes:
            built = builder.build(row)
            if built:
                if name not in table:
                    raise _Reject(name, f"a {cls.event_type.value} event has no {name}")
                kwargs[name] = built
        truncated = 0
        event_name = kwargs.get("event_name")
        if isinstance(event_name, str):
            # The same event-name policy as the custom event mapping's.
            event_name = event_name.strip()
            if not event_name:
                raise _Reject("data.event_name", "event name is empty")
            if len(event_name) > MAX_EVENT_NAME:
                event_name, truncated = event_name[:MAX_EVENT_NAME], 1
            kwargs["event_name"] = event_name
        for key in required:
            if key not in kwargs:
                raise _Reject(_join("data", key), f"a {cls.event_type.value} event needs {key}")
        try:
            return cls(**kwargs), truncated
        except ModelError as exc:
            raise _Reject(None, str(exc)) from None

    def primary_key(self, row: Mapping[str, Any]) -> str | None:
        column = self.key_column
        if column is None:
            return None
        try:
            value = row[column]
        except KeyError:
            raise _Reject(
                "primary_key", f"primary key column {column!r} is not in the row"
            ) from None
        if value.__class__ is str:
            return value  # what to_key_str gives text, without its type checks
        if value is None:
            raise _Reject("primary_key", f"primary key column {column!r} is null")
        try:
            return to_key_str(value)
        except CoercionError as exc:
            raise _Reject("primary_key", str(exc)) from None

    def map_row(self, row: Mapping[str, Any]) -> _Mapped:
        """Map one row, or raise _Reject naming the field."""
        fetch = self.user_fetch
        if fetch is None:
            return self._map_row(row)
        try:
            raw: tuple[Any, ...] | None = fetch(row)
        except KeyError:
            raw = None  # the full path rejects the row, naming the column
        # Types first: they are all plain builtins once they match, so == cannot misbehave.
        if raw is not None and tuple(map(type, raw)) == self._last_types and raw == self._last_raw:
            # The same user columns as the row before (a user's rows come together): its
            # identities and user attributes again, with this row's event.
            identities, user_attributes, user_key = self._last_user
            event, truncated = self._event(row) if self.event_cls is not None else (None, 0)
            return _Mapped(
                user_key,
                identities,
                (),
                None,
                None,
                None,
                None,
                None,
                user_attributes,
                event,
                truncated,
            )
        mapped = self._map_row(row)
        if raw is not None:
            types = tuple(map(type, raw))
            # Only values whose equality means the same output: no datetimes (equal across
            # timezones), no Decimals, no zero (0.0 == -0.0 is written differently).
            if _CACHEABLE_TYPES.issuperset(types) and not any(
                kind is float and value == 0.0 for kind, value in zip(types, raw, strict=True)
            ):
                self._last_raw, self._last_types = raw, types
                self._last_user = (mapped.identities, mapped.user_attributes, mapped.user_key)
            else:
                self._last_raw = None
        return mapped

    def _map_row(self, row: Mapping[str, Any]) -> _Mapped:
        identities: list[tuple[str, str]] = []
        values: tuple[Any, ...] | None = None
        if self.identity_fetch is not None:
            try:
                values = self.identity_fetch(row)
            except KeyError:
                values = None  # the getters below reject the row, naming the column
        for index, (name, get) in enumerate(self.identities):
            value = get(row) if values is None else values[index]
            if value is None:
                continue
            if value.__class__ is str:
                text = value.strip()
            else:
                try:
                    text = to_str(value).strip()
                except CoercionError as exc:
                    raise _Reject(_join("user_identities", name), str(exc)) from None
            if text:
                identities.append((name, text))
        device: list[tuple[str, Any]] = []
        if self.device:
            for name, get, coerce in self.device:
                value = get(row)
                # Trimmed, and a blank one left out, as user identities are.
                if value.__class__ is str:
                    value = value.strip() or None
                if value is not None:
                    device.append((name, coerce(value, _join("device_info", name))))
        mp_deviceid = None
        if self.mp_deviceid is not None:
            value = self.mp_deviceid[0](row)
            if value.__class__ is str:
                value = value.strip() or None
            if value is not None:
                mp_deviceid = self.mp_deviceid[1](value, "mp_deviceid")
        mpid = None
        if self.mpid is not None:
            value = self.mpid(row)
            if value is not None:
                try:
                    mpid = to_int(value)
                except CoercionError as exc:
                    raise _Reject("mpid", str(exc)) from None
                if not -_INT64 <= mpid < _INT64:
                    raise _Reject("mpid", f"{mpid} is outside the 64-bit range of an mpid")
        if not (identities or device or mp_deviceid or mpid is not None):
            raise _Reject(
                "user_identities", "the row has no user identity, device identity or mpid"
            )
        ip = None
        if self.ip is not None:
            value = self.ip(row)
            if value is not None:
                ip = self._to_ip(value, "ip")
        application_info = (
            None if self.application_info is None else _nested_value(self.application_info, row)
        )
        context = None if self.context is None else _nested_value(self.context, row)
        extras: tuple[tuple[str, Any], ...] = ()
        if self.extras:
            pairs = []
            for name, get, coerce in self.extras:
                value = get(row)
                if value is not None:
                    value = coerce(value, name)
                    if not _empty(value):
                        pairs.append((name, value))
            extras = tuple(pairs)
        if self.device_extra is not None:
            value = self.device_extra[0](row)
            if value is not None and not (isinstance(value, Mapping) and _all_null(value)):
                info = self.device_extra[1](value, "device_info")
                named = [
                    (f, getattr(info, f)) for f in layout(DeviceInfo).set_fields(info._mpf_set)
                ]
                identities_given = [f for f, _ in named if f in DEVICE_IDENTITY_FIELDS]
                if identities_given:
                    raise _Reject(
                        _join("device_info", identities_given[0]),
                        "device identities are mapped under device_identities",
                    )
                device.extend(named)
        builder = self.user_attributes
        user_attributes = None if builder is None else builder.build(row)
        event, truncated = self._event(row) if self.event_cls is not None else (None, 0)
        identity_pairs = tuple(identities)
        device_pairs = tuple(device) if device else ()
        user_key = (
            identity_pairs,
            device_pairs,
            mpid,
            mp_deviceid,
            ip,
            application_info,
            context,
            extras,
        )
        # Positional, in _Mapped's field order: keywords cost more on every row.
        return _Mapped(
            user_key,
            identity_pairs,
            device_pairs,
            mpid,
            mp_deviceid,
            ip,
            application_info,
            context,
            user_attributes,
            event,
            truncated,
            extras,
        )

    def _event(self, row: Mapping[str, Any]) -> tuple[Event, int]:
        kwargs: dict[str, Any] = {}
        truncated = 0
        for name, get, coerce in self.event_fields:
            value = get(row)
            if value is None:
                if name == "timestamp_unixtime_ms":
                    # Sending it without one would silently stamp it with the arrival time.
                    raise _Reject(name, "timestamp is null")
                if name in self.required_event_fields:
                    raise _Reject(name, f"{name} is null")
                continue
            kwargs[name] = coerce(value, name)
        if self.event_type is not None:
            return self._any_event(row, kwargs)
        if self.event_name is not None:
            value = self.event_name(row)
            if value is None and self.event_cls is CustomEvent:
                raise _Reject("event_name", "event name is null")
            if value is not None:
                text = value if value.__class__ is str else self._to_text(value, "event_name")
                name = text.strip()
                if not name:
                    raise _Reject("event_name", "event name is empty")
                if len(name) > MAX_EVENT_NAME:
                    name, truncated = name[:MAX_EVENT_NAME], 1
                kwargs["event_name"] = name
        if self.fixed_event_type is not None:
            kwargs["custom_event_type"] = self.fixed_event_type
        elif self.custom_event_type is not None:
            value = self.custom_event_type(row)
            if value is None:
                raise _Reject("custom_event_type", "custom event type is null")
            kwargs["custom_event_type"] = self._to_event_type(value, "custom_event_type")
        for name, builder in self.event_attributes:
            built = builder.build(row)
            if built:
                kwargs[name] = built
        cls = self.event_cls
        assert cls is not None
        try:
            return cls(**kwargs), truncated
        except ModelError as exc:
            raise _Reject(None, str(exc)) from None


def _event_class(value: Any) -> type[Event]:
    try:
        return EVENT_CLASSES[EventType(value)]
    except (ValueError, KeyError):
        allowed = ", ".join(repr(t.value) for t in EVENT_CLASSES)
        raise _Reject(
            "event_type", f"{value!r} is not an event type; expected one of {allowed}"
        ) from None


def _custom_event_type(value: str) -> CustomEventType:
    try:
        return CustomEventType(value)
    except ValueError:
        allowed = ", ".join(repr(t.value) for t in CustomEventType)
        raise ModelError(
            f"{value!r} is not a custom event type; expected one of {allowed}"
        ) from None


def _nested_value(plan: tuple[Getter, Coercer, str] | None, row: Mapping[str, Any]) -> Any:
    if plan is None:
        return None
    get, coerce, path = plan
    value = get(row)
    return None if value is None else coerce(value, path)


def compile_mapping(mapping: RowMapping) -> CompiledMapping:
    """Compile (and so validate) a mapping; raises :class:`MappingError` on a bad definition."""
    return CompiledMapping(mapping)


# --- the run -------------------------------------------------------------------------------------


# --- the source's columns, checked before the first row ---------------------------------------

#: Enums whose values are easily written where a column name is expected.
_VALUE_ENUMS: tuple[type[Enum], ...] = (CustomEventType, ProductActionType, PromotionActionType)


def check_columns(compiled: CompiledMapping, columns: Sequence[str]) -> None:
    """Raise one :class:`MappingError` when the mapping reads a column the source lacks.

    Called with the source's column names before its first row, so a misspelt column is one
    error, not one rejected row per row. The message lists the columns that exist, the
    closest match, and suggests ``{ const = ... }`` for a name that is an enum value.
    """
    present = set(columns)
    missing = sorted(compiled.used_columns - present)
    if not missing:
        return
    problems = []
    for name in missing:
        hint = ""
        close = difflib.get_close_matches(name, columns, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        for enum in _VALUE_ENUMS:
            if name in {member.value for member in enum}:
                hint = (
                    f": {name!r} is a {enum.__name__} value, not a column; to send it on every "
                    f'row write {{ const = "{name}" }} (Constant("{name}") in code)'
                )
                break
        problems.append(f"column {name!r} is not in the source{hint}")
    shown = ", ".join(map(repr, columns)) if columns else "none"
    raise MappingError(f"{'; '.join(problems)}. The source's columns: {shown}")
