"""Mapping stage: coercers, which turn a value read from a row into a wire model field's type.

One coercer per wire type (timestamps, enums, decimals, text, nested models and their lists
and maps), specialised for a mapping's timezone and epoch unit by :class:`_Coercers`. A value
that cannot be coerced rejects the row, naming the field path. The load-time checks of a
mapping's sources against the wire models' fields (a misspelt nested field, a table where one
value is expected) sit here too. A new wire field type gets its coercer in
:meth:`_Coercers.for_field`.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from datetime import tzinfo
from decimal import Decimal
from enum import Enum
from typing import Any

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
    to_scalar,
    to_str,
    to_timestamp_ms,
    to_user_attribute,
)
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
from .getters import Getter, _getter
from .rejects import _join, _Reject, _under
from .sources import ListOf, Source, Struct

__all__ = ["Coercer", "_Coercers"]

Coercer = Callable[[Any, str], Any]


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


def _check_struct(source: Source, field: attrs.Attribute[Any], path: str) -> None:
    """Catch a misspelt nested field name when the mapping is built, not on every row."""
    tp = _non_optional(field.type)
    if typing.get_origin(tp) is tuple:
        tp = typing.get_args(tp)[0]
        if isinstance(source, ListOf):
            for index, item in enumerate(source.items):
                _check_struct_of(item, tp, f"{path}[{index}]")
            return
    _check_struct_of(source, tp, path)


def _check_struct_of(source: Source, tp: Any, path: str) -> None:
    if not (isinstance(source, Struct) and isinstance(tp, type) and attrs.has(tp)):
        return
    fields = {field.name: field for field in attrs.fields(attrs.resolve_types(tp))}
    for name, item in source.fields:
        if name not in fields:
            raise MappingError(f"{path}: {tp.__name__} has no field {name!r}")
        _check_struct(item, fields[name], _join(path, name))
