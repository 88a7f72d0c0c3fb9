"""The Arrow engine's events joined as JSON in Arrow (``arrow_json``) against ``write_events``
(orjson on a dict per row), which the differential tests hold to the row path: the same
bytes for every row, whatever the values (escapes, surrogates, huge integers, NaN, -0.0,
constants, nulls, mixed classes, written objects)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from arrow_examples import arrow_settings
from hypothesis import given
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

from mparticle_feed._mapping.arrow_columns import FLAG, ArrowValues, Columns  # noqa: E402
from mparticle_feed._mapping.arrow_json import _fragments, written_blobs  # noqa: E402
from mparticle_feed._mapping.written import (  # noqa: E402
    CUSTOM_EVENT_TYPE,
    WrittenField,
    write_events,
)
from mparticle_feed._wire.enums import CustomEventType  # noqa: E402

SETTINGS = arrow_settings(200)

#: Arrow column types and the Python values each holds.
COLUMN_KINDS: dict[str, tuple[Any, Any]] = {
    "string": (pa.string(), st.text(st.characters(codec="utf-8"), max_size=6)),
    "large_string": (pa.large_string(), st.sampled_from(["", "a", 'q"', "\\", "\x00", "é"])),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint32": (pa.uint32(), st.integers(0, 2**32 - 1)),
    "bool": (pa.bool_(), st.booleans()),
    "float64": (pa.float64(), st.floats()),
    "float32": (pa.float32(), st.floats(width=32)),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["a", 'q"', "é"])),
}
#: Converted values (Python lists the engine's converters make), one kind a list or mixed.
LIST_KINDS = [
    st.text(max_size=4),  # lone surrogates included: JSON cannot carry them
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.booleans(),
    st.sampled_from([CustomEventType.OTHER, CustomEventType.NAVIGATION]),
]
ATTRIBUTE_NAMES = st.sampled_from(["a", "b", 'q"', "é", "\\n", "custom_attributes"])


@st.composite
def values_for(draw: Any, rows: int, flagged: set[int], arrays: dict[str, Any]) -> Any:
    """One key's values: a column's own list (the engine hands those on; the column's name
    until the batch is built), a converted list, a constant, or nothing; FLAG in flagged
    rows only, as the engine leaves it."""
    kind = draw(st.sampled_from(["column"] * 3 + ["list", "mixed", "constant", "none"]))
    if kind == "column":
        name = f"c{len(arrays)}"
        tp, items = COLUMN_KINDS[draw(st.sampled_from(sorted(COLUMN_KINDS)))]
        arrays[name] = pa.array(
            draw(st.lists(st.one_of(st.none(), items), min_size=rows, max_size=rows)), tp
        )
        return name
    if kind == "constant":
        return [draw(st.one_of(*LIST_KINDS, st.just(CUSTOM_EVENT_TYPE)))] * rows
    if kind == "none":
        return [None] * rows
    items = st.one_of(*LIST_KINDS) if kind == "mixed" else draw(st.sampled_from(LIST_KINDS))
    values = draw(st.lists(st.one_of(st.none(), items), min_size=rows, max_size=rows))
    return [FLAG if index in flagged else value for index, value in enumerate(values)]


@st.composite
def events(draw: Any) -> tuple[Columns, list[WrittenField], set[int], frozenset[str]]:
    """A slice's written keys in the codec's order: scalars, an attribute map and a written
    object (bytes), over a record batch holding the columns whose own lists they are."""
    rows = draw(st.integers(0, 9))
    flagged = set(draw(st.lists(st.integers(0, rows - 1), max_size=3))) if rows else set()
    arrays: dict[str, Any] = {}
    drawn: list[tuple[str, Any, Any]] = [
        (key, None, draw(values_for(rows, flagged, arrays)))
        for key in ("event_name", "custom_event_type", "timestamp_unixtime_ms")
    ]
    names = tuple(draw(st.lists(ATTRIBUTE_NAMES, unique=True, max_size=3)))
    in_arrow = draw(st.booleans())  # columns of text, integers or booleans left in Arrow
    if names:
        attributes = [draw(values_for(rows, flagged, arrays)) for _ in names]
        drawn.append(("custom_attributes", names, attributes))
    objects = [
        FLAG
        if index in flagged
        else draw(st.one_of(st.none(), st.just(orjson.dumps({"n": index}))))
        for index in range(rows)
    ]
    if not flagged and draw(st.integers(0, 4)) == 0:
        objects = [orjson.dumps({"same": True})] * rows  # one object in every row
    drawn.append(("product_action", None, objects))
    batch = pa.RecordBatch.from_pydict(arrays or {"empty": pa.nulls(rows)}, schema=None)
    columns = Columns(pa, batch)

    def resolved(values: Any) -> list[Any]:
        return columns.values(values) if isinstance(values, str) else values

    def attribute(values: Any) -> Any:
        if in_arrow and isinstance(values, str):
            tp = batch.column(values).type
            if pa.types.is_string(tp) or pa.types.is_integer(tp) or pa.types.is_boolean(tp):
                return ArrowValues(values, batch.column(values))
        return resolved(values)

    fields: list[WrittenField] = [
        (key, names, [attribute(v) for v in values] if names else resolved(values))
        for key, names, values in drawn
    ]
    return columns, fields, flagged, frozenset({"product_action"})


@SETTINGS
@given(events())
def test_events_joined_in_arrow_are_what_write_events_writes(case: Any) -> None:
    columns, fields, flagged, objects = case
    expected = write_events(_fragments(columns, fields, objects), flagged, CUSTOM_EVENT_TYPE)
    blobs, stamps = written_blobs(columns, fields, flagged, CUSTOM_EVENT_TYPE, objects)
    assert blobs == expected
    timestamps = next(values for key, _, values in fields if key == "timestamp_unixtime_ms")
    assert list(stamps) == timestamps


def test_bytes_that_are_not_written_objects_are_left_to_write_events() -> None:
    # A binary column's values are not JSON: orjson refuses them, so the row is no event.
    batch = pa.RecordBatch.from_pydict({"raw": pa.array([b"1", None], pa.binary())})
    columns = Columns(pa, batch)
    fields: list[WrittenField] = [("event_name", None, columns.values("raw"))]
    written, stamps = written_blobs(columns, fields, set(), CUSTOM_EVENT_TYPE)
    assert written == write_events(fields, set(), CUSTOM_EVENT_TYPE)
    assert written[0] is None
    assert list(stamps) == [None, None]  # no timestamp field
