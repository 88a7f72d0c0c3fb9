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


@settings(max_examples=120, deadline=None)
@given(
    pool=st.lists(st.text(max_size=3), min_size=1, max_size=12, unique=True),
    runs=st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 11), max_size=10)), max_size=12),
    memory_keys=st.integers(1, 12),
    filter_bits=st.sampled_from([8, 64, 1 << 12]),
    json_insert=st.booleans(),
)
def test_any_text_keys_answer_as_a_dict_would_either_way_to_disk(
    pool: list[str],
    runs: list[tuple[bool, list[int]]],
    memory_keys: int,
    filter_bits: int,
    json_insert: bool,
) -> None:
    """Keys of any text (NUL, quotes, backslashes, astral characters), in runs and one by
    one, across spills made by SQLite's JSON reader or by an insert per key."""
    seen = SeenKeys(memory_keys=memory_keys, filter_bits=filter_bits)
    if not json_insert:
        seen._json_insert = False
    keys = [pool[index % len(pool)] for _, run in runs for index in run]
    answers: list[int | None] = []
    row = 1
    try:
        for together, run in runs:
            run_keys = [pool[index % len(pool)] for index in run]
            answers.extend(_ask(seen, together, run_keys, row))
            row += len(run_keys)
            assert len(seen._recent) < memory_keys
        assert json_insert or seen._json_insert is False  # not asked again at a move
    finally:
        seen.close()
    assert answers == _model_answers(keys)


@pytest.mark.parametrize("json_insert", [True, False])
def test_keys_sqlite_json_would_blur_are_kept_apart_on_disk(json_insert: bool) -> None:
    # SQLite's JSON functions end a text at an escaped NUL, so such keys are moved one by
    # one; a key holding the text "\u0000" is too.
    keys = ["", "\x00", "\x00\x00", "a", "a\x00", "a\x00b", "a\\u0000", '"', "\\", "\U0001f600"]
    seen = SeenKeys(memory_keys=3, filter_bits=8)
    if not json_insert:
        seen._json_insert = False
    try:
        assert [seen.first_seen(key, row) for row, key in enumerate(keys, start=1)] == [None] * 10
        assert seen.spilled == 9
        assert seen.first_seen_run(keys, 100) == dict(enumerate(range(1, 11)))
        assert [seen.first_seen(key, 200) for key in keys] == list(range(1, 11))
    finally:
        seen.close()


def test_a_run_with_keys_on_disk_records_only_its_new_keys() -> None:
    seen = SeenKeys(memory_keys=5, filter_bits=1 << 12)
    try:
        assert seen.first_seen_run(["a", "b", "c", "d"], 1) == {}
        assert seen.spilled == 0
        # A run that would overfill memory moves it first, then is checked in one query.
        assert seen.first_seen_run(["e", "b", "f"], 5) == {1: 2}
        assert seen.spilled == 4
        assert seen.first_seen_run(["g", "a", "h"], 8) == {1: 1}
        assert seen.first_seen_run(["a", "g", "i"], 11) == {0: 1, 1: 8}
        assert seen.spilled == 8
        assert [seen.first_seen(key, 20) for key in "abcdefghi"] == [1, 2, 3, 4, 5, 7, 8, 10, 13]
        assert seen.first_seen("j", 21) is None
    finally:
        seen.close()


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.text(max_size=3), max_size=40),
    repeats=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=6),
    runs=st.lists(st.tuples(st.booleans(), st.integers(1, 7)), min_size=1, max_size=6),
    memory_keys=st.integers(1, 10),
    filter_bits=st.sampled_from([8, 1 << 12]),
)
def test_ascending_keys_with_repeats_answer_as_a_dict_would(
    keys: list[str],
    repeats: list[tuple[int, int]],
    runs: list[tuple[bool, int]],
    memory_keys: int,
    filter_bits: int,
) -> None:
    """Keys mostly in ascending order (moved to disk as a span, without filter bits), with
    earlier keys repeated among them (looked up in the span, then read back into the
    filter), in runs and one by one."""
    sequence = sorted(keys)
    for at, source in repeats:
        if sequence:
            sequence.insert(at % (len(sequence) + 1), sequence[source % len(sequence)])
    seen = SeenKeys(memory_keys=memory_keys, filter_bits=filter_bits)
    answers: list[int | None] = []
    position = 0
    try:
        while position < len(sequence):
            together, size = runs[position % len(runs)]
            run = sequence[position : position + size]
            answers.extend(_ask(seen, together, run, position + 1))
            position += len(run)
            assert len(seen._recent) < memory_keys
    finally:
        seen.close()
    assert answers == _model_answers(sequence)


def test_ascending_keys_skip_the_filter_until_lookups_in_their_span_add_up() -> None:
    seen = SeenKeys(memory_keys=10, filter_bits=1 << 12)
    keys = [f"k{n:04d}" for n in range(100)]
    try:
        for start in range(0, 100, 5):
            assert seen.first_seen_run(keys[start : start + 5], start + 1) == {}
        assert seen.spilled == 95  # each run moved the one before it
        assert seen._span == ("k0000", "k0094")
        assert not seen._filtered
        # A repeat inside the span is found; a new key inside it costs a lookup.
        assert seen.first_seen("k0003", 101) == 4
        assert seen.first_seen_run(["k0010", "k0005x", "k0200"], 102) == {0: 11}
        assert seen._span is not None
        assert seen._conn is not None
        blocks = seen._conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
        assert blocks == len(seen._blocks) > 1  # one block a move, no index
        assert seen._conn.execute("SELECT count(*) FROM seen").fetchone()[0] == 0
        # Lookups in the span (each reads a block) add up to a quarter of its 95 keys: the
        # blocks move into the index, behind the filter.
        lookups = 0
        while seen._span is not None:
            assert seen.first_seen(f"k{lookups:04d}y", 200 + lookups) is None
            lookups += 1
        assert 1 < lookups < 24
        assert seen._filtered
        assert seen._conn.execute("SELECT count(*) FROM blocks").fetchone()[0] == 0
        assert [seen.first_seen(key, 300) for key in ("k0000", "k0094", "k0099")] == [1, 95, 100]
        assert seen.first_seen_run(["k0050", "k0005x", "k0300"], 400) == {0: 51, 1: 103}
    finally:
        seen.close()


def _ask(seen: SeenKeys, together: bool, keys: list[str], row: int) -> list[int | None]:
    """What ``seen`` answers for ``keys`` from row ``row``: as one run, or one by one."""
    if together:
        found = seen.first_seen_run(keys, row)
        return [found.get(position) for position in range(len(keys))]
    return [seen.first_seen(key, row + i) for i, key in enumerate(keys)]
