"""Batch-level fields from rows: consent, partner identities, integration attributes,
attribution, device_info's other fields, deleted user attributes; and the timestamp rule."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings

import mparticle_feed as mpf
from mparticle_feed._mapping.files import mapping_from_dict
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.spec import CustomEventMapping, UserAttributeMapping
from mparticle_feed.testing import strategies as mps

FLAT_CONSENT = {
    "gdpr": {
        "marketing": {
            "consented": "mkt",
            "timestamp_unixtime_ms": "mkt_at",
            "document": "mkt_doc",
            "location": "mkt_where",
            "hardware_id": "mkt_hw",
        }
    },
    "ccpa": {"data_sale_opt_out": {"consented": "ccpa", "timestamp_unixtime_ms": "ccpa_at"}},
}


def _custom(**fields: Any) -> CustomEventMapping:
    return CustomEventMapping(
        primary_key="id",
        user_identities={"email": "email"},
        event_name="name",
        timestamp_unixtime_ms="ts",
        **fields,
    )


def _row(**values: Any) -> dict[str, Any]:
    return {"id": 1, "email": "a@b.c", "name": "n", "ts": 1_700_000_000_000, **values}


def _documents(run: Any) -> list[dict[str, Any]]:
    return [orjson.loads(mpf.dumps(sourced.batch)) for sourced in run]


def test_consent_from_flat_columns(schema_problems: Any) -> None:
    mapping = _custom(consent_state=FLAT_CONSENT)
    rows = [
        _row(mkt=True, mkt_at=1_700_000_000_000, mkt_doc="v2", mkt_where="web", mkt_hw="h1",
             ccpa="false", ccpa_at="2024-01-01T00:00:00Z"),
        # A purpose whose columns are all null is left out; no purpose at all, no consent.
        _row(id=2, email="b@b.c", mkt=None, mkt_at=None, mkt_doc=None, mkt_where=None,
             mkt_hw=None, ccpa=None, ccpa_at=None),
    ]  # fmt: skip
    run = map_rows(rows, mapping)
    first, second = _documents(run)
    assert first["consent_state"] == {
        "gdpr": {
            "marketing": {
                "consented": True,
                "timestamp_unixtime_ms": 1_700_000_000_000,
                "document": "v2",
                "location": "web",
                "hardware_id": "h1",
            }
        },
        "ccpa": {"data_sale_opt_out": {"consented": False, "timestamp_unixtime_ms": 1704067200000}},
    }
    assert "consent_state" not in second
    assert schema_problems([first, second], "2026") == []


@pytest.mark.parametrize(
    ("consent", "field", "reason"),
    [
        ({"gdpr": {"m": {"consented": "maybe", "timestamp_unixtime_ms": 1}}},
         "consent_state.gdpr.m.consented", "not a boolean"),
        ({"gdpr": {"m": {"consented": True}}},
         "consent_state.gdpr.m.timestamp_unixtime_ms", "required"),
        ({"ccpa": {"sale": {"consented": True, "timestamp_unixtime_ms": 1}}},
         "consent_state", "data_sale_opt_out"),
    ],
)  # fmt: skip
def test_consent_from_a_json_column_checks_each_purpose(
    consent: dict[str, Any], field: str, reason: str
) -> None:
    run = map_rows([_row(consent=json.dumps(consent))], _custom(consent_state="consent"))
    assert list(run) == []
    (problem,) = run.rejected
    assert problem.field == field
    assert reason in problem.reason


def test_consent_and_batch_fields_from_a_mapping_file(schema_problems: Any) -> None:
    mapping = mapping_from_dict(
        {
            "kind": "user_attributes",
            "user_identities": {"email": "email"},
            "user_attributes": {"columns": {"plan": "plan"}},
            "consent_state": "consent",
            "partner_identities": "partners",
            "integration_attributes": "integrations",
            "attribution_info": {
                "service_provider": "provider",
                "publisher": "publisher",
                "campaign": "campaign",
            },
            "device_info": {"platform": {"const": "web"}, "os_version": "os"},
            "deleted_user_attributes": {"const": ["old_plan"]},
        }
    )
    consent = {"gdpr": {"analytics": {"consented": False, "timestamp_unixtime_ms": 1}}}
    row = {
        "email": "a@b.c",
        "plan": "gold",
        "consent": json.dumps(consent),
        "partners": {"shopify_customer_id": "42"},
        "integrations": '{"1234": {"segment": "vip"}}',
        "provider": "s",
        "publisher": "p",
        "campaign": "c",
        "os": "14",
    }
    (document,) = _documents(map_rows([row], mapping))
    assert document["consent_state"] == consent
    assert document["partner_identities"] == {"shopify_customer_id": "42"}
    assert document["integration_attributes"] == {"1234": {"segment": "vip"}}
    assert document["attribution_info"] == {
        "service_provider": "s",
        "publisher": "p",
        "campaign": "c",
    }
    assert document["device_info"] == {"platform": "web", "os_version": "14"}
    assert document["deleted_user_attributes"] == ["old_plan"]
    assert schema_problems([document], "2026") == []


def test_device_identities_are_refused_under_device_info() -> None:
    with pytest.raises(mpf.MappingError, match="device_identities"):
        _custom(device_info={"push_token": "tok"})


def test_blank_device_identities_are_left_out_and_do_not_identify_the_row() -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        device_identities={"push_token": "tok", "mp_deviceid": "das"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    )
    das = "0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"
    rows = [
        {"id": 1, "tok": " ", "das": das + "\n", "name": "n", "ts": 1},
        {"id": 2, "tok": "  ", "das": None, "name": "n", "ts": 1},
    ]
    run = map_rows(rows, mapping)
    (document,) = _documents(run)
    assert document["mp_deviceid"] == das
    assert "device_info" not in document
    (problem,) = run.rejected
    assert problem.row.primary_key == "2"
    assert "no user identity" in problem.reason


# --- timestamps -------------------------------------------------------------------------------


def test_an_event_mapping_without_a_timestamp_source_is_refused() -> None:
    with pytest.raises(mpf.MappingError, match="stamp_arrival_time"):
        CustomEventMapping(primary_key="id", user_identities={"email": "e"}, event_name="n")
    with pytest.raises(mpf.MappingError, match="stamp_arrival_time"):
        mapping_from_dict(
            {"kind": "custom_event", "primary_key": "id", "event_name": "n",
             "user_identities": {"email": "e"}}
        )  # fmt: skip
    with pytest.raises(mpf.MappingError, match="contradict"):
        CustomEventMapping(
            primary_key="id",
            user_identities={"email": "e"},
            event_name="n",
            timestamp_unixtime_ms="ts",
            stamp_arrival_time=True,
        )


def test_stamp_arrival_time_sends_events_without_a_timestamp() -> None:
    mapping = mapping_from_dict(
        {"kind": "custom_event", "primary_key": "id", "event_name": "n",
         "user_identities": {"email": "e"}, "stamp_arrival_time": True}
    )  # fmt: skip
    (document,) = _documents(map_rows([{"id": 1, "e": "a@b.c", "n": "x"}], mapping))
    assert "timestamp_unixtime_ms" not in document["events"][0]["data"]
    assert mapping.to_dict()["stamp_arrival_time"] is True


# --- property: generated consent --------------------------------------------------------------


@settings(max_examples=30)
@given(consent=mps.consent_states())
def test_generated_consent_in_a_json_column_arrives_as_generated(
    consent: mpf.ConsentState, schema_problems: Any
) -> None:
    mapping = UserAttributeMapping(
        user_identities={"email": "email"}, user_attributes={"a": "a"}, consent_state="consent"
    )
    given_json = mpf.to_dict(mpf.Batch(consent_state=consent)).get("consent_state", {})
    run = map_rows([{"email": "a@b.c", "a": 1, "consent": json.dumps(given_json)}], mapping)
    (document,) = _documents(run)
    expected = {key: value for key, value in given_json.items() if value}
    assert document.get("consent_state", {}) == expected
    assert schema_problems([document], "2026") == []
