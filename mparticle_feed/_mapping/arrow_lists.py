"""Mapping stage: lists of objects from Arrow ``list<struct>`` columns written as JSON in Arrow
(the Arrow engine's product lists; see :mod:`.written_structs`).

What ``StructWriter.written_list`` writes for a row's list (``to_pylist()`` gives a list of
dicts holding every struct field, in the struct's order) is joined column by column where
each value is proven to be written as it is: text without a character orjson escapes for a
text field; 64-bit integers (but -2**63, which the decimal check refuses) for an integer or
decimal field; finite floats that are not integers below 2**63 for a decimal field
(``json_number`` makes those ints). A null list is left out; an empty list, a null item or an
item without any value is refused (FLAG), as the writer refuses it; a row holding any other
value is written by ``written_list``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from .arrow_columns import FLAG, Columns, arrow_compute
from .arrow_json import Unproven, any_marked, escaped, joined, written_numbers

if TYPE_CHECKING:
    from .written_structs import StructWriter

__all__ = ["decimals_changed", "struct_lists_written"]


def _member(pa: Any, key: str, array: Any, kind: str | None, bad: list[Any]) -> Any:
    """``,"key":value`` per item (null where the value is null); items whose value is not
    proven written as it is are added to ``bad``. Raises Unproven for other types."""
    compute = arrow_compute()
    tp = array.type
    key_part = b"," + orjson.dumps(key) + b":"
    if kind == "text" and (pa.types.is_string(tp) or pa.types.is_large_string(tp)):
        text = array.cast(pa.binary())
        marked = escaped(text)
        if marked is not None:
            bad.append(marked)
        return compute.binary_join_element_wise(key_part + b'"', text, b'"', b"")
    whole = pa.types.is_signed_integer(tp) or (
        pa.types.is_unsigned_integer(tp) and tp.bit_width < 64
    )
    if kind in ("int", "decimal") and whole:
        if pa.types.is_int64(tp):
            bad.append(compute.equal(array, -(2**63)))
        text = array.cast(pa.string()).cast(pa.binary())
        return compute.binary_join_element_wise(key_part, text, b"")
    if kind == "decimal" and pa.types.is_float64(tp):
        bad.append(decimals_changed(array))
        numbers = written_numbers(pa, array.to_pylist())
        return compute.binary_join_element_wise(key_part, numbers, b"")
    raise Unproven


def decimals_changed(array: Any) -> Any:
    """Where a decimal field's writer does not hand a float64 back as it is: not finite, or
    an integer below 2**63 (``json_number`` makes those ints)."""
    compute = arrow_compute()
    small_whole = compute.and_(
        compute.equal(compute.floor(array), array), compute.less(compute.abs(array), 2.0**63)
    )
    return compute.or_(compute.invert(compute.is_finite(array)), small_whole)


def _rows(parents: Any, marks: list[Any]) -> set[int]:
    """The rows holding an item any of ``marks`` (boolean arrays over the items) marks."""
    marked = any_marked(marks)
    return set() if marked is None else set(arrow_compute().filter(parents, marked).to_pylist())


def struct_lists_written(columns: Columns, name: str, writer: StructWriter) -> list[Any] | None:
    """Per row, a ``list<struct>`` column's list of objects written (bytes), None where it is
    null, FLAG where the writer refuses it; None when the column is not such a list of
    fields this module writes."""
    pa = columns.pa
    array = columns.batch.column(name)
    tp = array.type
    if not (pa.types.is_list(tp) or pa.types.is_large_list(tp)) or not pa.types.is_struct(
        tp.value_type
    ):
        return None
    names = [tp.value_type.field(i).name for i in range(tp.value_type.num_fields)]
    if writer.required or len(set(names)) != len(names) or not set(names) <= writer.fields.keys():
        return None  # an unknown key refuses every item; a name twice is one dict key
    compute = arrow_compute()
    items = array.flatten()  # the items the rows hold, in order
    if not len(items):
        return None  # pyarrow's joins refuse empty arrays beside scalars; nothing to join
    values = items.flatten()  # each field, null where its item is null
    bad: list[Any] = []
    try:
        members = [
            _member(pa, names[i], values[i], writer.kind(names[i]), bad)
            for i in sorted(range(len(names)), key=lambda i: writer.rank[names[i]])
        ]
    except Unproven:
        return None
    objects = compute.binary_join_element_wise(b"{", joined(members, len(items), pa), b"}", b"")
    parents = compute.list_parent_indices(array)
    refused = _rows(parents, [items.is_null(), objects.is_null()])
    refused.update(
        compute.indices_nonzero(compute.equal(compute.list_value_length(array), 0)).to_pylist()
    )
    starts = compute.subtract(array.offsets, array.offsets[0])
    cls = pa.LargeListArray if pa.types.is_large_list(tp) else pa.ListArray
    lists = cls.from_arrays(starts, compute.fill_null(objects, b""), mask=array.is_null())
    out: list[Any] = compute.binary_join_element_wise(
        b"[", compute.binary_join(lists, b","), b"]", b""
    ).to_pylist()
    for index in refused:
        out[index] = FLAG
    rest = _rows(parents, bad) - refused
    if rest:
        raw = columns.values(name)
        for index in rest:
            out[index] = writer.written_or_flag(raw[index])
    return out
