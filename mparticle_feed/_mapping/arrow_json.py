"""Mapping stage: the Arrow engine's events written as JSON column by column (see :mod:`.arrow`).

:func:`.written.write_events` writes each row's event with orjson from a dict per row. Here
the same bytes are joined in Arrow from each key's JSON value per row: a column's own values
where the engine's converters handed them back unchanged (the same list), else the
converters' outputs. A value is written here only where its JSON is proven to be what orjson
writes: text without a quote, backslash or control character (orjson escapes only those,
and writes the rest as UTF-8), 64-bit integers and booleans as Arrow casts them to text, floats
and written objects as orjson wrote them. Any other row is written by ``write_events``.
"""

from __future__ import annotations

import importlib
from typing import Any

import orjson

from .arrow_columns import FLAG, Columns
from .written import WrittenField, write_events

__all__ = ["written_events"]

#: Characters orjson escapes in text: a row holding one is written by ``write_events``.
_ESCAPED = r'["\\\x00-\x1f]'
#: A stop past any binary value's end (binary_slice cannot be given none).
_END = 2**31 - 1
_FLOATS = frozenset({float, type(None), type(FLAG)})


def _compute() -> Any:
    return importlib.import_module("pyarrow.compute")


class _Unproven(Exception):  # noqa: N818 - control flow, never leaves this module
    """Values whose JSON this module does not write: ``write_events`` writes the slice."""


def _array(columns: Columns, values: list[Any]) -> Any:
    """``values`` as Arrow: the column they are (the same list), else converted (FLAG as null;
    its row is flagged). Raises _Unproven for values of mixed or unknown classes."""
    pa = columns.pa
    column = columns.source_of(values)
    if column is not None:
        return column
    if FLAG in values:
        values = [None if value is FLAG else value for value in values]
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise _Unproven from exc


def _json(columns: Columns, values: list[Any], bad: list[Any]) -> Any:
    """Each row's JSON of ``values`` as binary (null where the value is null); rows whose JSON
    is not proven here are added to ``bad`` (boolean arrays)."""
    pa = columns.pa
    compute = _compute()
    array = _array(columns, values)
    tp = array.type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        bad.append(compute.match_substring_regex(array, _ESCAPED))
        text = compute.binary_join_element_wise('"', array, '"', "")
        return _binary(pa, text)
    if pa.types.is_integer(tp) or pa.types.is_boolean(tp):
        # Arrow writes them as orjson does: digits (64 bits at most), true and false.
        return array.cast(pa.string()).cast(pa.binary())
    if pa.types.is_floating(tp):
        # orjson writes them, all at once: no comma in a number's JSON, so they split apart.
        if not _FLOATS.issuperset(map(type, values)):
            raise _Unproven
        if FLAG in values:
            values = [None if value is FLAG else value for value in values]
        listed = orjson.dumps(values)[1:-1]
        parts = compute.split_pattern(pa.array([listed], pa.binary()), b",").flatten()
        return compute.if_else(compute.is_null(array), None, parts)
    if pa.types.is_binary(tp) or pa.types.is_large_binary(tp):
        return _binary(pa, array)  # written objects: orjson's bytes
    raise _Unproven


def _binary(pa: Any, array: Any) -> Any:
    """``array`` as (32-bit offset) binary, the one type every join here takes."""
    try:
        return array.cast(pa.binary())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _Unproven from exc  # over 2 GiB in a slice


def _member(key: str, value: Any) -> Any:
    """``,"key":value`` per row; null where the value is null (the key is left out)."""
    compute = _compute()
    return compute.binary_join_element_wise(b"," + orjson.dumps(key) + b":", value, b"")


def _joined(members: list[Any], rows: int, pa: Any) -> Any:
    """The members of an object joined, without the first comma; null where none is set."""
    compute = _compute()
    if not members:
        return pa.nulls(rows, pa.binary())
    # The empty text first: without a non-null value in a row, pyarrow 26 drops the row.
    joined = compute.binary_join_element_wise(b"", *members, b"", null_handling="skip")
    return compute.if_else(compute.equal(joined, b""), None, compute.binary_slice(joined, 1, _END))


def _events(
    columns: Columns, fields: list[WrittenField], rows: int, event_type: Any
) -> tuple[list[Any], Any]:
    """Every row's event JSON (bytes), and the rows (a boolean array) written elsewhere."""
    pa = columns.pa
    compute = _compute()
    bad: list[Any] = []
    members = []
    for key, names, values in fields:
        if names is None:
            if values.count(None) == rows:
                continue  # left out of every row; no need to know its type
            members.append(_member(key, _json(columns, values, bad)))
            continue
        inner = _joined(
            [
                _member(name, _json(columns, column, bad))
                for name, column in zip(names, values, strict=True)
            ],
            rows,
            pa,
        )
        members.append(
            compute.binary_join_element_wise(b"," + orjson.dumps(key) + b":{", inner, b"}", b"")
        )
    data = _joined(members, rows, pa)
    head = b'{"event_type":' + orjson.dumps(event_type) + b',"data":{'
    events = compute.binary_join_element_wise(head, data, b"}}", b"")
    elsewhere = compute.is_null(events)
    for flags in bad:
        elsewhere = compute.or_(elsewhere, compute.fill_null(flags, False))
    return events.to_pylist(), elsewhere


def _fragments(fields: list[WrittenField]) -> list[WrittenField]:
    """Written objects (bytes) as the fragments orjson writes as they are."""
    fragment = orjson.Fragment
    return [
        (
            key,
            names,
            [fragment(value) if value.__class__ is bytes else value for value in values]
            if names is None and any(value.__class__ is bytes for value in values)
            else values,
        )
        for key, names, values in fields
    ]


def written_events(
    columns: Columns, fields: list[WrittenField], flagged: set[int], event_type: Any
) -> list[tuple[int | None, bytes] | None]:
    """What :func:`.write_events` gives for the rows, joined column by column where proven
    (see the module's text) and by ``write_events`` for the rest."""
    rows = columns.batch.num_rows
    try:
        events, elsewhere = _events(columns, fields, rows, event_type)
    except _Unproven:
        return write_events(_fragments(fields), flagged, event_type)
    rest = set(_compute().indices_nonzero(elsewhere).to_pylist()) - flagged
    stamps = next((values for key, _, values in fields if key == "timestamp_unixtime_ms"), None)
    # Tuples made in C: every row's (timestamp, bytes), then the rows written otherwise.
    out: list[tuple[int | None, bytes] | None] = list(
        zip([None] * rows if stamps is None else stamps, events, strict=True)
    )
    for index in flagged:
        out[index] = None
    if rest:
        slow = write_events(_fragments(fields), flagged | (set(range(rows)) - rest), event_type)
        for index in rest:
            out[index] = slow[index]
    return out
