"""Provenance (``mparticle_feed._mapping.provenance``): every event knows its row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.provenance import events_part
from mparticle_feed.pipeline import RowRef, SourcedBatch, Stage


def _events(count: int) -> list[mpf.CustomEvent]:
    return [mpf.CustomEvent(event_name=f"e{i}", custom_event_type="other") for i in range(count)]


@given(events=st.integers(0, 5), refs=st.integers(0, 5))
def test_a_sourced_batch_has_one_row_per_event(events: int, refs: int) -> None:
    batch = mpf.Batch(events=_events(events) or None)
    rows = tuple(RowRef(number) for number in range(1, refs + 1))
    if events == refs:
        assert SourcedBatch(batch=batch, event_rows=rows, rows=rows).event_rows == rows
    else:
        with pytest.raises(mpf.ModelError, match=f"{events} events but {refs} event_rows"):
            SourcedBatch(batch=batch, event_rows=rows, rows=rows)


def test_stages_read_as_their_names() -> None:
    assert [str(stage) for stage in Stage] == [
        "mapping",
        "data_plan",
        "routing",
        "packing",
        "delivery",
    ]
    assert Stage("routing") is Stage.ROUTING


@st.composite
def _sourced_with_parts(draw: st.DrawFn) -> tuple[SourcedBatch, list[list[int]]]:
    """A batch whose events come from some rows, plus rows that gave only user fields."""
    count = draw(st.integers(1, 8))
    # Several events may share a row; the rows are numbered in input order.
    owners = sorted(draw(st.lists(st.integers(1, 6), min_size=count, max_size=count)))
    user_only = draw(st.sets(st.integers(7, 9), max_size=3))
    event_rows = tuple(RowRef(n, f"k{n}") for n in owners)
    rows = tuple(RowRef(n, f"k{n}") for n in sorted({*owners, *user_only}))
    sourced = SourcedBatch(
        batch=mpf.Batch(events=_events(count), user_attributes={"tier": "gold"}),
        event_rows=event_rows,
        rows=rows,
    )
    labels = draw(st.lists(st.integers(0, 2), min_size=count, max_size=count))
    parts = [[i for i, label in enumerate(labels) if label == p] for p in range(3)]
    return sourced, [indexes for indexes in parts if indexes]


@given(_sourced_with_parts())
def test_a_batch_cut_by_event_indexes_keeps_every_row(
    drawn: tuple[SourcedBatch, list[list[int]]],
) -> None:
    """Routing, packing and the sync cut batches with this one rule (events_part)."""
    sourced, parts = drawn
    cut = [events_part(sourced, indexes) for indexes in parts]
    events = sourced.batch.events or ()
    user_only = set(sourced.rows) - set(sourced.event_rows)
    for indexes, piece in zip(parts, cut, strict=True):
        assert piece.batch.events == tuple(events[i] for i in indexes)
        assert piece.event_rows == tuple(sourced.event_rows[i] for i in indexes)
        assert piece.batch.user_attributes == sourced.batch.user_attributes
        # Rows keep input order: the part's event rows, and every user-only row.
        assert piece.rows == tuple(
            row for row in sourced.rows if row in piece.event_rows or row in user_only
        )
    assert sorted(i for indexes in parts for i in indexes) == list(range(len(events)))
    assert {row for piece in cut for row in piece.rows} == set(sourced.rows)
