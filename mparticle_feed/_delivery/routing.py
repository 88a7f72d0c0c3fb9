"""Per-event routing between the live and the historical bulk endpoints.

mParticle asks that data older than 30 days (28 days for Hightouch, our default) go to
``/v2/bulkevents/historical``, and refuses a historical batch when any of its events has no
timestamp or is less than 72 hours old. Routing therefore looks at every event, splits a batch
that mixes both kinds into two batches for the same user, and turns away, with a reason, any
event that would have to go historical but may not.

Boundaries are inclusive: an event exactly ``historical_after`` old goes historical, and an
event exactly ``historical_min_age`` old may go historical ("less than 72 hours" is refused).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any, cast

import attrs

from .._errors import ConfigurationError, ModelError
from .._mapping.provenance import (
    RowProblem,
    RowRef,
    SourcedBatch,
    Stage,
    events_part,
    slot_setters,
)
from .._mapping.written import WrittenBatch
from .._wire.models import Batch

__all__ = [
    "DEFAULT_HISTORICAL_AFTER",
    "DEFAULT_HISTORICAL_MIN_AGE",
    "Endpoint",
    "RoutedBatch",
    "as_sourced",
    "route",
]

DEFAULT_HISTORICAL_AFTER = timedelta(days=28)
DEFAULT_HISTORICAL_MIN_AGE = timedelta(hours=72)


class Endpoint(str, Enum):
    """The bulk endpoint a batch goes to (a path below the pod's host)."""

    LIVE = "/v2/bulkevents"
    HISTORICAL = "/v2/bulkevents/historical"

    def __str__(self) -> str:
        return str(self.value)


@attrs.frozen(kw_only=True)
class RoutedBatch:
    """A batch bound for one endpoint, with the rows it came from."""

    endpoint: Endpoint
    sourced: SourcedBatch
    #: False when routing split the input batch; packing then derives a fresh
    #: ``source_request_id`` for each part even if the user had set one.
    whole: bool = True

    @property
    def batch(self) -> Batch:
        return self.sourced.batch


_SET_ENDPOINT, _SET_SOURCED, _SET_WHOLE = slot_setters(RoutedBatch, "endpoint", "sourced", "whole")


def _whole(endpoint: Endpoint, sourced: SourcedBatch) -> RoutedBatch:
    """``RoutedBatch(endpoint=endpoint, sourced=sourced)``, by its slots (``slot_setters``)."""
    routed: RoutedBatch = object.__new__(RoutedBatch)
    _SET_ENDPOINT(routed, endpoint)
    _SET_SOURCED(routed, sourced)
    _SET_WHOLE(routed, True)
    return routed


def as_sourced(item: Batch | SourcedBatch, position: int) -> SourcedBatch:
    """Wrap a plain batch as if it came from one input row numbered ``position`` (1-based)."""
    if isinstance(item, SourcedBatch):
        return item
    if not isinstance(item, Batch):
        msg = f"item {position}: expected a Batch or SourcedBatch, got {type(item).__name__}"
        raise ModelError(msg)
    row = RowRef(position)
    return SourcedBatch(batch=item, event_rows=(row,) * len(item.events or ()), rows=(row,))


def _to_ms(value: datetime) -> int:
    if value.tzinfo is None:
        msg = "now must be timezone-aware (for example datetime.now(timezone.utc))"
        raise ConfigurationError(msg)
    return int(value.timestamp() * 1000)


def check_routing(historical_after: timedelta, historical_min_age: timedelta) -> None:
    """Refuse routing settings that contradict each other (raises :class:`ConfigurationError`).

    An event at least ``historical_after`` old goes historical, where one younger than
    ``historical_min_age`` is refused: with ``historical_after`` below ``historical_min_age``,
    the events in between could go live but would be refused instead.
    """
    for name, value in (
        ("historical_after", historical_after),
        ("historical_min_age", historical_min_age),
    ):
        if not isinstance(value, timedelta):
            msg = f"{name} must be a timedelta, got {type(value).__name__}"
            raise ConfigurationError(msg)
        if value < timedelta(0):
            msg = f"{name} must not be negative, got {_duration(value)}"
            raise ConfigurationError(msg)
    if historical_after < historical_min_age:
        msg = (
            f"historical_after ({_duration(historical_after)}) is under historical_min_age "
            f"({_duration(historical_min_age)}): events between the two would be refused "
            "instead of going live; lower historical_min_age too, or raise historical_after"
        )
        raise ConfigurationError(msg)


def _duration(value: timedelta | int) -> str:
    """A duration (or milliseconds) rounded down to the minute: ``71 h 59 min``, ``28 days``.

    Rounded down, never to nearest: an age just under a limit must not print as the limit.
    """
    ms = value // timedelta(milliseconds=1) if isinstance(value, timedelta) else value
    sign, ms = ("-", -ms) if ms < 0 else ("", ms)
    minutes = ms // 60_000
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days >= 7 and not hours and not minutes:  # "28 days", but "72 h" as mParticle says
        return f"{sign}{days} days"
    hours += days * 24
    if not minutes:
        return f"{sign}{hours} h"
    return f"{sign}{hours} h {minutes} min" if hours else f"{sign}{minutes} min"


def route(
    batches: Iterable[Batch | SourcedBatch],
    *,
    now: datetime,
    historical_after: timedelta = DEFAULT_HISTORICAL_AFTER,
    historical_min_age: timedelta = DEFAULT_HISTORICAL_MIN_AGE,
    historical_only: bool = False,
) -> Iterator[RoutedBatch | RowProblem]:
    """Route every event to the live or historical endpoint, lazily, in input order.

    An event whose age (``now`` minus its timestamp) is at least ``historical_after`` goes
    historical; any other event, including one without a timestamp (mParticle stamps those
    with the time of receipt), goes live. With ``historical_only=True`` (a backfill) every
    event is meant for the historical endpoint.

    An event bound for historical that has no timestamp or is younger than
    ``historical_min_age`` is not sent: it is yielded as a :class:`RowProblem` at
    ``Stage.ROUTING``. A batch without events (user attributes only) always goes live, since
    mParticle refuses an empty historical batch.
    """
    check_routing(historical_after, historical_min_age)
    return _route(batches, now, historical_after, historical_min_age, historical_only)


def _all_live(stamps: Sequence[int | None], oldest_live: int) -> bool:
    """Whether every event is younger than historical_after (or has no timestamp): stamped
    after ``oldest_live`` (now less historical_after, in ms)."""
    known = cast(
        "Sequence[int]",
        [stamp for stamp in stamps if stamp is not None] if None in stamps else stamps,
    )
    return not known or min(known) > oldest_live


def _route(
    batches: Iterable[Batch | SourcedBatch],
    now: datetime,
    historical_after: timedelta,
    historical_min_age: timedelta,
    historical_only: bool,
) -> Iterator[RoutedBatch | RowProblem]:
    now_ms = _to_ms(now)
    after_ms = historical_after // timedelta(milliseconds=1)
    min_age_ms = historical_min_age // timedelta(milliseconds=1)
    for position, item in enumerate(batches, start=1):
        sourced = as_sourced(item, position)
        # Events written as data (the Arrow engine's) are read as data, not models: their
        # timestamps are kept beside them.
        events: Sequence[Any]
        stamps: Sequence[int | None] | None
        if isinstance(sourced, WrittenBatch):
            events = sourced.blobs
            stamps = sourced.stamps if sourced.all_written else sourced.event_stamps()
        else:
            events, stamps = sourced.batch.events or (), None
        if not events:
            yield _whole(Endpoint.LIVE, sourced)
            continue
        if not historical_only and stamps is not None and _all_live(stamps, now_ms - after_ms):
            # The usual case first, on written timestamps: the batch goes live whole.
            yield _whole(Endpoint.LIVE, sourced)
            continue
        live: list[int] = []
        historical: list[int] = []
        refused: list[tuple[int, str]] = []
        for index, event in enumerate(events):
            stamp = event.timestamp_unixtime_ms if stamps is None else stamps[index]
            age = None if stamp is None else now_ms - stamp
            goes_historical = historical_only or (age is not None and age >= after_ms)
            if not goes_historical:
                live.append(index)
            elif age is None:
                refused.append((index, "the historical endpoint needs a timestamp on every event"))
            elif age < min_age_ms:
                refused.append(
                    (
                        index,
                        f"event is {_duration(age)} old; the historical endpoint refuses events "
                        f"under {_duration(historical_min_age)} old",
                    )
                )
            else:
                historical.append(index)
        for index, reason in refused:
            yield RowProblem(
                row=sourced.event_rows[index],
                stage=Stage.ROUTING,
                reason=reason,
                field=f"events[{index}].data.timestamp_unixtime_ms",
            )
        if not refused and not (live and historical):
            endpoint = Endpoint.HISTORICAL if historical else Endpoint.LIVE
            yield _whole(endpoint, sourced)
            continue
        if not live and not historical:
            # Every event was refused; rows that gave only user fields go with them.
            refused_rows = {sourced.event_rows[index] for index, _ in refused}
            for row in sourced.rows:
                if row not in refused_rows:
                    yield RowProblem(
                        row=row,
                        stage=Stage.ROUTING,
                        reason="every event of this row's batch was refused by routing",
                    )
            continue
        for endpoint, indexes in ((Endpoint.LIVE, live), (Endpoint.HISTORICAL, historical)):
            if indexes:
                yield RoutedBatch(
                    endpoint=endpoint, sourced=events_part(sourced, indexes), whole=False
                )


def utc_now() -> datetime:
    """The current time, timezone-aware (the default clock for routing)."""
    return datetime.now(timezone.utc)
