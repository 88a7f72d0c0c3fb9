"""The differ's per-event state hashes equal those earlier releases stored (no migration)."""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given, settings

from mparticle_feed import Batch, from_dict
from mparticle_feed._sync.differ import _event_hashes
from mparticle_feed._sync.records import content_hash
from mparticle_feed._wire.codec import to_dict
from mparticle_feed.testing import strategies


def _stored_hashes(batch: Batch) -> list[str]:
    """How 0.x computed them: the batch as a dict tree, each event hashed with the user's."""
    document: dict[str, Any] = to_dict(batch)
    events = document.pop("events", None) or []
    document.pop("source_request_id", None)
    user = content_hash(document)
    return [content_hash([user, event]) for event in events]


@settings(max_examples=300)
@given(strategies.batches(min_events=1, max_events=6))
def test_event_hashes_match_the_stored_ones(batch: Batch) -> None:
    assert _event_hashes(batch) == _stored_hashes(batch)


@given(strategies.batches(min_events=1, max_events=3))
def test_a_changed_user_field_changes_every_event_hash(batch: Batch) -> None:
    moved = attrs.evolve(batch, mpid=2 if batch.mpid == 1 else 1)
    assert not set(_event_hashes(moved)) & set(_event_hashes(batch))


def test_values_orjson_refuses_hash_as_before() -> None:
    batch = from_dict(
        {
            "environment": "development",
            "user_identities": {"customer_id": "u\udc80"},
            "events": [
                {
                    "event_type": "custom_event",
                    "data": {"event_name": "x", "custom_event_type": "other"},
                }
            ],
        }
    )
    assert _event_hashes(batch) == _stored_hashes(batch)
