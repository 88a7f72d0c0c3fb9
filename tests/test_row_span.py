"""The Arrow engine's rows as spans: a batch's RowRefs made only when asked for.

``_WrittenPending`` keeps row numbers and primary keys side by side while every row has an
event, and hands them on as a ``RowSpan``; ``WrittenBatch`` makes the ``RowRef`` s on first
use. Whatever the adds, the rows it gives are the row path's (``_Pending``'s).
"""

from __future__ import annotations

import pickle
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.compile import _KnownMapped, _Mapped
from mparticle_feed._mapping.pending import _Pending, _WrittenPending
from mparticle_feed._mapping.provenance import RowSpan
from mparticle_feed._mapping.written import WrittenBatch, WrittenEvents, paired
from mparticle_feed.pipeline import RowRef, SourcedBatch

_EVENT: Any = (
    1_700_000_000_000,
    b'{"event_type":"custom_event","data":{"event_name":"e","custom_event_type":"other"}}',
)


def _mapped(
    event: Any, user_attributes: dict[str, Any] | None = None, cls: type[_Mapped] = _Mapped
) -> _Mapped:
    """A row mapped for user u1 (a _KnownMapped: one the Arrow engine proved plain)."""
    identities = (("customer_id", "u1"),)
    user_key = (identities, (), None, None, None, None, None, ())
    return cls(user_key, identities, (), None, None, None, None, None, user_attributes, event, 0)


def _written(span: RowSpan) -> WrittenBatch:
    return WrittenBatch(
        header_kwargs={"environment": None, "user_identities": {"customer_id": "u1"}},
        written=(_EVENT,) * len(span),
        event_cls=mpf.CustomEvent,
        span=span,
    )


@given(
    keys=st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=6),
    first=st.integers(1, 10**6),
)
def test_a_span_gives_the_rows_the_row_path_gives(keys: list[str | None], first: int) -> None:
    numbers = range(first, first + len(keys))
    sourced = _written(RowSpan(numbers, keys))
    expected = tuple(RowRef(number, key) for number, key in zip(numbers, keys, strict=True))
    assert sourced.rows == expected
    assert sourced.event_rows == expected
    # Every row has its event: one tuple, as the row path hands on (the sync relies on it).
    assert sourced.rows is sourced.event_rows
    assert list(sourced._primary_keys()) == [key for key in keys if key is not None]
    assert sourced._event_count() == len(keys)
    assert pickle.loads(pickle.dumps(sourced)) == sourced
    assert sourced == SourcedBatch(batch=sourced.batch, event_rows=expected, rows=expected)


def test_a_span_must_match_the_events() -> None:
    with pytest.raises(mpf.ModelError, match="2 events but 1 event_rows"):
        WrittenBatch(
            header_kwargs={"environment": None},
            written=(_EVENT, _EVENT),
            event_cls=mpf.CustomEvent,
            span=RowSpan((1,), (None,)),
        )
    with pytest.raises(mpf.ModelError, match="rows and event rows, or their span"):
        WrittenBatch(header_kwargs={"environment": None}, written=(), event_cls=mpf.CustomEvent)


# One add as the window makes it: a row with its user part, a row with only its event, the
# next rows of a run, or (first) a whole run at once; ``has_event`` False is a row that
# mapped to no event.
_ADDS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.booleans()),
        st.tuples(st.just("start"), st.integers(1, 4)),
        st.tuples(st.just("add_event"), st.just(True)),
        st.tuples(st.just("add_events"), st.integers(1, 4)),
    ),
    min_size=1,
    max_size=12,
)


def _event(number: int) -> Any:
    """Row ``number``'s event: written ((timestamp, bytes)), or every fourth a model."""
    if number % 4 == 0:
        return mpf.CustomEvent(event_name=f"e{number}", custom_event_type="other")
    body = b'{"event_type":"custom_event","data":{"event_name":"e%d"}}' % number
    return (1_700_000_000_000 + number, body)


