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

from collections.abc import Sequence
from itertools import repeat
from operator import is_
from typing import Any

import orjson

from .arrow_columns import FLAG, ArrowValues, Columns, arrow_compute
from .written import WrittenField, write_events

__all__ = [
    "Unproven",
    "any_marked",
    "escaped",
    "joined",
    "written_blobs",
    "written_numbers",
    "written_objects",
]

#: Characters orjson escapes in text: a row holding one is written by ``write_events``.
_ESCAPED = r'["\\\x00-\x1f]'
#: A stop past any binary value's end (binary_slice cannot be given none).
_END = 2**31 - 1
#: The bytes orjson writes as they are in text (UTF-8's multi-byte sequences included).
_UNESCAPED = bytes(byte for byte in range(256) if byte >= 0x20 and byte not in b'"\\')
_OBJECTS = frozenset({bytes, type(None), type(FLAG)})
#: A member of an object: its text before the value (``,"key":``), the values' JSON per
#: row (binary, null where left out; None for a constant), its text after.
Piece = tuple[bytes, Any, bytes]
_TEXTS = frozenset({str, type(None), type(FLAG)})
_NUMBERS = frozenset({int, float, type(None), type(FLAG)})


class Unproven(Exception):  # noqa: N818 - control flow, never leaves the Arrow writers
    """Values whose JSON is not written here: the writer of rows writes them."""


def _python_array(pa: Any, values: list[Any], tp: Any) -> Any:
    """Converted values as an Arrow array of ``tp`` (FLAG as null: its row is flagged)."""
    if FLAG in values:
        values = [None if value is FLAG else value for value in values]
    try:
        return pa.array(values, tp)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeEncodeError) as exc:
        raise Unproven from exc  # a lone surrogate, an integer over 64 bits: orjson's call


def _member(
    columns: Columns, key: str, values: list[Any], bad: list[Any], *, objects: bool = False
) -> Piece:
    """``,"key":value`` per row, as a piece (the value's JSON per row as binary, null where
    the value is null: the key is left out); rows whose JSON is not proven here are added to
    ``bad`` (boolean arrays). ``objects``: the values are written objects (bytes), written
    as they are."""
    pa = columns.pa
    key_part = _key_part(key)
    column = columns.source_of(values)
    if objects:
        if column is not None or not _OBJECTS.issuperset(map(type, values)):
            raise Unproven
        written = _python_array(pa, values, pa.binary())
        return key_part, written, b""
    if column is not None:
        piece = _column_member(pa, key_part, column, bad)
        if piece is not None:
            return piece  # else a dictionary, a float...: its Python values decide
    if _TEXTS.issuperset(map(type, values)):
        return _text_member(pa, key_part, _python_array(pa, values, pa.string()), bad)
    if _NUMBERS.issuperset(map(type, values)):
        return key_part, written_numbers(pa, values), b""
    raise Unproven  # bytes (orjson writes none), dates, enums...: write_events decides


def _key_part(key: str) -> bytes:
    return b"," + orjson.dumps(key) + b":"


def _column_member(pa: Any, key_part: bytes, column: Any, bad: list[Any]) -> Piece | None:
    """:func:`_member`'s piece of an Arrow column of text, integers or booleans, written from
    the column; None for a column of any other type."""
    tp = column.type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return _text_member(pa, key_part, column, bad)
    if pa.types.is_integer(tp) or pa.types.is_boolean(tp):
        # Arrow writes them as orjson does: digits (64 bits at most), true and false.
        return key_part, column.cast(pa.string()).cast(pa.binary()), b""
    return None


def _text_member(pa: Any, key_part: bytes, column: Any, bad: list[Any]) -> Piece:
    """A text column's piece: its bytes quoted; the rows holding a byte orjson escapes are
    added to ``bad``."""
    array = _binary(pa, column)
    marked = escaped(array)
    if marked is not None:
        bad.append(marked)
    return key_part + b'"', array, b'"'


def written_numbers(pa: Any, values: list[Any]) -> Any:
    """Numbers as orjson writes them (NaN and infinities as null, as it writes them in an
    event), all at once: no comma in their JSON, so the list's JSON splits into its values;
    null where the value is None or FLAG (left out)."""
    nulls = [value is None or value is FLAG for value in values]
    if True in nulls:
        values = [None if null else value for null, value in zip(nulls, values, strict=True)]
    try:
        listed = orjson.dumps(values)[1:-1]
    except orjson.JSONEncodeError as exc:
        raise Unproven from exc  # an integer over 64 bits
    compute = arrow_compute()
    parts = compute.split_pattern(pa.array([listed], pa.binary()), b",").flatten()
    return compute.if_else(pa.array(nulls, pa.bool_()), None, parts)


