from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import Batch, CustomEvent, EventsClient, UserIdentities
from mparticle_feed._delivery.routing import (
    Endpoint,
    RoutedBatch,
    _duration,
    as_sourced,
    route,
)
from mparticle_feed._errors import ConfigurationError, ModelError
from mparticle_feed._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)


def event(age: timedelta | None, name: str = "e") -> CustomEvent:
    stamp = None if age is None else NOW - age
    return CustomEvent(event_name=name, custom_event_type="other", timestamp_unixtime_ms=stamp)


def one(age: timedelta | None, **options: object) -> list[RoutedBatch | RowProblem]:
    batch = Batch(events=[event(age)], user_identities=UserIdentities(customer_id="u"))
    return list(route([batch], now=NOW, **options))  # type: ignore[arg-type]


def test_exactly_28_days_old_goes_historical() -> None:
    (routed,) = one(timedelta(days=28))
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.HISTORICAL


def test_one_millisecond_under_28_days_goes_live() -> None:
    (routed,) = one(timedelta(days=28) - MS)
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.LIVE


def test_exactly_72_hours_old_may_go_historical() -> None:
    (routed,) = one(timedelta(hours=72), historical_only=True)
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.HISTORICAL


def test_one_millisecond_under_72_hours_is_refused_not_sent() -> None:
    (problem,) = one(timedelta(hours=72) - MS, historical_only=True)
    assert isinstance(problem, RowProblem)
    assert problem.stage is Stage.ROUTING
    assert problem.field == "events[0].data.timestamp_unixtime_ms"
    # Rounded down, never up to the limit it is under.
    assert "event is 71 h 59 min old" in problem.reason
    assert "under 72 h old" in problem.reason
    assert problem.row == RowRef(1)


def test_contradicting_routing_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"historical_after \(48 h\) is under"):
        EventsClient("k", "s", historical_after=timedelta(hours=48))
    with pytest.raises(ConfigurationError, match="historical_min_age"):
        list(route([], now=NOW, historical_after=timedelta(hours=48)))
    with pytest.raises(ConfigurationError, match="must not be negative"):
        list(route([], now=NOW, historical_min_age=-MS))


def test_a_lower_min_age_lets_a_50_hour_old_event_go_historical() -> None:
    options = {"historical_after": timedelta(hours=48), "historical_min_age": timedelta(hours=48)}
    client = EventsClient("k", "s", **options)  # type: ignore[arg-type]
    assert client.historical_after == client.historical_min_age == timedelta(hours=48)
    (routed,) = one(timedelta(hours=50), **options)
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.HISTORICAL


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=72) - MS, "71 h 59 min"),
        (timedelta(days=28), "28 days"),
        (timedelta(days=1), "24 h"),
        (timedelta(minutes=59, seconds=59), "59 min"),
        (timedelta(hours=3), "3 h"),
    ],
)
def test_durations_in_messages_round_down(duration: timedelta, text: str) -> None:
    assert _duration(duration) == text


def test_event_without_timestamp_goes_live() -> None:
    (routed,) = one(None)
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.LIVE


def test_historical_only_refuses_event_without_timestamp() -> None:
    (problem,) = one(None, historical_only=True)
    assert isinstance(problem, RowProblem)
    assert "timestamp" in problem.reason


def test_future_events_go_live() -> None:
    (routed,) = one(-timedelta(days=3))
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.LIVE


def test_batch_without_events_goes_live() -> None:
    (routed,) = route([Batch(user_attributes={"a": "b"})], now=NOW, historical_only=True)
    assert isinstance(routed, RoutedBatch)
    assert routed.endpoint is Endpoint.LIVE


def test_mixed_batch_is_split_for_the_same_user() -> None:
    rows = (RowRef(1, "a"), RowRef(2, "b"), RowRef(3, "c"), RowRef(4, "attrs"))
    batch = Batch(
        events=[event(timedelta(days=1)), event(timedelta(days=40)), event(timedelta(days=2))],
        user_identities=UserIdentities(email="x@example.com"),
        user_attributes={"tier": "gold"},
    )
    sourced = SourcedBatch(batch=batch, event_rows=rows[:3], rows=rows)
    live, historical = route([sourced], now=NOW)
    assert isinstance(live, RoutedBatch)
    assert isinstance(historical, RoutedBatch)
    assert (live.endpoint, historical.endpoint) == (Endpoint.LIVE, Endpoint.HISTORICAL)
    for part in (live, historical):
        assert part.batch.user_identities == batch.user_identities
        assert part.batch.user_attributes == batch.user_attributes
        assert not part.whole
    assert live.sourced.event_rows == (rows[0], rows[2])
    assert live.sourced.rows == (rows[0], rows[2], rows[3])
    assert historical.sourced.event_rows == (rows[1],)
    assert historical.sourced.rows == (rows[1], rows[3])


def test_all_events_refused_reports_user_field_rows_too() -> None:
    rows = (RowRef(1), RowRef(2))
    batch = Batch(events=[event(None)], user_attributes={"a": 1})
    sourced = SourcedBatch(batch=batch, event_rows=rows[:1], rows=rows)
    problems = list(route([sourced], now=NOW, historical_only=True))
    assert [p.row for p in problems if isinstance(p, RowProblem)] == list(rows)


def test_plain_batches_get_synthetic_rows() -> None:
    batch = Batch(events=[event(None), event(None)])
    sourced = as_sourced(batch, 7)
    assert sourced.rows == (RowRef(7),)
    assert sourced.event_rows == (RowRef(7), RowRef(7))
    with pytest.raises(ModelError, match="item 3"):
        as_sourced("nope", 3)  # type: ignore[arg-type]


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        list(route([], now=datetime(2026, 1, 1)))


ages = st.one_of(st.none(), st.integers(-(10**9), 90 * 86_400_000).map(lambda ms: ms * MS))


@given(st.lists(st.lists(ages, min_size=0, max_size=6), max_size=8), st.booleans())
def test_every_event_is_routed_once_or_refused(
    ages_per_batch: list[list[timedelta | None]], only: bool
) -> None:
    sourced = []
    number = 0
    for batch_ages in ages_per_batch:
        refs = []
        for _ in batch_ages:
            number += 1
            refs.append(RowRef(number))
        batch = Batch(events=[event(age, str(i)) for i, age in enumerate(batch_ages)])
        sourced.append(SourcedBatch(batch=batch, event_rows=tuple(refs), rows=tuple(refs)))
    seen: Counter[RowRef] = Counter()
    for item in route(sourced, now=NOW, historical_only=only):
        if isinstance(item, RowProblem):
            seen[item.row] += 1
            continue
        seen.update(item.sourced.event_rows)
        if item.endpoint is Endpoint.HISTORICAL:
            for ev in item.batch.events or ():
                assert ev.timestamp_unixtime_ms is not None
                assert NOW.timestamp() * 1000 - ev.timestamp_unixtime_ms >= 72 * 3_600_000
    assert seen == Counter(RowRef(n) for n in range(1, number + 1))
