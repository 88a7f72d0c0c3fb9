"""Construction rules of the wire models: what a model refuses, and the decisions taken."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed.testing import strategies as mps

ACTION = mpf.ProductAction(action=mpf.ProductActionType.PURCHASE)
PROMOTION = mpf.PromotionAction(action=mpf.PromotionActionType.VIEW)
IMPRESSIONS = [mpf.ProductImpression(product_impression_list="home", products=[])]


# --- commerce events: exactly one kind ------------------------------------------------------


@pytest.mark.parametrize(
    "kinds",
    [
        {"product_action": ACTION},
        {"promotion_action": PROMOTION},
        {"product_impressions": IMPRESSIONS},
    ],
)
def test_commerce_event_with_one_kind(kinds: dict[str, Any]) -> None:
    event = mpf.CommerceEvent(**kinds)
    data = mpf.to_dict(mpf.Batch(events=[event]))["events"][0]["data"]
    # Exactly the kind given is written, and the event loads back equal.
    assert {"product_action", "promotion_action", "product_impressions"} & set(data) == set(kinds)
    assert mpf.loads(mpf.dumps(mpf.Batch(events=[event]))) == mpf.Batch(events=[event])


@pytest.mark.parametrize(
    ("kinds", "found"),
    [
        ({}, "found: none"),
        (
            {"product_action": ACTION, "promotion_action": PROMOTION},
            "product_action, promotion_action",
        ),
        (
            {"product_action": ACTION, "product_impressions": IMPRESSIONS},
            "product_action, product_impressions",
        ),
        (
            {
                "product_action": ACTION,
                "promotion_action": PROMOTION,
                "product_impressions": IMPRESSIONS,
            },
            "product_action, promotion_action, product_impressions",
        ),
    ],
)
def test_commerce_event_refuses_zero_or_several_kinds(kinds: dict[str, Any], found: str) -> None:
    with pytest.raises(mpf.ModelError, match="exactly one of") as info:
        mpf.CommerceEvent(**kinds)
    assert found in str(info.value)


# --- environment ----------------------------------------------------------------------------


def test_environment_defaults_to_development() -> None:
    assert mpf.Batch().environment is mpf.Environment.DEVELOPMENT
    assert mpf.to_dict(mpf.Batch())["environment"] == "development"


def test_production_must_be_asked_for() -> None:
    assert mpf.Batch(environment="production").environment is mpf.Environment.PRODUCTION
    assert mpf.Batch(environment=mpf.Environment.PRODUCTION).environment == "production"


@pytest.mark.parametrize("value", ["unknown", "Production", "prod", "staging", ""])
def test_only_production_or_development(value: str) -> None:
    with pytest.raises(mpf.ModelError, match="not a valid Environment"):
        mpf.Batch(environment=value)


def test_environment_has_exactly_two_values() -> None:
    assert {member.value for member in mpf.Environment} == {"production", "development"}


# --- timestamps -----------------------------------------------------------------------------


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(mpf.ModelError, match="naive datetime"):
        mpf.CustomEvent(
            event_name="e",
            custom_event_type="other",
            timestamp_unixtime_ms=datetime(2024, 1, 1),
        )


@pytest.mark.parametrize(
    "make",
    [
        lambda ts: mpf.SessionStartEvent(timestamp_unixtime_ms=ts),
        lambda ts: mpf.ConsentPurpose(consented=True, timestamp_unixtime_ms=ts),
        lambda ts: mpf.UserIdentity(identity_type="email", identity="a", timestamp_unixtime_ms=ts),
        lambda ts: mpf.Product(added_to_cart_time_ms=ts),
        lambda ts: mpf.DeviceInfo(att_timestamp_unixtime_ms=ts),
    ],
)
def test_every_timestamp_field_refuses_naive_datetimes(make: Any) -> None:
    with pytest.raises(mpf.ModelError, match="naive"):
        make(datetime(2024, 1, 1))


@pytest.mark.parametrize("value", ["2024-01-01T00:00:00Z", 1.5, True, Decimal(1)])
def test_timestamp_must_be_int_or_datetime(value: Any) -> None:
    with pytest.raises(mpf.ModelError, match="epoch milliseconds"):
        mpf.SessionStartEvent(timestamp_unixtime_ms=value)


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))]),
    )
)
def test_aware_datetimes_become_epoch_milliseconds(when: datetime) -> None:
    event = mpf.SessionStartEvent(timestamp_unixtime_ms=when)
    expected = (when - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    assert event.timestamp_unixtime_ms == expected


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_value", "kept"),
    [(Decimal("9.99"), Decimal("9.99")), (3, Decimal(3)), (0.1, Decimal("0.1"))],
)
def test_money_accepts_decimal_int_and_float(given_value: Any, kept: Decimal) -> None:
    price = mpf.Product(price=given_value).price
    assert isinstance(price, Decimal)
    assert price == kept


@pytest.mark.parametrize("value", [float("nan"), float("inf"), Decimal("NaN"), True, "9.99"])
def test_money_refuses_non_numbers(value: Any) -> None:
    with pytest.raises(mpf.ModelError):
        mpf.Product(price=value)


@pytest.mark.parametrize(
    "attributes",
    [{"a": [1, 2]}, {"a": {"nested": 1}}, {"a": float("nan")}, {1: "a"}],
)
def test_event_attributes_are_scalars(attributes: Any) -> None:
    with pytest.raises(mpf.ModelError):
        mpf.SessionStartEvent(custom_attributes=attributes)


def test_user_attributes_take_scalars_and_lists() -> None:
    batch = mpf.Batch(user_attributes={"tags": ["a", "b"], "age": 42, "vip": True, "gone": None})
    assert batch.user_attributes == {"tags": ["a", "b"], "age": 42, "vip": True, "gone": None}
    with pytest.raises(mpf.ModelError):
        mpf.Batch(user_attributes={"bad": [{"x": 1}]})  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"latitude": 91, "longitude": 0}, "latitude"),
        ({"latitude": 0, "longitude": -181}, "longitude"),
    ],
)
def test_location_bounds(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(mpf.ModelError, match=words):
        mpf.Location(**kwargs)


def test_uuid_and_ip_fields_are_checked() -> None:
    with pytest.raises(mpf.ModelError, match="UUID"):
        mpf.Batch(mp_deviceid="123")
    with pytest.raises(mpf.ModelError, match="IPv4 or IPv6"):
        mpf.Batch(ip="localhost")
    import uuid

    value = uuid.UUID(int=1)
    assert mpf.Batch(mp_deviceid=value).mp_deviceid == str(value)


def test_push_action_identifier_limit() -> None:
    token: dict[str, Any] = {
        "push_message_token": "t",
        "push_message_type": "sent",
        "push_notification_payload": "{}",
    }
    assert mpf.PushMessageEvent(action_identifier="x" * 100, **token).action_identifier == "x" * 100
    with pytest.raises(mpf.ModelError, match="100 characters"):
        mpf.PushMessageEvent(action_identifier="x" * 101, **token)


def test_enum_fields_accept_their_strings_and_refuse_others() -> None:
    event = mpf.CustomEvent(event_name="e", custom_event_type="navigation")
    assert event.custom_event_type is mpf.CustomEventType.NAVIGATION
    with pytest.raises(mpf.ModelError, match="expected one of"):
        mpf.CustomEvent(event_name="e", custom_event_type="shopping")


def test_batch_events_must_be_event_models() -> None:
    with pytest.raises(mpf.ModelError, match="not an event model"):
        mpf.Batch(events=[{"event_type": "custom_event", "data": {}}])  # type: ignore[list-item]


def test_ccpa_has_only_data_sale_opt_out() -> None:
    purpose = mpf.ConsentPurpose(consented=True, timestamp_unixtime_ms=0)
    assert mpf.ConsentState(ccpa={"data_sale_opt_out": purpose}).ccpa == {
        "data_sale_opt_out": purpose
    }
    with pytest.raises(mpf.ModelError, match="data_sale_opt_out"):
        mpf.ConsentState(ccpa={"data_sale": purpose})


# --- the decisions in DESIGN.md -------------------------------------------------------------


def _field_names(cls: type) -> set[str]:
    return {field.name for field in attrs.fields(cls)}


def test_customer_id_not_customerid() -> None:
    assert "customer_id" in _field_names(mpf.UserIdentities)
    assert "customerid" not in _field_names(mpf.UserIdentities)
    assert mpf.IdentityType.CUSTOMER_ID.value == "customer_id"
    with pytest.raises(mpf.ModelError):
        mpf.UserIdentities.from_mapping({"customerid": "42"})


def test_user_identities_have_all_22_keys() -> None:
    assert len(mpf.IdentityType) == 22
    assert _field_names(mpf.UserIdentities) == {member.value for member in mpf.IdentityType}


def test_no_output_only_fields_on_the_batch() -> None:
    assert not _field_names(mpf.Batch) & {"schema_version", "timestamp_unixtime_ms", "source_info"}


def test_context_not_batch_context() -> None:
    assert "context" in _field_names(mpf.Batch)
    assert "batch_context" not in _field_names(mpf.Batch)


def test_remove_from_wish_list_spelling() -> None:
    assert mpf.ProductActionType.REMOVE_FROM_WISH_LIST.value == "remove_from_wish_list"
    assert "remove_from_wishlist" not in {member.value for member in mpf.ProductActionType}
    # The derived commerce type keeps mParticle's other spelling (docs/models.md).
    assert mpf.CommerceEventType.REMOVE_FROM_WISHLIST.value == "remove_from_wishlist"


def test_seventeen_event_types() -> None:
    assert len(mpf.EventType) == 17


# --- models are frozen and keyword-only ------------------------------------------------------


@given(mps.batches(max_events=2))
def test_models_are_frozen(batch: mpf.Batch) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        batch.environment = mpf.Environment.PRODUCTION  # type: ignore[misc]


def test_models_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        mpf.Location(1.0, 2.0)  # type: ignore[call-arg]


@given(mps.batches(max_events=3))
def test_evolve_keeps_rules(batch: mpf.Batch) -> None:
    assert attrs.evolve(batch, environment="production").environment is mpf.Environment.PRODUCTION
    with pytest.raises(mpf.ModelError):
        attrs.evolve(batch, environment="test")