def escaped(array: Any) -> Any:
    """The rows of a binary array holding a byte orjson escapes (a boolean array); None when
    the array's data has none, found in one pass over its bytes."""
    buffers = array.buffers()
    if buffers[2] is None or len(array) == 0:
        return None
    offsets = memoryview(buffers[1]).cast("i")  # binary: 32-bit offsets
    start, end = offsets[array.offset], offsets[array.offset + len(array)]
    if not bytes(memoryview(buffers[2])[start:end]).translate(None, _UNESCAPED):
        return None
    return arrow_compute().match_substring_regex(array, _ESCAPED)


def _binary(pa: Any, array: Any) -> Any:
    """``array`` as (32-bit offset) binary, the one type every join here takes."""
    try:
        return array.cast(pa.binary())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise Unproven from exc  # over 2 GiB in a slice


def _constant(value: Any) -> bytes:
    """A value in every row, written by orjson once; raises Unproven where JSON cannot carry
    it (each row's writer then reports it)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise Unproven from exc


def _spelt(piece: Piece, rows: int, pa: Any) -> Any:
    """A piece's member per row as binary (null where its value is null)."""
    prefix, array, suffix = piece
    if array is None:
        return pa.array([prefix + suffix] * rows, pa.binary())
    return arrow_compute().binary_join_element_wise(prefix, array, suffix, b"")


def _flat(pieces: list[Piece | None]) -> list[Any] | None:
    """An object's members as the texts and arrays that join them in one step (no comma
    first), where every member is set in every row; None where one is null in some row."""
    parts: list[Any] = []
    for piece in pieces:
        if piece is None:
            continue  # null in every row: left out of every row
        prefix, array, suffix = piece
        if array is not None and array.null_count:
            return None
        parts.extend([prefix if parts else prefix[1:], array, suffix])
    return parts


def _dense(members: list[tuple[bytes, Piece | None, list[Piece | None] | None]]) -> list[Any]:
    """The events' members (a scalar's piece, or a map's start and pieces) as the texts and
    arrays that join them in one step, each with its comma; empty where a member is null in
    some row (or none is set)."""
    dense: list[Any] = []
    for start, piece, inner in members:
        if inner is None:
            if piece is None:
                continue
            if piece[1] is not None and piece[1].null_count:
                return []
            dense.extend(piece)
            continue
        flat = _flat(inner)
        if flat is None:
            return []
        if flat:
            dense.extend([start + b"{", *flat, b"}"])
    return dense


def _concatenated(parts: list[Any], rows: int, pa: Any) -> Any:
    """Texts and binary arrays (None: nothing) joined row by row, in one step."""
    merged: list[Any] = []
    for part in parts:
        if part is None:
            continue
        if merged and isinstance(part, bytes) and isinstance(merged[-1], bytes):
            merged[-1] += part  # neighbouring texts as one
        else:
            merged.append(part)
    if all(isinstance(part, bytes) for part in merged):
        return pa.array([b"".join(merged)] * rows, pa.binary())  # constants only
    return arrow_compute().binary_join_element_wise(*merged, b"")


def joined(members: list[Any], rows: int, pa: Any) -> Any:
    """The members (pieces, or binary arrays of them) of an object joined, without the first
    comma; null where none is set (None members: null in every row)."""
    compute = arrow_compute()
    members = [
        _spelt(member, rows, pa) if isinstance(member, tuple) else member
        for member in members
        if member is not None
    ]
    if not members:
        return pa.nulls(rows, pa.binary())
    # The empty text first: without a non-null value in a row, pyarrow 26 drops the row.
    joined = compute.binary_join_element_wise(b"", *members, b"", null_handling="skip")
    return compute.if_else(compute.equal(joined, b""), None, compute.binary_slice(joined, 1, _END))


def _scalar(
    columns: Columns,
    key: str,
    values: list[Any] | ArrowValues,
    bad: list[Any],
    *,
    objects: bool = False,
) -> Piece | None:
    """A key's member (see :func:`_member`; a constant's piece holds no array); None where
    it is null in every row."""
    if isinstance(values, ArrowValues):
        # A kept column of text, integers or booleans, written from Arrow; left out where
        # null in every row.
        column = values.column
        if column.null_count == len(column):
            return None
        piece = _column_member(columns.pa, _key_part(key), column, bad)
        if piece is None:
            raise Unproven  # not a type ArrowValues holds: write_events decides
        return piece
    first = values[0] if values else None
    if first is not FLAG and all(map(is_, values, repeat(first))):
        # One value in every row (a constant, or none: left out): written once.
        if first is None:
            return None
        if objects and first.__class__ is not bytes:
            raise Unproven
        written = first if objects else _constant(first)
        return b"," + orjson.dumps(key) + b":" + written, None, b""
    return _member(columns, key, values, bad, objects=objects)


def any_marked(marks: list[Any]) -> Any:
    """Where any of the boolean arrays is true (a null counts as false); None for none."""
    compute = arrow_compute()
    marked = None
    for flags in marks:
        known = compute.fill_null(flags, False)
        marked = known if marked is None else compute.or_(marked, known)
    return marked


