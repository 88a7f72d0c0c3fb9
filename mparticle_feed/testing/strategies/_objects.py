"""Strategies for the shared objects (models stage): device, application, identities,
consent, context, and the data fields every event has.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..._wire.common import (
    ApplicationInfo,
    AttributionInfo,
    ConsentPurpose,
    ConsentState,
    Context,
    DataPlan,
    DeviceCurrentState,
    DeviceInfo,
    EventSystemNotificationInfo,
    Location,
    UserIdentities,
    UserIdentity,
)
from ..._wire.enums import (
    ApplicationOS,
    AttAuthorizationStatus,
    DeviceOrientation,
    DevicePlatform,
    IdentityType,
    LocationSource,
    SystemNotificationType,
)
from ._values import (
    _MAX_ITEMS,
    DEFAULT_MAX_TIMESTAMP,
    DEFAULT_MIN_TIMESTAMP,
    _device_ids,
    _int32,
    _int64,
    _maybe,
    _names,
    _non_negative,
    _non_negative_int64,
    _string_maps,
    _text,
    _uuid_strings,
    _values,
    custom_attribute_maps,
    money,
    timestamps,
)


def locations() -> st.SearchStrategy[Location]:
    """Geolocations (``data.location``, ``context.location``) with valid coordinates."""
    return st.builds(
        Location,
        latitude=st.floats(-90, 90),
        longitude=st.floats(-180, 180),
        accuracy=_maybe(_non_negative),
        country_code=_maybe(st.sampled_from(["US", "GB", "DE", "FR", "JP", "AU", "BR"])),
        region_code=_maybe(_text),
        city_name=_maybe(_text),
        postal_code=_maybe(_text),
        dma_code=_maybe(_int32),
        location_source=_maybe(_values(list(LocationSource))),
    )


def device_current_states() -> st.SearchStrategy[DeviceCurrentState]:
    """The device's state at an event: memory, battery, connection, orientation."""
    orientations = _values([member.value for member in DeviceOrientation])
    return st.builds(
        DeviceCurrentState,
        time_since_start_ms=_maybe(_non_negative_int64),
        battery_level=_maybe(st.floats(0, 1)),
        data_connection_type=_maybe(st.sampled_from(["offline", "wifi", "mobile"])),
        data_connection_type_detail=_maybe(_text),
        gps_state=_maybe(st.booleans()),
        total_system_memory_usage_bytes=_maybe(_non_negative_int64),
        disk_space_free_bytes=_maybe(_non_negative_int64),
        external_disk_space_free_bytes=_maybe(_non_negative_int64),
        cpu=_maybe(_text),
        system_memory_available_bytes=_maybe(_non_negative),
        system_memory_low=_maybe(st.booleans()),
        system_memory_threshold_bytes=_maybe(_non_negative),
        application_memory_available_bytes=_maybe(_non_negative),
        application_memory_max_bytes=_maybe(_non_negative),
        application_memory_total_bytes=_maybe(_non_negative),
        device_orientation=_maybe(orientations),
        status_bar_orientation=_maybe(orientations),
    )


def device_infos() -> st.SearchStrategy[DeviceInfo]:
    """``device_info``, including the device identities (advertising ids as UUIDs)."""
    return st.builds(
        DeviceInfo,
        brand=_maybe(_text),
        product=_maybe(_text),
        device=_maybe(_text),
        android_uuid=_maybe(_device_ids),
        device_manufacturer=_maybe(_text),
        platform=_maybe(_values(list(DevicePlatform))),
        os_version=_maybe(_text),
        device_model=_maybe(_text),
        screen_height=_maybe(_int32),
        screen_width=_maybe(_int32),
        screen_dpi=_maybe(_int32),
        device_country=_maybe(_text),
        locale_language=_maybe(_text),
        locale_country=_maybe(_text),
        network_country=_maybe(_text),
        network_carrier=_maybe(_text),
        network_code=_maybe(_text),
        network_mobile_country_code=_maybe(_text),
        timezone_offset=_maybe(st.integers(-12, 14)),
        build_identifier=_maybe(_text),
        http_header_user_agent=_maybe(_text),
        ios_advertising_id=_maybe(_uuid_strings),
        att_authorization_status=_maybe(_values(list(AttAuthorizationStatus))),
        att_timestamp_unixtime_ms=_maybe(timestamps()),
        push_token=_maybe(_device_ids),
        cpu_architecture=_maybe(_text),
        is_tablet=_maybe(st.booleans()),
        push_notification_sound_enabled=_maybe(st.booleans()),
        push_notification_vibrate_enabled=_maybe(st.booleans()),
        radio_access_technology=_maybe(_text),
        supports_telephony=_maybe(st.booleans()),
        has_nfc=_maybe(st.booleans()),
        bluetooth_enabled=_maybe(st.booleans()),
        bluetooth_version=_maybe(_text),
        ios_idfv=_maybe(_uuid_strings),
        android_advertising_id=_maybe(_uuid_strings),
        build_version_release=_maybe(_text),
        limit_ad_tracking=_maybe(st.booleans()),
        amp_id=_maybe(_device_ids),
        is_dst=_maybe(st.booleans()),
        roku_advertising_id=_maybe(_uuid_strings),
        roku_publisher_id=_maybe(_uuid_strings),
        microsoft_advertising_id=_maybe(_device_ids),
        microsoft_publisher_id=_maybe(_device_ids),
        fire_advertising_id=_maybe(_uuid_strings),
    )


