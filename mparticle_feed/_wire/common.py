"""Wire models shared by batches and events: locations, devices, apps, identities, consent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._errors import ModelError
from .enums import (
    ApplicationOS,
    AttAuthorizationStatus,
    DevicePlatform,
    IdentityType,
    LocationSource,
    SystemNotificationType,
)
from .sparse import passes_through, sparse_model
from .values import (
    enum_value,
    optional_device_id,
    optional_device_uuid,
    optional_float,
    optional_timestamp_ms,
    required_float,
    timestamp_ms,
)

__all__ = [
    "ApplicationInfo",
    "AttributionInfo",
    "ConsentPurpose",
    "ConsentState",
    "Context",
    "DataPlan",
    "DeviceCurrentState",
    "DeviceInfo",
    "EventSystemNotificationInfo",
    "Location",
    "UserIdentities",
    "UserIdentity",
]


def _opt_location_source(value: LocationSource | str | None) -> LocationSource | None:
    return None if value is None else enum_value(LocationSource, value)


passes_through(LocationSource, _opt_location_source)


def _opt_platform(value: DevicePlatform | str | None) -> DevicePlatform | None:
    return None if value is None else enum_value(DevicePlatform, value)


passes_through(DevicePlatform, _opt_platform)


def _opt_att(value: AttAuthorizationStatus | str | None) -> AttAuthorizationStatus | None:
    return None if value is None else enum_value(AttAuthorizationStatus, value)


passes_through(AttAuthorizationStatus, _opt_att)


def _opt_app_os(value: ApplicationOS | str | None) -> ApplicationOS | None:
    return None if value is None else enum_value(ApplicationOS, value)


passes_through(ApplicationOS, _opt_app_os)


def _identity_type(value: IdentityType | str) -> IdentityType:
    return enum_value(IdentityType, value)


passes_through(IdentityType, _identity_type)


def _notification_type(value: SystemNotificationType | str) -> SystemNotificationType:
    return enum_value(SystemNotificationType, value)


passes_through(SystemNotificationType, _notification_type)


@sparse_model(kw_only=True, slots=False)
class Location:
    """A geolocation: ``data.location`` of an event, or ``context.location`` of a batch."""

    latitude: float = attrs.field(converter=required_float)
    longitude: float = attrs.field(converter=required_float)
    accuracy: float | None = attrs.field(default=None, converter=optional_float)
    country_code: str | None = None
    region_code: str | None = None
    city_name: str | None = None
    postal_code: str | None = None
    dma_code: int | None = None
    location_source: LocationSource | None = attrs.field(
        default=None, converter=_opt_location_source
    )

    def __attrs_post_init__(self) -> None:
        if not -90.0 <= self.latitude <= 90.0:
            raise ModelError(f"latitude {self.latitude} is outside -90..90")
        if not -180.0 <= self.longitude <= 180.0:
            raise ModelError(f"longitude {self.longitude} is outside -180..180")


@sparse_model(kw_only=True, slots=False)
class DeviceCurrentState:
    """The device's state when an event happened (``data.device_current_state``)."""

    time_since_start_ms: int | None = None
    battery_level: float | None = attrs.field(default=None, converter=optional_float)
    data_connection_type: str | None = None
    data_connection_type_detail: str | None = None
    gps_state: bool | None = None
    total_system_memory_usage_bytes: int | None = None
    disk_space_free_bytes: int | None = None
    external_disk_space_free_bytes: int | None = None
    cpu: str | None = None
    system_memory_available_bytes: float | None = attrs.field(
        default=None, converter=optional_float
    )
    system_memory_low: bool | None = None
    system_memory_threshold_bytes: float | None = attrs.field(
        default=None, converter=optional_float
    )
    application_memory_available_bytes: float | None = attrs.field(
        default=None, converter=optional_float
    )
    application_memory_max_bytes: float | None = attrs.field(default=None, converter=optional_float)
    application_memory_total_bytes: float | None = attrs.field(
        default=None, converter=optional_float
    )
    # Free strings in the 2026 schema (the sample sends "unknown"); DeviceOrientation lists
    # the documented values.
    device_orientation: str | None = None
    status_bar_orientation: str | None = None