def _rows(marks: list[Any]) -> set[int]:
    """The rows any of the boolean arrays marks."""
    marked = any_marked(marks)
    return set() if marked is None else set(arrow_compute().indices_nonzero(marked).to_pylist())


def _events(
    columns: Columns, fields: list[WrittenField], objects: frozenset[str], event_type: Any
) -> tuple[list[Any], set[int]]:
    """Every row's event JSON (bytes), and the rows written elsewhere: in one join where
    every key is set in every row, else member by member."""
    pa = columns.pa
    rows = columns.batch.num_rows
    compute = arrow_compute()
    bad: list[Any] = []
    members: list[tuple[bytes, Piece | None, list[Piece | None] | None]] = []
    for key, names, values in fields:
        start = b"," + orjson.dumps(key) + b":"
        if names is None:
            members.append(
                (start, _scalar(columns, key, values, bad, objects=key in objects), None)
            )
        else:
            pieces = [_scalar(columns, n, v, bad) for n, v in zip(names, values, strict=True)]
            members.append((start, None, pieces))
    head = b'{"event_type":' + orjson.dumps(event_type) + b',"data":{'
    dense = _dense(members)
    if dense:
        dense[0] = dense[0][1:]  # the first member's comma
        events = _concatenated([head, *dense, b"}}"], rows, pa)
    else:
        spelt = [
            piece
            if inner is None
            else compute.binary_join_element_wise(start + b"{", joined(inner, rows, pa), b"}", b"")
            for start, piece, inner in members
        ]
        events = compute.binary_join_element_wise(head, joined(spelt, rows, pa), b"}}", b"")
    return events.to_pylist(), _rows([compute.is_null(events), *bad])


def written_objects(
    columns: Columns, members: list[tuple[str, list[Any], bool]]
) -> tuple[list[bytes | None], set[int]] | None:
    """Each row's JSON object of ``members`` — (key, values, whether the values are written
    objects), in the order written, null values left out — as orjson writes the dict: bytes,
    None where every value is null; and the rows whose JSON is not proven here. None where a
    member's values are not written here at all."""
    pa = columns.pa
    rows = columns.batch.num_rows
    if not rows:
        return [], set()
    bad: list[Any] = []
    try:
        parts = [
            _scalar(columns, key, values, bad, objects=objects) for key, values, objects in members
        ]
    except Unproven:
        return None
    compute = arrow_compute()
    flat = _flat(parts)
    if flat:  # every member set in every row: one join
        written = _concatenated([b"{", *flat, b"}"], rows, pa)
    else:
        written = compute.binary_join_element_wise(b"{", joined(parts, rows, pa), b"}", b"")
    return written.to_pylist(), _rows(bad)


def _fragments(
    columns: Columns, fields: list[WrittenField], objects: frozenset[str]
) -> list[WrittenField]:
    """The fields as ``write_events`` reads them: written objects (bytes) as the fragments
    orjson writes as they are, attribute columns left in Arrow as Python values."""
    fragment = orjson.Fragment
    listed = columns.listed
    return [
        (
            key,
            names,
            [fragment(value) if value.__class__ is bytes else value for value in values]
            if key in objects
            else values
            if names is None
            else [listed(inner) for inner in values],
        )
        for key, names, values in fields
    ]


def written_blobs(
    columns: Columns,
    fields: list[WrittenField],
    flagged: set[int],
    event_type: Any,
    objects: frozenset[str] = frozenset(),
) -> tuple[list[bytes | None], Sequence[int | None]]:
    """Each row's event as :func:`.write_events` writes it (bytes, None where it does not)
    and its timestamp, side by side: joined column by column where proven (see the module's
    text) and by ``write_events`` for the rest. ``objects``: the keys whose values are
    written objects (bytes, :func:`.written_struct`).

    No (timestamp, bytes) tuple per row: the open batches of the regroup window hold these
    rows, and the garbage collector would count and scan a container per event.
    """
    rows = columns.batch.num_rows
    if not rows:
        return [], []  # pyarrow's joins refuse empty arrays beside scalars
    stamps = next((values for key, _, values in fields if key == "timestamp_unixtime_ms"), None)
    stamps = [None] * rows if stamps is None else stamps
    try:
        events, elsewhere = _events(columns, fields, objects, event_type)
    except Unproven:
        return write_events(_fragments(columns, fields, objects), flagged, event_type), stamps
    rest = elsewhere - flagged
    blobs: list[bytes | None] = events
    for index in flagged:
        blobs[index] = None
    if rest:
        fragments = _fragments(columns, fields, objects)
        slow = write_events(fragments, flagged | (set(range(rows)) - rest), event_type)
        for index in rest:
            blobs[index] = slow[index]
    return blobs, stamps
