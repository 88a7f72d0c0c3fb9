"""A primary key that cannot be sent rejects its row only, on every path of ``map_rows``.

A user-attribute mapping maps each row on its own, the event mappings through the regroup
window; both check the key the same way (``MappingRun._unsendable``).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import CustomEventMapping, RowMapping, UserAttributeMapping, map_rows

MAPPINGS: dict[str, RowMapping] = {
    "user_attributes": UserAttributeMapping(
        primary_key="id", user_identities={"customer_id": "cid"}, user_attributes={"plan": "plan"}
    ),
    "custom_event": CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    ),
}

#: Text with at least one lone surrogate: what undecodable bytes read leniently give.
unsendable_keys = st.tuples(
    st.text(max_size=5),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=5),
).map("".join)


def _row(key: str, number: int) -> dict[str, object]:
    return {"id": key, "cid": f"u{number}", "plan": "pro", "name": "open", "ts": 1_700_000_000_000}


@pytest.mark.parametrize("kind", sorted(MAPPINGS))
@given(key=unsendable_keys, position=st.integers(0, 2))
def test_a_lone_surrogate_in_a_primary_key_rejects_that_row_only(
    kind: str, key: str, position: int
) -> None:
    rows = [_row(f"k{n}", n) for n in range(3)]
    rows[position]["id"] = key
    run = map_rows(rows, MAPPINGS[kind])
    batches = list(run)

    assert (run.rows_in, run.rows_mapped, run.rows_rejected) == (3, 2, 1)
    [problem] = run.rejected
    assert problem.row.row_number == position + 1
    assert problem.field == "primary_key"
    assert problem.reason == "the primary key is not valid Unicode text (a lone surrogate)"
    assert problem.row.primary_key == key.encode("utf-8", "backslashreplace").decode()
    sent = sorted(ref.primary_key for batch in batches for ref in batch.rows)
    assert sent == sorted(f"k{n}" for n in range(3) if n != position)
