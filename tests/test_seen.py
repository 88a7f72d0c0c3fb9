"""mparticle_feed._sync.seen: the primary keys one run has seen, and the row of each (in
memory up to a bound, then on disk behind a filter)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mparticle_feed._sync.seen import SeenKeys


@given(st.lists(st.text(max_size=6), max_size=60))
def test_first_seen_names_the_first_row_of_every_repeated_key(keys: list[str]) -> None:
    seen = SeenKeys()
    expected: dict[str, int] = {}
    try:
        for row, key in enumerate(keys, start=1):
            assert seen.first_seen(key, row) == expected.get(key)
            expected.setdefault(key, row)
    finally:
        seen.close()


def test_keys_are_compared_exactly() -> None:
    seen = SeenKeys()
    try:
        assert [seen.first_seen(key, row) for row, key in enumerate(["a", "A", "a ", "a"])] == [
            None,
            None,
            None,
            0,
        ]
    finally:
        seen.close()


def _model_answers(keys: list[str]) -> list[int | None]:
    first: dict[str, int] = {}
    answers: list[int | None] = []
    for row, key in enumerate(keys, start=1):
        answers.append(first.get(key))
        first.setdefault(key, row)
    return answers


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.text(max_size=4), max_size=60),
    memory_keys=st.integers(1, 8),
    filter_bits=st.sampled_from([8, 64, 1 << 12]),
)
def test_answers_as_a_dict_would_across_spills(
    keys: list[str], memory_keys: int, filter_bits: int
) -> None:
    seen = SeenKeys(memory_keys=memory_keys, filter_bits=filter_bits)
    try:
        answers = [seen.first_seen(key, row) for row, key in enumerate(keys, start=1)]
    finally:
        seen.close()
    assert answers == _model_answers(keys)


@settings(max_examples=80, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.booleans(), st.lists(st.sampled_from("abcdefghij"), max_size=8)),
        max_size=12,
    ),
    memory_keys=st.integers(1, 12),
    filter_bits=st.sampled_from([8, 64, 1 << 12]),
)
def test_runs_of_keys_answer_as_key_by_key_would(
    runs: list[tuple[bool, list[str]]], memory_keys: int, filter_bits: int
) -> None:
    """Runs (checked together) mixed with single keys, across spills: the positions of
    repeated keys and their first rows are what a dict gives, key by key."""
    seen = SeenKeys(memory_keys=memory_keys, filter_bits=filter_bits)
    keys = [key for _, run in runs for key in run]
    answers: list[int | None] = []
    row = 1
    try:
        for together, run in runs:
            if together:
                found = seen.first_seen_run(run, row)
                assert all(0 <= position < len(run) for position in found)
                answers.extend(found.get(position) for position in range(len(run)))
            else:
                answers.extend(seen.first_seen(key, row + i) for i, key in enumerate(run))
            row += len(run)
            assert len(seen._recent) < memory_keys  # memory stays bounded
    finally:
        seen.close()
    assert answers == _model_answers(keys)


def test_memory_stays_bounded_and_keys_on_disk_are_found() -> None:
    seen = SeenKeys(memory_keys=100, filter_bits=1 << 10)
    try:
        for row in range(1, 1_001):
            assert seen.first_seen(f"key-{row}", row) is None
            assert len(seen._recent) < 100
        assert seen.spilled == 1_000 - len(seen._recent)
        assert seen.first_seen("key-1", 5_000) == 1  # on disk
        assert seen.first_seen("key-999", 5_001) == 999
        assert seen.first_seen("key-new", 5_002) is None
        assert seen.first_seen("key-new", 5_003) == 5_002
    finally:
        seen.close()


@pytest.mark.parametrize(("memory_keys", "filter_bits"), [(0, 64), (1, 4), (1, 48)])
def test_bad_bounds_are_refused(memory_keys: int, filter_bits: int) -> None:
    with pytest.raises(ValueError, match="memory_keys"):
        SeenKeys(memory_keys=memory_keys, filter_bits=filter_bits)