def _events(events: list[Any], side_by_side: bool) -> Any:
    """Events as the row path hands them on, or as the Arrow engine's runs hold them."""
    if not side_by_side:
        return events
    return WrittenEvents(
        tuple(e[1] if e.__class__ is tuple else e for e in events),
        tuple(e[0] if e.__class__ is tuple else None for e in events),
        mixed=any(e.__class__ is not tuple for e in events),
    )


def _fill(group: _Pending, adds: list[tuple[str, Any]], *, engine: bool) -> None:
    """The adds, on ``group``; ``engine``: runs' events as the Arrow engine holds them."""
    number = 0

    def next_ref() -> RowRef:
        nonlocal number
        number += 1
        return RowRef(number, None if number % 3 == 0 else f"k{number}")

    # The first add is always a row with its user part, or a run (the window opens a group
    # so); a run's numbers and keys are tuples, as the engine's.
    for position, (kind, argument) in enumerate(adds):
        if kind == "start" and position == 0:
            refs = [next_ref() for _ in range(argument)]
            events = [_event(ref.row_number) for ref in refs]
            group.start(
                _mapped(events[0]),
                _events(events, engine),
                tuple(ref.row_number for ref in refs),
                tuple(ref.primary_key for ref in refs),
            )
        elif kind in ("add", "start") or position == 0:
            has_event = argument if kind == "add" else True
            ref = next_ref()
            group.add(_mapped(_event(ref.row_number) if has_event else None), ref)
        elif kind == "add_event":
            ref = next_ref()
            group.add_event(_event(ref.row_number), ref)
        else:
            refs = [next_ref() for _ in range(argument)]
            group.add_events(
                _events([_event(ref.row_number) for ref in refs], engine),
                [ref.row_number for ref in refs],
                [ref.primary_key for ref in refs],
            )


@given(adds=_ADDS)
def test_a_written_batchs_rows_are_the_row_paths_whatever_the_adds(
    adds: list[tuple[str, Any]],
) -> None:
    """And its events: those held side by side with their timestamps are paired again."""
    plain, spanned = _Pending(None), _WrittenPending(None, mpf.CustomEvent)
    _fill(plain, adds, engine=False)
    _fill(spanned, adds, engine=True)
    assert spanned.row_count() == plain.row_count()
    rows, event_rows = plain._row_tuples()
    sourced = spanned.flush()
    assert isinstance(sourced, WrittenBatch)
    assert sourced.rows == rows
    assert sourced.event_rows == event_rows
    assert paired(sourced.blobs, sourced.stamps) == list(plain.events)
    assert list(sourced._primary_keys()) == [
        r.primary_key for r in rows if r.primary_key is not None
    ]


def test_a_header_is_written_unchecked_only_from_the_attributes_proven_plain() -> None:
    """A batch whose first row the Arrow engine proved plain, joined by a row the row path
    mapped with a value the model must see (a Decimal): the header is the model's."""
    known = _mapped(_EVENT, {"a": 1}, _KnownMapped)
    later = _mapped(_EVENT, {"b": Decimal("1.10")})
    group = _WrittenPending(mpf.Environment.DEVELOPMENT, mpf.CustomEvent)
    group.add(known, RowRef(1))
    assert group.accepts(later, 100)
    group.add(later, RowRef(2))
    sourced = group.flush()
    assert isinstance(sourced, WrittenBatch)
    assert sourced.header_json is None
    assert sourced.header.user_attributes == {"a": 1, "b": 1.1}  # as the model holds it
    alone = _WrittenPending(mpf.Environment.DEVELOPMENT, mpf.CustomEvent)
    alone.add(known, RowRef(1))
    alone.add_event(_EVENT, RowRef(2))
    header = alone.flush()
    assert isinstance(header, WrittenBatch)
    assert header.header_json == mpf.dumps(header.header)
