"""The codec: exact JSON out, every problem of a bad document reported by JSON path."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._wire.codec import OUTPUT_ONLY_BATCH_FIELDS
from mparticle_feed.testing import strategies as mps

# --- round trips ----------------------------------------------------------------------------


@given(mps.batches())
def test_loads_inverts_dumps(batch: mpf.Batch) -> None:
    assert mpf.loads(mpf.dumps(batch)) == batch


@given(mps.batches())
def test_from_dict_inverts_to_dict(batch: mpf.Batch) -> None:
    assert mpf.from_dict(mpf.to_dict(batch)) == batch


@given(mps.batches())
def test_dumps_is_to_dict_as_json(batch: mpf.Batch) -> None:
    assert json.loads(mpf.dumps(batch)) == mpf.to_dict(batch)


@given(st.lists(mps.batches(max_events=2), max_size=3))
def test_bulk_round_trip(batches: list[mpf.Batch]) -> None:
    document = mpf.dumps(batches)
    assert isinstance(json.loads(document), list)
    assert mpf.loads(document) == batches
    assert mpf.loads(document.decode("utf-8")) == batches


@given(mps.batches())
def test_unset_fields_are_omitted(batch: mpf.Batch) -> None:
    def nulls(value: Any, path: str) -> list[str]:
        if isinstance(value, dict):
            return [p for key, item in value.items() for p in nulls(item, f"{path}.{key}")]
        if isinstance(value, list):
            return [p for index, item in enumerate(value) for p in nulls(item, f"{path}[{index}]")]
        return [path] if value is None else []

    document = mpf.to_dict(batch)
    # The 2021 schema requires both keys of a change event; a null is also a legal value
    # inside attribute maps and user attribute lists.
    allowed_null = re.compile(r"\.data\.(new|old)(\[\d+\])?$|\.custom_|attributes")
    for path in nulls(document, "$"):
        assert allowed_null.search(path), path


@given(mps.events())
def test_each_event_is_an_envelope(event: mpf.Event) -> None:
    (envelope,) = mpf.to_dict(mpf.Batch(events=[event]))["events"]
    assert set(envelope) == {"event_type", "data"}
    assert envelope["event_type"] == type(event).event_type.value


# --- the exact JSON -------------------------------------------------------------------------


def test_minimal_batch_is_just_the_environment() -> None:
    assert mpf.dumps(mpf.Batch()) == b'{"environment":"development"}'


def test_money_goes_as_json_numbers_not_strings() -> None:
    product = mpf.Product(id="sku", price=Decimal("12.50"), quantity=2, total_product_amount=25)
    event = mpf.CommerceEvent(
        product_action=mpf.ProductAction(
            action=mpf.ProductActionType.PURCHASE, total_amount=0.1, products=[product]
        )
    )
    data = json.loads(mpf.dumps(mpf.Batch(events=[event])))["events"][0]["data"]
    assert data["product_action"]["total_amount"] == 0.1
    assert data["product_action"]["products"][0] == {
        "id": "sku",
        "price": 12.5,
        "quantity": 2,
        "total_product_amount": 25,
    }
    assert isinstance(data["product_action"]["products"][0]["quantity"], int)


def test_aware_datetimes_become_epoch_milliseconds() -> None:
    from datetime import datetime, timedelta, timezone

    when = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    event = mpf.CustomEvent(event_name="e", custom_event_type="other", timestamp_unixtime_ms=when)
    data = mpf.to_dict(mpf.Batch(events=[event]))["events"][0]["data"]
    assert data["timestamp_unixtime_ms"] == 1_714_557_600_123


def test_wire_names() -> None:
    batch = mpf.Batch(
        environment="production",
        user_identities={"customer_id": "42", mpf.IdentityType.EMAIL: "a@example.com"},
        context=mpf.Context(data_plan=mpf.DataPlan(plan_id="plan", plan_version=2)),
        events=[
            mpf.CommerceEvent(
                product_action=mpf.ProductAction(action=mpf.ProductActionType.REMOVE_FROM_WISH_LIST)
            )
        ],
    )
    document = mpf.to_dict(batch)
    assert document["user_identities"] == {"customer_id": "42", "email": "a@example.com"}
    assert document["context"] == {"data_plan": {"plan_id": "plan", "plan_version": 2}}
    assert "batch_context" not in document
    assert document["environment"] == "production"
    action = document["events"][0]["data"]["product_action"]["action"]
    assert action == "remove_from_wish_list"
    assert not set(document) & {"schema_version", "timestamp_unixtime_ms", "source_info"}


# --- mParticle's sample ---------------------------------------------------------------------


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _canonical_numbers(value: Any) -> Any:
    # JSON has one number type: 0 and 0.0 are the same value.
    if isinstance(value, dict):
        return {key: _canonical_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(item) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(repr(value))
    return value


def test_the_official_sample_loads_and_dumps_back(reference_dir: Path) -> None:
    raw = (reference_dir / "mparticle.inbound.eventsapi.sample.json").read_bytes()
    batch = mpf.loads(raw)
    assert isinstance(batch, mpf.Batch)
    assert batch.events is not None
    assert len(batch.events) == 14
    source = json.loads(raw)
    assert set(source) & OUTPUT_ONLY_BATCH_FIELDS == {
        "source_info",
        "timestamp_unixtime_ms",
        "batch_id",
        "sdk_version",
    }
    expected = {key: item for key, item in source.items() if key not in OUTPUT_ONLY_BATCH_FIELDS}
    written = json.loads(mpf.dumps(batch))
    assert _canonical_numbers(_without_nulls(written)) == _canonical_numbers(
        _without_nulls(expected)
    )


def test_the_official_sample_dumps_to_schema_valid_json(
    reference_dir: Path, schema_problems: Any
) -> None:
    batch = mpf.loads((reference_dir / "mparticle.inbound.eventsapi.sample.json").read_bytes())
    assert isinstance(batch, mpf.Batch)
    document = json.loads(mpf.dumps(batch))
    # The sample's own explicit nulls fail the 2026 schema; our output has none of them.
    assert schema_problems(document, "2026") == []
    assert schema_problems(document, "2021") == []


# --- the negative suite ---------------------------------------------------------------------


def _batch_with(event: dict[str, Any], **batch: Any) -> dict[str, Any]:
    return {
        "environment": "development",
        "events": [{"event_type": "opt_out", "data": {"is_opted_out": True}}, event],
        **batch,
    }


def _problems(document: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(mpf.PayloadError) as info:
        mpf.loads(json.dumps(document))
    with pytest.raises(mpf.PayloadError) as again:
        mpf.from_dict(document)
    assert again.value.problems == info.value.problems
    return info.value.problems


CUSTOM = {"event_name": "e", "custom_event_type": "other"}


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        pytest.param(
            _batch_with(
                {"event_type": "custom_event", "data": {**CUSTOM, "custom_event_type": "nope"}}
            ),
            "$.events[1].data.custom_event_type",
            "not a valid CustomEventType",
            id="wrong enum value",
        ),
        pytest.param(
            {"environment": "unknown"},
            "$.environment",
            "not a valid Environment",
            id="environment unknown",
        ),
        pytest.param(
            _batch_with({"event_type": "screen_view", "data": {"screen_name": 7}}),
            "$.events[1].data.screen_name",
            "expected a string, got int",
            id="wrong type",
        ),
        pytest.param(
            {"environment": "development", "mpid": "123"},
            "$.mpid",
            "expected an integer, got str",
            id="number as string",
        ),
        pytest.param(
            _batch_with({"event_type": "page_view", "data": {}}),
            "$.events[1].event_type",
            "unknown event type 'page_view'",
            id="unknown event type",
        ),
        pytest.param(
            _batch_with({"event_type": "custom_event", "data": {**CUSTOM, "colour": "red"}}),
            "$.events[1].data",
            "unknown field(s) colour",
            id="unknown field in event",
        ),
        pytest.param(
            {"environment": "development", "user_identities": {"customerid": "1"}},
            "$.user_identities",
            "unknown field(s) customerid",
            id="customerid is not customer_id",
        ),
        pytest.param(
            {"environment": "development", "batch_context": {}},
            "$",
            "unknown field(s) batch_context",
            id="batch_context is not context",
        ),
        pytest.param(
            _batch_with(
                {
                    "event_type": "custom_event",
                    "data": {**CUSTOM, "timestamp_unixtime_ms": "2024-05-01T12:00:00Z"},
                }
            ),
            "$.events[1].data.timestamp_unixtime_ms",
            "expected an integer, got str",
            id="timestamp as a string",
        ),
        pytest.param(
            _batch_with({"event_type": "custom_event", "data": {"custom_event_type": "other"}}),
            "$.events[1].data.event_name",
            "required field missing",
            id="missing required field",
        ),
        pytest.param(
            _batch_with(
                {
                    "event_type": "commerce_event",
                    "data": {
                        "product_action": {"action": "remove_from_wishlist"},
                    },
                }
            ),
            "$.events[1].data.product_action.action",
            "not a valid ProductActionType",
            id="wishlist spelling",
        ),
        pytest.param(
            _batch_with({"event_type": "commerce_event", "data": {}}),
            "$.events[1].data",
            "exactly one of product_action",
            id="commerce event without its kind",
        ),
        pytest.param(
            _batch_with(
                {
                    "event_type": "crash_report",
                    "data": {
                        "severity": "s",
                        "message": "m",
                        "breadcrumbs": [{"event_type": "breadcrumb", "data": {"label": 1}}],
                    },
                }
            ),
            "$.events[1].data.breadcrumbs[0].data.label",
            "expected a string",
            id="nested breadcrumb",
        ),
        pytest.param(
            {"environment": "development", "device_info": {"ios_advertising_id": "not-a-uuid"}},
            "$.device_info",
            "not a UUID",
            id="uuid field",
        ),
        pytest.param(
            {"environment": "development", "ip": "300.1.1.1"},
            "$",
            "not an IPv4 or IPv6 address",
            id="ip",
        ),
    ],
)
def test_bad_documents_name_the_json_path(document: Any, path: str, words: str) -> None:
    problems = _problems(document)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: ") or problems[0].startswith(f"{path}."), problems
    assert words in problems[0]


def test_every_problem_of_a_document_is_reported() -> None:
    document = {
        "environment": "prod",
        "mpid": "12",
        "surprise": True,
        "events": [
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "x",
                    "custom_event_type": "nope",
                    "timestamp_unixtime_ms": "t",
                },
            },
            {"event_type": "bogus", "data": {}},
        ],
    }
    problems = _problems(document)
    paths = {problem.split(": ", 1)[0] for problem in problems}
    assert paths == {
        "$.environment",
        "$.mpid",
        "$",
        "$.events[0].data.custom_event_type",
        "$.events[0].data.timestamp_unixtime_ms",
        "$.events[1].event_type",
    }
    assert "6 problem(s)" in str(mpf.PayloadError(problems))


def test_bulk_problems_are_prefixed_with_the_batch_index() -> None:
    document = [{"environment": "development"}, {"environment": "staging"}, {"mpid": 1.5}]
    with pytest.raises(mpf.PayloadError) as info:
        mpf.loads(json.dumps(document))
    assert [problem.split(": ", 1)[0] for problem in info.value.problems] == [
        "$[1].environment",
        "$[2].mpid",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "$: not valid JSON"),
        ("42", "$: expected a batch object, got int"),
        ("[1]", "$[0]: expected a batch object, got int"),
        ('{"events": {}}', "$.events: expected an array, got dict"),
        ('{"deleted_user_attributes": "abc"}', "$.deleted_user_attributes: expected an array"),
        ('{"partner_identities": []}', "$.partner_identities: expected an object, got list"),
    ],
)
def test_documents_that_are_not_batches(text: str, problem: str) -> None:
    with pytest.raises(mpf.PayloadError) as info:
        mpf.loads(text)
    assert info.value.problems[0].startswith(problem)


def test_output_only_fields_are_dropped_on_load() -> None:
    document = {
        "environment": "production",
        "schema_version": 2,
        "timestamp_unixtime_ms": 1,
        "source_info": {"channel": "server_to_server"},
    }
    batch = mpf.from_dict(document)
    assert mpf.to_dict(batch) == {"environment": "production"}


def test_decimal_attribute_values_survive_a_round_trip() -> None:
    event = mpf.CustomEvent(
        event_name="x", custom_event_type="other", custom_attributes={"price": Decimal("0.33")}
    )
    batch = mpf.Batch(events=[event], user_attributes={"ltv": Decimal("12"), "l": [Decimal("1.5")]})
    assert batch.user_attributes == {"ltv": 12, "l": [1.5]}
    assert mpf.loads(mpf.dumps(batch)) == batch
