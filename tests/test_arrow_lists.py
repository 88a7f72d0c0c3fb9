"""Product lists from Arrow ``list<struct>`` columns joined in Arrow (``arrow_lists``) against
the writer's own ``written_list`` row by row, which the differential tests hold to the row
path: the same bytes, refusals and nulls for every row, whatever the struct's fields (their
order, types and hostile values)."""

from __future__ import annotations

from typing import Any

import pytest
from arrow_examples import arrow_settings
from hypothesis import given
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

from test_arrow_written import PRODUCTS_WRITER  # noqa: E402

from mparticle_feed._mapping.arrow_columns import Columns  # noqa: E402
from mparticle_feed._mapping.arrow_lists import struct_lists_written  # noqa: E402

SETTINGS = arrow_settings(200)

HOSTILE_FLOATS = st.one_of(
    st.floats(width=64),
    st.sampled_from([0.0, -0.0, 2.0, -1e16, 2.0**63, 1e300, 5e-324, 19.99]),
)
#: Product fields, each with the Arrow types it may arrive as (the usual ones more often)
#: and their values.
FIELDS: dict[str, list[tuple[Any, Any]]] = {
    "id": [(pa.string(), st.text(st.characters(codec="utf-8"), max_size=4))],
    "name": [(pa.large_string(), st.sampled_from(["P", 'q"', "\\", "\x01", "é", ""]))],
    "price": [(pa.float64(), HOSTILE_FLOATS)] * 3
    + [
        (pa.int64(), st.sampled_from([-(2**63), 2**63 - 1, 0, 5])),
        (pa.float32(), st.floats(width=32)),
    ],
    "quantity": [(pa.int64(), st.integers(-(2**63), 2**63 - 1))] * 3
    + [(pa.int8(), st.integers(-128, 127)), (pa.uint64(), st.integers(0, 2**64 - 1))],
    "position": [(pa.int32(), st.integers(-(2**31), 2**31 - 1))],
}
#: Fields the column-wise join leaves to the writer: a text field given booleans, a key no
#: product has (which refuses every item).
ODD_FIELDS: dict[str, tuple[Any, Any]] = {
    "brand": (pa.bool_(), st.booleans()),
    "unknown": (pa.int64(), st.integers(0, 3)),
}


@st.composite
def product_lists(draw: Any) -> Any:
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), min_size=1, max_size=4, unique=True))
    fields = [(name, draw(st.sampled_from(FIELDS[name]))) for name in names]
    if draw(st.integers(0, 7)) == 0:
        odd = draw(st.sampled_from(sorted(ODD_FIELDS)))
        fields.insert(draw(st.integers(0, len(fields))), (odd, ODD_FIELDS[odd]))
    else:
        fields = draw(st.permutations(fields))
    struct = pa.struct([(name, tp) for name, (tp, _) in fields])
    item = st.fixed_dictionaries(
        {name: st.one_of(st.none(), values) for name, (_, values) in fields}
    )
    rows = draw(
        st.lists(
            st.one_of(
                st.none(),
                st.lists(
                    st.one_of(item, st.none()) if draw(st.integers(0, 3)) == 0 else item,
                    max_size=3,
                ),
            ),
            min_size=1,
            max_size=8,
        )
    )
    kind = pa.large_list(struct) if draw(st.booleans()) else pa.list_(struct)
    array = pa.array(rows, kind)
    start = draw(st.integers(0, min(2, len(rows) - 1)))  # a slice: offsets not from 0
    return array.slice(start)


@SETTINGS
@given(product_lists())
def test_struct_lists_joined_in_arrow_are_what_the_writer_writes(array: Any) -> None:
    writer = PRODUCTS_WRITER.lists["products"]
    columns = Columns(pa, pa.RecordBatch.from_arrays([array], ["products"]))
    joined = struct_lists_written(columns, "products", writer)
    expected = [writer.written_or_flag(value) for value in array.to_pylist()]
    if joined is not None:  # None: the whole column is the writer's, row by row
        assert joined == expected


def test_struct_lists_of_plain_fields_are_joined() -> None:
    struct = pa.struct([("id", pa.string()), ("price", pa.float64()), ("quantity", pa.int64())])
    rows = [[{"id": "A", "price": 19.99, "quantity": 2}], None, [{"id": "B", "price": None}]]
    array = pa.array(rows, pa.list_(struct))
    writer = PRODUCTS_WRITER.lists["products"]
    joined = struct_lists_written(
        Columns(pa, pa.RecordBatch.from_arrays([array], ["p"])), "p", writer
    )
    assert joined == [
        b'[{"id":"A","price":19.99,"quantity":2}]',
        None,
        b'[{"id":"B"}]',
    ]


def test_struct_list_values_the_writer_refuses_or_changes_are_its_own() -> None:
    struct = pa.struct([("id", pa.string()), ("quantity", pa.int64()), ("price", pa.float64())])
    rows = [
        [{"id": "A", "quantity": -(2**63), "price": 1.5}],  # refused: not a double exactly
        [{"id": "B", "quantity": 1, "price": 2.0}],  # an integral price: written as an int
        [{"id": 'q"', "quantity": 1, "price": 0.5}],  # a quote: escaped
        [{"id": None, "quantity": None, "price": None}],  # no value: refused
        [],  # refused
    ]
    array = pa.array(rows, pa.list_(struct))
    writer = PRODUCTS_WRITER.lists["products"]
    joined = struct_lists_written(
        Columns(pa, pa.RecordBatch.from_arrays([array], ["p"])), "p", writer
    )
    assert joined == [writer.written_or_flag(value) for value in rows]
    assert joined[1] == b'[{"id":"B","price":2,"quantity":1}]'