def application_infos() -> st.SearchStrategy[ApplicationInfo]:
    """``application_info``, with ``os`` unset or any :class:`~mparticle_feed.ApplicationOS`."""
    return st.builds(
        ApplicationInfo,
        application_name=_maybe(_text),
        application_version=_maybe(_text),
        application_build_number=_maybe(_text),
        install_referrer=_maybe(_text),
        package=_maybe(_text),
        os=_maybe(_values(list(ApplicationOS))),
        apple_search_ads_attributes=_maybe(
            st.dictionaries(_names, _string_maps(), max_size=_MAX_ITEMS)
        ),
    )


def user_identities(
    *,
    identity_types: Sequence[IdentityType] | None = None,
    min_size: int = 0,
) -> st.SearchStrategy[UserIdentities]:
    """``user_identities`` with some of the 22 identity keys set.

    ``identity_types`` limits the keys used (all 22 by default); ``min_size`` sets how many
    at least are present (for example 1, so that every batch names its user).
    """
    keys = list(IdentityType) if identity_types is None else list(identity_types)
    if min_size > len(keys):
        raise InvalidArgument(f"min_size={min_size} but only {len(keys)} identity types allowed")
    return st.dictionaries(
        st.sampled_from(keys), _names, min_size=min_size, max_size=max(min_size, 4)
    ).map(_identities_from)


def _identities_from(mapping: dict[IdentityType, str]) -> UserIdentities:
    widened: dict[IdentityType | str, str | None] = {}
    widened.update(mapping.items())
    return UserIdentities.from_mapping(widened)


def data_plans() -> st.SearchStrategy[DataPlan]:
    """``context.data_plan``: a plan id and, sometimes, a version."""
    return st.builds(DataPlan, plan_id=_names, plan_version=_maybe(st.integers(1, 1000)))


def contexts() -> st.SearchStrategy[Context]:
    """The batch ``context``: a data plan and the batch location."""
    return st.builds(Context, data_plan=_maybe(data_plans()), location=_maybe(locations()))


def consent_purposes() -> st.SearchStrategy[ConsentPurpose]:
    """One consent decision (a GDPR purpose or the CCPA data sale opt-out)."""
    return st.builds(
        ConsentPurpose,
        consented=st.booleans(),
        timestamp_unixtime_ms=timestamps(),
        document=_maybe(_text),
        location=_maybe(_text),
        hardware_id=_maybe(_text),
        regulation=_maybe(_text),
    )


def consent_states() -> st.SearchStrategy[ConsentState]:
    """``consent_state``: GDPR purposes by name and, sometimes, CCPA's ``data_sale_opt_out``."""
    return st.builds(
        ConsentState,
        gdpr=_maybe(st.dictionaries(_names, consent_purposes(), max_size=_MAX_ITEMS)),
        ccpa=_maybe(st.fixed_dictionaries({"data_sale_opt_out": consent_purposes()})),
    )


def attribution_infos() -> st.SearchStrategy[AttributionInfo]:
    """``attribution_info``: service provider, publisher and campaign."""
    return st.builds(AttributionInfo, service_provider=_text, publisher=_text, campaign=_text)


def user_identity_objects() -> st.SearchStrategy[UserIdentity]:
    """One identity, as a ``user_identity_change`` event's ``new`` or ``old`` carries it."""
    return st.builds(
        UserIdentity,
        identity_type=_values(list(IdentityType)),
        identity=_names,
        timestamp_unixtime_ms=timestamps(),
        created_this_batch=_maybe(st.booleans()),
    )


def _timestamp_field(
    with_timestamp: bool | None,
    min_timestamp: int | datetime | None,
    max_timestamp: int | datetime | None,
) -> st.SearchStrategy[int | None]:
    stamps = timestamps(
        min_value=DEFAULT_MIN_TIMESTAMP if min_timestamp is None else min_timestamp,
        max_value=DEFAULT_MAX_TIMESTAMP if max_timestamp is None else max_timestamp,
    )
    if with_timestamp is None:
        return _maybe(stamps)
    if with_timestamp:
        return stamps
    if min_timestamp is not None or max_timestamp is not None:
        raise InvalidArgument("timestamp bounds were given with with_timestamp=False")
    return st.none()


def _common(
    with_timestamp: bool | None,
    min_timestamp: int | datetime | None,
    max_timestamp: int | datetime | None,
) -> dict[str, st.SearchStrategy[Any]]:
    """Strategies for the data fields every event type has."""
    return {
        "timestamp_unixtime_ms": _timestamp_field(with_timestamp, min_timestamp, max_timestamp),
        # One UUID per event, as mParticle recommends (and the 2021 schema requires).
        "source_message_id": _maybe(_uuid_strings),
        "session_uuid": _maybe(_uuid_strings),
        "session_start_unixtime_ms": _maybe(timestamps()),
        "event_start_unixtime_ms": _maybe(timestamps()),
        "custom_attributes": _maybe(custom_attribute_maps()),
        "location": _maybe(locations()),
        "device_current_state": _maybe(device_current_states()),
        "is_goal_defined": _maybe(st.booleans()),
        "lifetime_value_change": _maybe(money()),
        "lifetime_value_attribute_name": _maybe(_text),
        "data_connection_type": _maybe(_text),
        "event_num": _maybe(_int32),
        "view_controller": _maybe(_text),
        "is_main_thread": _maybe(st.booleans()),
        "canonical_name": _maybe(_text),
        "event_id": _maybe(_int64),
        "session_id": _maybe(_int64),
        "event_system_notification_info": _maybe(
            st.builds(EventSystemNotificationInfo, type=_values(list(SystemNotificationType)))
        ),
    }
