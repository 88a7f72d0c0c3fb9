"""mparticle_feed.testing.FakeClock: moves only when slept on or advanced, and fits every hook."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import ConfigurationError
from mparticle_feed.testing import FakeClock


@given(st.lists(st.floats(min_value=-5, max_value=1e6, allow_nan=False), max_size=20))
def test_sleeps_are_recorded_and_move_the_clock_by_their_positive_part(
    waits: list[float],
) -> None:
    clock = FakeClock(10.0, wall=1_000_000.0)
    for wait in waits:
        clock.sleep(wait)
    assert clock.sleeps == waits
    assert clock.slept == pytest.approx(sum(waits))
    moved = sum(max(0.0, w) for w in waits)
    assert clock() == clock.now == clock.monotonic() == pytest.approx(10.0 + moved)
    assert clock.time() == pytest.approx(1_000_000.0 + moved)


def test_advance_moves_without_a_sleep_and_never_back() -> None:
    clock = FakeClock(0.0)
    clock.advance(2.5)
    assert (clock(), clock.sleeps) == (2.5, [])
    with pytest.raises(ConfigurationError, match="cannot go back"):
        clock.advance(-1)
    assert clock() == 2.5


def test_the_sleeps_list_is_a_copy() -> None:
    clock = FakeClock()
    clock.sleep(1)
    clock.sleeps.append(99)
    assert clock.sleeps == [1]


def test_threads_sleeping_at_once_lose_no_wait() -> None:
    clock = FakeClock(0.0)

    def nap() -> None:
        for _ in range(500):
            clock.sleep(0.5)

    threads = [threading.Thread(target=nap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(clock.sleeps) == 2_000
    assert clock() == 1_000.0


def test_repr_shows_the_reading_and_the_sleeps() -> None:
    clock = FakeClock(3.0)
    clock.sleep(1)
    assert repr(clock) == "FakeClock(now=4.0, sleeps=1)"
