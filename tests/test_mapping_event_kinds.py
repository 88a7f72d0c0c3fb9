"""Every event type from rows: screen views, and the general mapping choosing the type per row."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.files import mapping_from_dict
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._wire.models import EVENT_CLASSES
from mparticle_feed.testing import strategies as mps

TS = 1_700_000_000_000


def _documents(run: Any) -> list[dict[str, Any]]:
    return [orjson.loads(mpf.dumps(sourced.batch)) for sourced in run]


def test_screen_views_in_code_and_in_a_file(schema_problems: Any) -> None:
    in_code = mpf.ScreenViewEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        timestamp_unixtime_ms="at",
        screen_name="screen",
        activity_type="activity",
        custom_attributes={"referrer": "ref"},
    )
    in_file = mapping_from_dict(
        {"kind": "screen_view", "primary_key": "id", "user_identities": {"customer_id": "cid"},
         "timestamp_unixtime_ms": "at", "screen_name": "screen", "activity_type": "activity",
         "custom_attributes": {"columns": {"referrer": "ref"}}}
    )  # fmt: skip
    assert in_file == in_code
    rows = [
        {"id": 1, "cid": 7, "at": TS, "screen": "Home", "activity": None, "ref": "ad"},
        {"id": 2, "cid": 7, "at": TS, "screen": None, "activity": None, "ref": None},
    ]
    run = map_rows(rows, in_code)
    (document,) = _documents(run)
    assert document["events"] == [
        {"event_type": "screen_view",
         "data": {"timestamp_unixtime_ms": TS, "custom_attributes": {"referrer": "ad"},
                  "screen_name": "Home"}}
    ]  # fmt: skip
    (problem,) = run.rejected
    assert (problem.field, problem.reason) == ("screen_name", "screen_name is null")
    assert schema_problems([document], "2026") == []


MIXED = mpf.EventMapping(
    primary_key="id",
    user_identities={"customer_id": "cid"},
    timestamp_unixtime_ms="at",
    event_type="kind",
    data="data",
    custom_attributes={"source": "src"},
)

#: One row per event type, with the type's own fields as a JSON column.
EXAMPLES: dict[str, dict[str, Any]] = {
    "custom_event": {"event_name": "signed up", "custom_event_type": "other"},
    "commerce_event": {"product_action": {"action": "purchase", "products": [{"id": "a", "price": 9.99}]}},
    "screen_view": {"screen_name": "Home"},
    "session_start": {},
    "session_end": {"session_duration_ms": 1200},
    "user_attribute_change": {"user_attribute_name": "plan", "new": "gold", "old": None},
    "user_identity_change": {"new": {"identity_type": "email", "identity": "a@b.c", "timestamp_unixtime_ms": TS}},
    "opt_out": {"is_opted_out": True},
    "push_registration": {"register": True, "registration_token": "tok"},
    "push_message": {"push_message_token": "t", "push_message_type": "received", "push_notification_payload": "{}"},
    "application_state_transition": {"application_transition_type": "application_initialized"},
    "breadcrumb": {"label": "step 1"},
    "crash_report": {"severity": "fatal", "message": "boom"},
    "network_performance": {"url": "https://example.com", "response_code": 200},
    "first_run": {},
    "uninstall": {},
    "profile": {"previous_mpid": 1, "current_mpid": 2, "profile_event_type": "signup"},
}  # fmt: skip


def test_the_examples_cover_every_event_type() -> None:
    assert set(EXAMPLES) == {cls.event_type.value for cls in EVENT_CLASSES.values()}


def test_one_query_feeds_every_event_type(schema_problems: Any) -> None:
    rows = [
        {"id": index, "cid": 7, "at": TS, "kind": kind, "data": json.dumps(data), "src": "dw"}
        for index, (kind, data) in enumerate(EXAMPLES.items())
    ]
    run = map_rows(rows, MIXED)
    documents = _documents(run)
    assert run.rejected == []
    events = [event for document in documents for event in document["events"]]
    assert [event["event_type"] for event in events] == list(EXAMPLES)
    assert all(event["data"]["timestamp_unixtime_ms"] == TS for event in events)
    assert schema_problems(documents, "2026") == []


def test_a_general_mapping_from_a_file_with_nested_sources() -> None:
    mapping = mapping_from_dict(
        {"kind": "event", "primary_key": "id", "user_identities": {"email": "email"},
         "timestamp_unixtime_ms": "at", "event_type": {"const": "screen_view"},
         "data": {"screen_name": "page"}}
    )  # fmt: skip
    (document,) = _documents(
        map_rows([{"id": 1, "email": "a@b.c", "at": TS, "page": "Cart"}], mapping)
    )
    assert document["events"][0] == {
        "event_type": "screen_view",
        "data": {"timestamp_unixtime_ms": TS, "screen_name": "Cart"},
    }


@pytest.mark.parametrize(
    ("kind", "data", "field", "reason"),
    [
        ("nope", {}, "event_type", "not an event type"),
        (None, {}, "event_type", "null"),
        ("screen_view", {}, "data.screen_name", "needs screen_name"),
        ("screen_view", {"screen_name": "a", "label": "x"}, "data.label", "no field 'label'"),
        ("session_end", {"session_duration_ms": "long"}, "data.session_duration_ms", "not a number"),
        ("custom_event", {"event_name": "e", "custom_event_type": "other",
                          "timestamp_unixtime_ms": 5}, "data.timestamp_unixtime_ms", "no field"),
        ("commerce_event", {}, None, "exactly one of"),
    ],
)  # fmt: skip
def test_a_row_the_chosen_type_cannot_take_is_rejected_with_the_reason(
    kind: Any, data: dict[str, Any], field: str | None, reason: str
) -> None:
    row = {"id": 1, "cid": 7, "at": TS, "kind": kind, "data": json.dumps(data), "src": None}
    run = map_rows([row], MIXED)
    assert list(run) == []
    (problem,) = run.rejected
    assert problem.field == field
    assert reason in problem.reason


@settings(max_examples=25)
@given(
    kinds=st.lists(st.sampled_from(sorted(EXAMPLES)), min_size=1, max_size=8), at=mps.timestamps()
)
def test_generated_mixed_streams_validate(kinds: list[str], at: int, schema_problems: Any) -> None:
    rows = [
        {"id": i, "cid": 7, "at": at, "kind": kind, "data": EXAMPLES[kind], "src": None}
        for i, kind in enumerate(kinds)
    ]
    run = map_rows(rows, MIXED)
    documents = _documents(run)
    assert run.rows_mapped == len(kinds)
    sent = [event["event_type"] for document in documents for event in document["events"]]
    assert sent == kinds
    assert schema_problems(documents, "2026") == []


def test_event_names_follow_the_custom_event_policy() -> None:
    rows = [
        {"id": 1, "cid": 7, "at": TS, "kind": "custom_event", "src": None,
         "data": {"event_name": "  " + "x" * 300, "custom_event_type": "other"}},
        {"id": 2, "cid": 7, "at": TS, "kind": "custom_event", "src": None,
         "data": {"event_name": "   ", "custom_event_type": "other"}},
    ]  # fmt: skip
    run = map_rows(rows, MIXED)
    (document,) = _documents(run)
    assert document["events"][0]["data"]["event_name"] == "x" * 256
    assert run.values_truncated == 1
    (problem,) = run.rejected
    assert (problem.field, problem.reason) == ("data.event_name", "event name is empty")
