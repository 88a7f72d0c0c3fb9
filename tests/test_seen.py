"""mparticle_feed._sync.seen: the primary keys one run has seen, and the row of each."""

from __future__ import annotations

from hypothesis import given
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
