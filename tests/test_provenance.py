"""Provenance (``mparticle_feed._mapping.provenance``): every event knows its row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
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
