"""Where each event came from, and what became of rows that did not make it.

Every stage after mapping carries these along so that a report can say, for every input
row, whether it was accepted, rejected (with stage, field and reason) or failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import attrs

from .._errors import ModelError
from .._wire.models import Batch

__all__ = ["RowProblem", "RowRef", "RowSpan", "SourcedBatch", "Stage", "slot_setters"]


def slot_setters(cls: type, *names: str) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of a slotted class's own fields ``names``, for a constructor run once per
    batch: a frozen attrs class sets each field with ``object.__setattr__`` by name, which
    costs twice as much. Only for classes without validators or converters to run."""
    return tuple(cls.__dict__[name].__set__ for name in names)


class Stage(str, Enum):
    """The stage of the flow at which a row was turned away."""

    MAPPING = "mapping"
    DATA_PLAN = "data_plan"
    ROUTING = "routing"
    PACKING = "packing"
    DELIVERY = "delivery"

    def __str__(self) -> str:
        return str(self.value)


@attrs.frozen
class RowRef:
    """One input row: its 1-based position in the input and its primary key (if the mapping has one)."""

    row_number: int
    primary_key: str | None = None


class RowSpan:
    """Rows side by side: ``numbers[i]`` and ``keys[i]`` are one row's number and primary key.

    The Arrow engine hands rows on this way, so a row's :class:`RowRef` is made only when
    something asks for it (a report, a state entry); most never are.
    """

    __slots__ = ("keys", "numbers")

    def __init__(self, numbers: Sequence[int], keys: Sequence[str | None]) -> None:
        self.numbers = numbers
        self.keys = keys

    def __len__(self) -> int:
        return len(self.numbers)


@attrs.frozen(kw_only=True)
class SourcedBatch:
    """A batch with the rows it was built from.

    ``event_rows[i]`` is the row that produced ``batch.events[i]``; ``rows`` lists every
    row that contributed anything (events, identities or user attributes), once each, in
    input order. A batch without events (a user-attribute sync) has ``event_rows == ()``.
    """

    batch: Batch
    event_rows: tuple[RowRef, ...] = ()
    rows: tuple[RowRef, ...] = ()

    def __attrs_post_init__(self) -> None:
        events = self.batch.events or ()
        if len(events) != len(self.event_rows):
            msg = f"{len(events)} events but {len(self.event_rows)} event_rows"
            raise ModelError(msg)

    def _primary_keys(self) -> Sequence[str]:
        """The rows' primary keys, in row order (rows without one left out)."""
        return [row.primary_key for row in self.rows if row.primary_key is not None]

    def _event_count(self) -> int:
        return len(self.event_rows)

    def _events_part(
        self, indexes: Sequence[int], event_rows: tuple[RowRef, ...], rows: tuple[RowRef, ...]
    ) -> SourcedBatch:
        # events_part's cut; a batch carrying its events otherwise (WrittenBatch) has its own.
        events = self.batch.events or ()
        return SourcedBatch(
            batch=attrs.evolve(self.batch, events=tuple(events[i] for i in indexes)),
            event_rows=event_rows,
            rows=rows,
        )


def events_part(sourced: SourcedBatch, indexes: Sequence[int]) -> SourcedBatch:
    """The batch restricted to the events at ``indexes``; user-level fields are kept whole.

    Routing (live or historical), packing (a batch over the size limit) and the sync (events
    already sent) all cut a batch by its events' positions this way.
    """
    event_rows = tuple(sourced.event_rows[i] for i in indexes)
    return sourced._events_part(indexes, event_rows, part_rows(sourced, event_rows))


def part_rows(sourced: SourcedBatch, event_rows: Sequence[RowRef]) -> tuple[RowRef, ...]:
    """Rows of a part: those of its events plus those that gave only user-level fields.

    A row that gave only user fields travels in every part (each part carries the user
    fields), so it may appear in several outcomes; its row-level outcome is the worst of them.
    """
    in_events = set(sourced.event_rows)
    mine = set(event_rows)
    return tuple(row for row in sourced.rows if row in mine or row not in in_events)


@attrs.frozen(kw_only=True)
class RowProblem:
    """Why a row was rejected or failed, in terms a person can act on.

    ``field`` is the path of the offending field when there is one
    (``"timestamp_unixtime_ms"``, ``"product_action.products[2].price"``).
    """

    row: RowRef
    stage: Stage
    reason: str
    field: str | None = None
    status: int | None = None
    body: str | None = None
    source_request_id: str | None = None
