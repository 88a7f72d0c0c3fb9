"""Mapping stage: nested objects of the Arrow engine's events written as data, without models.

A model's written data is its set fields, in field order, each value as the codec writes it.
Here each value takes the steps the row path gives it — the struct coercer's plan (or the
value kept as it is, where the plan keeps values of that exact class), then the model
field's converter or its construction check — and then the codec's writing (a Decimal as
its JSON number; enums, text, numbers and text maps as orjson writes them). So the data is
what the codec writes for the model the row path builds.

Only the simple shapes are written: a class without a cross-field check, whose fields are
values or a list of such objects (a product list, as JSON text or a list of objects).
Anything else in a row — an unknown key, a value a step refuses, an empty object or list,
a single object where a list is expected — sends that row through the row path (FLAG),
which maps or rejects it with its own field path and reason.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import orjson

from .._errors import ModelError
from .._wire.sparse import _check_for
from .._wire.values import json_number, optional_decimal
from .arrow_columns import FLAG, Columns, arrow_compute, is_text, per_value
from .arrow_json import written_objects
from .arrow_lists import decimals_changed, struct_lists_written
from .coercers import Coercer, _Coercers, _non_optional, _parsed
from .rejects import _Reject
from .sources import Column, Constant, Struct

__all__ = ["StructWriter", "struct_writer"]

Writer = Callable[[Any], Any]


class _Unwritten(Exception):  # noqa: N818 - control flow, never leaves this module
    """A value this module does not write: the row path maps the row."""


#: Written numbers remembered per field before the table starts over (a bound on memory).
_KNOWN_LIMIT = 4096
_MISSING: Any = object()


#: A field's writer, the class written as it is (None: none), its remembered results per class.
_Field = tuple[Writer, "type | None", "dict[type, dict[Any, Any]]"]


def _value_writer(
    field: attrs.Attribute[Any], hint: Any, coerce: Coercer, as_is: type | None
) -> _Field:
    name = field.name
    convert: Writer
    same: type | None = None
    if field.converter is not None:
        convert = field.converter  # type: ignore[assignment]
    else:
        convert, exact = _check_for(hint)
        if exact is not None and exact is as_is:
            same = exact  # kept by the coercer and by the check: written as it is

    def steps(value: Any) -> Any:
        if value.__class__ is not as_is:
            value = coerce(value, name)
        value = convert(value)
        if value is None:
            raise _Unwritten  # the model leaves the field unset: not written here
        if value.__class__ is Decimal:
            return json_number(value)
        return value

    # An int's or a non-zero float's result is a function of its value: remembered (money
    # and quantities repeat), one table per class so that 1 and 1.0 stay apart.
    known: dict[type, dict[Any, Any]] = {int: {}, float: {}}

    def write(value: Any) -> Any:
        cls = value.__class__
        if cls is same:
            return value
        table = known.get(cls)
        if table is None or not value:
            return steps(value)
        result = table.get(value, _MISSING)
        if result is _MISSING:
            result = steps(value)
            if len(table) >= _KNOWN_LIMIT:
                table.clear()
            table[value] = result
        return result

    return write, same, known


# --- JSON text read column-wise -----------------------------------------------------------
# A list of objects in JSON text is written as it is read, less the spaces after its commas
# and colons, when a regular expression over the whole column proves each value is one the
# steps hand back unchanged and orjson writes as it reads: text without a quote, backslash or
# control character (orjson escapes only those), and without ", " or ": " (so every such
# pair in the text is a separator); integers of up to 15 digits; decimals of up to 14
# significant digits, never integral (json_number makes those ints), that Python and orjson
# write as read (a float holds 15 digits exactly, so its shortest form is the text).
_TEXT_VALUE = r'"(?:[^"\\\x00-\x1f,:]|[,:][^ "\\\x00-\x1f,:])*[,:]?"'
_NUMBER_VALUE = (
    r"(?:0|-?[1-9][0-9]{0,14}"
    r"|-?[1-9][0-9]{0,5}\.[0-9]{0,7}[1-9]"
    r"|-?0\.0{0,3}[1-9](?:[0-9]{0,6}[1-9])?)"
)


def _token(field: attrs.Attribute[Any], same: type | None) -> str | None:
    """The JSON values of ``field`` written exactly as they are read, or None."""
    if same is str:
        return _TEXT_VALUE
    converter: Any = field.converter
    if converter is optional_decimal:
        return _NUMBER_VALUE
    return None


def _list_pattern(tokens: dict[str, str]) -> str | None:
    """A non-empty JSON list of non-empty objects, a space at most after each separator, each
    key once and in field order (the writer's), every value one of ``tokens``; None without
    tokens."""
    members = [f'"{name}": ?{token}' for name, token in tokens.items()]
    if not members:
        return None
    starts = [
        "".join([members[i], *(f"(?:, ?{member})?" for member in members[i + 1 :])])
        for i in range(len(members))
    ]
    item = r"\{(?:" + "|".join(starts) + r")\}"
    return rf"^\[{item}(?:, ?{item})*\]$"


def _model_list(cls: type) -> type | None:
    """The model class of a ``tuple[Model, ...]`` field type, else None."""
    if typing.get_origin(cls) is tuple:
        args = typing.get_args(cls)
        if args and isinstance(args[0], type) and attrs.has(args[0]):
            return args[0]
    return None


class StructWriter:
    """Writes one model class's data from its fields' raw values (see the module's text)."""

    def __init__(self, cls: type, coercers: _Coercers) -> None:
        table, required = coercers.table(cls)
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.required = required
        self.rank = {field.name: rank for rank, field in enumerate(attrs.fields(cls))}
        #: A class with a check across its fields is built as a model, never written.
        self.writable = not hasattr(cls, "__attrs_post_init__")
        self.writers: dict[str, Writer] = {}
        self.fields: dict[str, _Field] = {}
        #: The lists of objects written, by field (read from JSON text column-wise).
        self.lists: dict[str, StructWriter] = {}
        #: Per field, the JSON values (a regular expression) written exactly as they are read.
        self.tokens: dict[str, str] = {}
        #: The integer fields whose values the writer hands back as they are (64 bits).
        self.ints: set[str] = set()
        self._shapes: dict[tuple[Any, ...], tuple[list[_Field], bool]] = {}
        for field in attrs.fields(cls):
            tp = _non_optional(hints[field.name])
            items = _model_list(tp)
            if items is not None and items is not cls:
                inner = StructWriter(items, coercers)
                if inner.writable:
                    self.lists[field.name] = inner
                    self.writers[field.name] = inner.written_list
                    self.fields[field.name] = (inner.write_list, None, {})
                continue
            if isinstance(tp, type) and attrs.has(tp):
                continue  # a nested object: not written here
            coerce, as_is = table[field.name]
            try:
                self.fields[field.name] = _value_writer(field, hints[field.name], coerce, as_is)
            except TypeError:
                continue  # a type without a construction check here: not written
            self.writers[field.name] = self.fields[field.name][0]
            token = _token(field, self.fields[field.name][1])
            if token is not None:
                self.tokens[field.name] = token
            if _non_optional(hints[field.name]) is int and as_is is int and not field.converter:
                self.ints.add(field.name)
        self.list_pattern = _list_pattern(self.tokens)

    def kind(self, name: str) -> str | None:
        """What a field's writer hands back as it is: "text" (str), "decimal" (finite
        numbers, see :mod:`.arrow_lists`), "int" (64-bit integers), else None."""
        token = self.tokens.get(name)
        if token == _TEXT_VALUE:
            return "text"
        if token == _NUMBER_VALUE:
            return "decimal"
        return "int" if name in self.ints else None

    def written_or_flag(self, value: Any) -> Any:
        """:meth:`written_list`, FLAG where it refuses the value (None stays None)."""
        if value is None:
            return None
        try:
            return self.written_list(value)
        except _REFUSED:
            return FLAG

    def write_object(self, value: Any) -> dict[str, Any]:
        """One object's data from a dict of raw values; raises _Unwritten, _Reject, ModelError."""
        if value.__class__ is not dict or not value:
            raise _Unwritten
        keys = tuple(value)
        shape = self._shapes.get(keys)
        if shape is None:
            shape = self._shape(keys)
        fields, ordered = shape
        out: dict[str, Any] = {}
        # _value_writer's write(), inlined up to its steps: this runs for every product.
        for key, (write, same, known), item in zip(keys, fields, value.values(), strict=True):
            if item is None:
                continue
            cls = item.__class__
            if cls is same:
                out[key] = item
                continue
            table = known.get(cls)
            hit = _MISSING if table is None or not item else table.get(item, _MISSING)
            out[key] = write(item) if hit is _MISSING else hit
        for key in self.required:
            if key not in out:
                raise _Unwritten
        if not out:
            raise _Unwritten
        if not ordered:
            rank = self.rank
            out = {key: out[key] for key in sorted(out, key=rank.__getitem__)}
        return out

    def _shape(self, keys: tuple[Any, ...]) -> tuple[list[_Field], bool]:
        """The fields of an object's keys, in its order, and whether that is field order."""
        fields = []
        for key in keys:
            field = self.fields.get(key) if key.__class__ is str else None
            if field is None:
                raise _Unwritten  # an unknown key (or a nested object): the row path's
            fields.append(field)
        ranks = [self.rank[key] for key in keys]
        shape = (fields, ranks == sorted(ranks))
        if len(self._shapes) < _KNOWN_LIMIT:
            self._shapes[keys] = shape
        return shape

    def written_list(self, value: Any) -> bytes:
        """A list of objects (or its JSON text) written; raises as :meth:`write_object`, and
        orjson.JSONEncodeError.

        Written to bytes at once: the objects' dicts are freed, so the garbage collector
        has few containers to walk while a slice is mapped.
        """
        if value.__class__ is str:
            value = _parsed(value, "")
        if value.__class__ is not list or not value:
            raise _Unwritten
        return orjson.dumps([self.write_object(item) for item in value])

    def write_list(self, value: Any) -> orjson.Fragment:
        """:meth:`written_list` as a value of an object orjson writes."""
        return orjson.Fragment(self.written_list(value))


def struct_writer(cls: type, coercers: _Coercers) -> StructWriter | None:
    """The writer of ``cls``, or None when its data is not written (a model is built)."""
    writer = StructWriter(cls, coercers)
    return writer if writer.writable else None


def written_struct(columns: Columns, rows: int, source: Struct, writer: StructWriter) -> list[Any]:
    """Per row, the object a Struct of columns and constants builds, written (the bytes the
    codec writes for the row path's model), FLAG where the row path must map the row.

    Every field of the Struct has a writer, and none is named twice (the engine checks).
    """
    ranked: list[tuple[int, str, list[Any], bool]] = []
    for field, item in source.fields:
        write = writer.writers[field]
        objects = field in writer.lists  # a list of objects, written to bytes
        if isinstance(item, Constant):
            # Written once: a constant is the same value, and the same result, in every row.
            ranked.append((writer.rank[field], field, _each([item.value], write) * rows, objects))
            continue
        name = item.name if isinstance(item, Column) else ""
        inner = writer.lists.get(field)
        values = None
        if inner is not None:
            values = _texts_written(columns, name, inner)
            if values is None:
                values = struct_lists_written(columns, name, inner)
        if values is None:
            kept = _kept(columns, name, writer.tokens.get(field))
            values = columns.values(name) if kept else _each(columns.values(name), write)
        ranked.append((writer.rank[field], field, values, objects))
    ranked.sort(key=lambda part: part[0])
    parts = [(field, values, objects) for _, field, values, objects in ranked]
    required = writer.required
    flagged = _flagged(parts, required, rows)
    joined = written_objects(columns, parts)
    if joined is None:
        return [FLAG if i in flagged else _row_written(parts, i) for i in range(rows)]
    out: list[Any] = joined[0]
    for index in flagged:
        out[index] = FLAG
    for index in joined[1] - flagged:
        out[index] = _row_written(parts, index)  # a value needing escapes: orjson writes it
    return [FLAG if written is None else written for written in out]  # no value at all


def _flagged(parts: list[tuple[str, list[Any], bool]], required: list[str], rows: int) -> set[int]:
    """The rows with a value the row path must see, or without a required field."""
    flagged: set[int] = set()
    present = set()
    for field, values, _ in parts:
        present.add(field)
        if FLAG in values:
            flagged.update(index for index, value in enumerate(values) if value is FLAG)
        if field in required and None in values:
            flagged.update(index for index, value in enumerate(values) if value is None)
    if not present.issuperset(required):
        return set(range(rows))
    return flagged


def _row_written(parts: list[tuple[str, list[Any], bool]], index: int) -> Any:
    """One row's object written by orjson from a dict (FLAG where JSON cannot carry a value,
    or no value is set): what :func:`.written_objects` joins where it is proven."""
    fragment = orjson.Fragment
    data: dict[str, Any] = {}
    for field, values, objects in parts:
        value = values[index]
        if value is not None:
            data[field] = fragment(value) if objects else value
    if not data:
        return FLAG
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError:
        return FLAG  # text JSON cannot carry (a lone surrogate): the row path's


#: What a writer raises for a value it does not write: the row path maps that row.
_REFUSED = (_Reject, ModelError, _Unwritten, orjson.JSONEncodeError)


def _kept(columns: Columns, name: str, token: str | None) -> bool:
    """Whether a field's writer hands every value of the column back as it is: text for a
    text field; for a decimal field, finite floats that are not integers below 2**63
    (json_number makes those ints) — ``float(Decimal(repr(x)))`` is ``x``."""
    pa = columns.pa
    tp = columns.type_of(name)
    if token == _TEXT_VALUE:
        return is_text(pa, tp)
    if token != _NUMBER_VALUE or not pa.types.is_float64(tp):
        return False
    changed = decimals_changed(columns.batch.column(name))
    return arrow_compute().any(changed).as_py() is not True


def _texts_written(columns: Columns, name: str, writer: StructWriter) -> list[Any] | None:
    """Per row, a text column's list of objects written (see :func:`_list_pattern`): read
    column-wise where the text proves it, by ``written_list`` elsewhere; None when the column
    is not text."""
    pa = columns.pa
    pattern = writer.list_pattern
    if pattern is None or not is_text(pa, columns.type_of(name)):
        return None
    compute = arrow_compute()
    array = columns.batch.column(name)
    proven = columns.matched(name, pattern)
    if not compute.any(proven).as_py():
        return _each(columns.values(name), writer.written_list)
    binary = pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary()
    compact = compute.replace_substring(compute.replace_substring(array, ", ", ","), ": ", ":")
    out: list[Any] = compute.if_else(proven, compact, None).cast(binary).to_pylist()
    rest = compute.indices_nonzero(compute.invert(proven)).to_pylist()
    if rest:
        raw = columns.values(name)
        for index in rest:
            out[index] = writer.written_or_flag(raw[index])
    return out


def _each(values: list[Any], write: Writer) -> list[Any]:
    """``write`` on every non-null value; FLAG where it refuses one."""
    return per_value(values, write, _REFUSED)