@sparse_model(kw_only=True, slots=False)
class DeviceInfo:
    """``device_info``: the device, and the device identities mParticle resolves users by.

    The device identities are ``ios_advertising_id``, ``ios_idfv``, ``android_advertising_id``,
    ``android_uuid``, ``push_token``, ``amp_id``, ``roku_advertising_id``, ``roku_publisher_id``,
    ``microsoft_advertising_id``, ``microsoft_publisher_id`` and ``fire_advertising_id``
    (plus the batch's ``mp_deviceid``).
    """

    brand: str | None = None
    product: str | None = None
    device: str | None = None
    android_uuid: str | None = attrs.field(default=None, converter=optional_device_id)
    device_manufacturer: str | None = None
    platform: DevicePlatform | None = attrs.field(default=None, converter=_opt_platform)
    os_version: str | None = None
    device_model: str | None = None
    screen_height: int | None = None
    screen_width: int | None = None
    screen_dpi: int | None = None
    device_country: str | None = None
    locale_language: str | None = None
    locale_country: str | None = None
    network_country: str | None = None
    network_carrier: str | None = None
    network_code: str | None = None
    network_mobile_country_code: str | None = None
    timezone_offset: int | None = None
    build_identifier: str | None = None
    http_header_user_agent: str | None = None
    ios_advertising_id: str | None = attrs.field(default=None, converter=optional_device_uuid)
    att_authorization_status: AttAuthorizationStatus | None = attrs.field(
        default=None, converter=_opt_att
    )
    att_timestamp_unixtime_ms: int | None = attrs.field(
        default=None, converter=optional_timestamp_ms
    )
    push_token: str | None = attrs.field(default=None, converter=optional_device_id)
    cpu_architecture: str | None = None
    is_tablet: bool | None = None
    push_notification_sound_enabled: bool | None = None
    push_notification_vibrate_enabled: bool | None = None
    radio_access_technology: str | None = None
    supports_telephony: bool | None = None
    has_nfc: bool | None = None
    bluetooth_enabled: bool | None = None
    bluetooth_version: str | None = None
    ios_idfv: str | None = attrs.field(default=None, converter=optional_device_uuid)
    android_advertising_id: str | None = attrs.field(default=None, converter=optional_device_uuid)
    build_version_release: str | None = None
    limit_ad_tracking: bool | None = None
    amp_id: str | None = attrs.field(default=None, converter=optional_device_id)
    is_dst: bool | None = None
    roku_advertising_id: str | None = attrs.field(default=None, converter=optional_device_uuid)
    roku_publisher_id: str | None = attrs.field(default=None, converter=optional_device_uuid)
    microsoft_advertising_id: str | None = attrs.field(default=None, converter=optional_device_id)
    microsoft_publisher_id: str | None = attrs.field(default=None, converter=optional_device_id)
    fire_advertising_id: str | None = attrs.field(default=None, converter=optional_device_uuid)


#: The ``device_info`` keys that are device identities (mParticle's Events API reference, ``device_info``).
DEVICE_IDENTITY_FIELDS: tuple[str, ...] = (
    "ios_advertising_id",
    "ios_idfv",
    "android_advertising_id",
    "android_uuid",
    "push_token",
    "amp_id",
    "roku_advertising_id",
    "roku_publisher_id",
    "microsoft_advertising_id",
    "microsoft_publisher_id",
    "fire_advertising_id",
)


@sparse_model(kw_only=True, slots=False)
class ApplicationInfo:
    """``application_info``: the app (or feed) that produced the data."""

    application_name: str | None = None
    application_version: str | None = None
    application_build_number: str | None = None
    install_referrer: str | None = None
    package: str | None = None
    os: ApplicationOS | None = attrs.field(default=None, converter=_opt_app_os)
    apple_search_ads_attributes: dict[str, dict[str, str]] | None = None


