"""mparticle_feed._sync.records: the content hash the state compares rows by."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed._sync.records import content_hash

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_content_hash_ignores_key_order(value: dict[str, object]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert content_hash(value) == content_hash(reordered)
    assert len(content_hash(value)) == 32


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@given(json_values, json_values)
def test_content_hash_equal_only_for_equal_json(a: object, b: object) -> None:
    assert (content_hash(a) == content_hash(b)) == (_canonical(a) == _canonical(b))