@sparse_model(kw_only=True, slots=False)
class UserIdentities:
    """``user_identities``: the 22 user identity keys, each a string."""

    other: str | None = None
    customer_id: str | None = None
    facebook: str | None = None
    twitter: str | None = None
    google: str | None = None
    microsoft: str | None = None
    yahoo: str | None = None
    email: str | None = None
    alias: str | None = None
    facebook_custom_audience_id: str | None = None
    other_id_2: str | None = None
    other_id_3: str | None = None
    other_id_4: str | None = None
    other_id_5: str | None = None
    other_id_6: str | None = None
    other_id_7: str | None = None
    other_id_8: str | None = None
    other_id_9: str | None = None
    other_id_10: str | None = None
    mobile_number: str | None = None
    phone_number_2: str | None = None
    phone_number_3: str | None = None

    @classmethod
    def from_mapping(cls, identities: Mapping[IdentityType | str, str | None]) -> UserIdentities:
        """Build from ``{IdentityType.EMAIL: "a@b.c", "customer_id": "42"}``."""
        kwargs: dict[str, Any] = {}
        for key, value in identities.items():
            kwargs[enum_value(IdentityType, key).value] = value
        return cls(**kwargs)

    def items(self) -> list[tuple[IdentityType, str]]:
        """The identities that are set, in wire order."""
        return [
            (identity, value)
            for identity in IdentityType
            if (value := getattr(self, identity.value)) is not None
        ]

    def is_empty(self) -> bool:
        return not self.items()


@sparse_model(kw_only=True, slots=False)
class UserIdentity:
    """One identity as carried by a ``user_identity_change`` event's ``new`` and ``old``."""

    identity_type: IdentityType = attrs.field(converter=_identity_type)
    identity: str
    timestamp_unixtime_ms: int = attrs.field(converter=timestamp_ms)
    created_this_batch: bool | None = None


@sparse_model(kw_only=True, slots=False)
class DataPlan:
    """``context.data_plan``: which data plan (and version) the batch follows."""

    plan_id: str
    plan_version: int | None = None


@sparse_model(kw_only=True, slots=False)
class Context:
    """The batch ``context`` (the OpenAPI file's ``batch_context``; every other source says ``context``)."""

    data_plan: DataPlan | None = None
    location: Location | None = None


@sparse_model(kw_only=True, slots=False)
class ConsentPurpose:
    """The consent a user gave for one purpose (GDPR) or for data sale (CCPA)."""

    consented: bool
    timestamp_unixtime_ms: int = attrs.field(converter=timestamp_ms)
    document: str | None = None
    location: str | None = None
    hardware_id: str | None = None
    regulation: str | None = None


@sparse_model(kw_only=True, slots=False)
class ConsentState:
    """``consent_state``: GDPR purposes by name and the CCPA ``data_sale_opt_out``.

    For CCPA, ``consented=True`` means the user opted out of data sale.
    """

    gdpr: dict[str, ConsentPurpose] | None = None
    ccpa: dict[str, ConsentPurpose] | None = None

    def __attrs_post_init__(self) -> None:
        if self.ccpa is not None and set(self.ccpa) - {"data_sale_opt_out"}:
            extra = sorted(set(self.ccpa) - {"data_sale_opt_out"})
            raise ModelError(f"ccpa has only the purpose 'data_sale_opt_out', not {extra}")


@sparse_model(kw_only=True, slots=False)
class AttributionInfo:
    """``attribution_info``: undocumented but in every schema; all three fields required."""

    service_provider: str
    publisher: str
    campaign: str


@sparse_model(kw_only=True, slots=False)
class EventSystemNotificationInfo:
    """Read-only on output; kept so outbound documents load."""

    type: SystemNotificationType = attrs.field(converter=_notification_type)
