"""The Events API batch and its 17 event types, as frozen keyword-only attrs classes.

Attribute names are the wire names. Each event serialises as
``{"event_type": <EventType>, "data": {<its fields>}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import attrs

from .._errors import ModelError
from .commerce import ProductAction, ProductImpression, PromotionAction, ShoppingCart
from .common import (
    ApplicationInfo,
    AttributionInfo,
    ConsentState,
    Context,
    DeviceCurrentState,
    DeviceInfo,
    EventSystemNotificationInfo,
    Location,
    UserIdentities,
    UserIdentity,
)
from .enums import (
    ApplicationState,
    ApplicationTransitionType,
    CommerceEventType,
    CustomEventType,
    Environment,
    EventType,
    ProfileEventType,
    PushMessageBehavior,
    PushMessageType,
)
from .sparse import passes_through, sparse_model
from .values import (
    Scalar,
    UserAttributeValue,
    enum_value,
    model_tuple,
    optional_decimal,
    optional_device_uuid,
    optional_id_string,
    optional_ip,
    optional_scalar_map,
    optional_str_tuple,
    optional_timestamp_ms,
    optional_user_attribute_value,
    optional_user_attributes,
    optional_uuid,
)

__all__ = [
    "ApplicationStateTransitionEvent",
    "Batch",
    "BreadcrumbEvent",
    "CommerceEvent",
    "CrashReportEvent",
    "CustomEvent",
    "Event",
    "FirstRunEvent",
    "NetworkPerformanceEvent",
    "OptOutEvent",
    "ProfileEvent",
    "PushMessageEvent",
    "PushRegistrationEvent",
    "ScreenViewEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "UninstallEvent",
    "UserAttributeChangeEvent",
    "UserIdentityChangeEvent",
]


def _custom_event_type(value: CustomEventType | str) -> CustomEventType:
    return enum_value(CustomEventType, value)


passes_through(CustomEventType, _custom_event_type)


def _opt_commerce_event_type(value: CommerceEventType | str | None) -> CommerceEventType | None:
    return None if value is None else enum_value(CommerceEventType, value)


passes_through(CommerceEventType, _opt_commerce_event_type)


def _transition_type(value: ApplicationTransitionType | str) -> ApplicationTransitionType:
    return enum_value(ApplicationTransitionType, value)


passes_through(ApplicationTransitionType, _transition_type)


def _push_message_type(value: PushMessageType | str) -> PushMessageType:
    return enum_value(PushMessageType, value)


passes_through(PushMessageType, _push_message_type)


def _opt_application_state(value: ApplicationState | str | None) -> ApplicationState | None:
    return None if value is None else enum_value(ApplicationState, value)


passes_through(ApplicationState, _opt_application_state)


def _opt_push_behavior(value: PushMessageBehavior | str | None) -> PushMessageBehavior | None:
    return None if value is None else enum_value(PushMessageBehavior, value)


passes_through(PushMessageBehavior, _opt_push_behavior)


def _profile_event_type(value: ProfileEventType | str) -> ProfileEventType:
    return enum_value(ProfileEventType, value)


passes_through(ProfileEventType, _profile_event_type)


def _environment(value: Environment | str | None) -> Environment | None:
    return None if value is None else enum_value(Environment, value)


passes_through(Environment, _environment)


@sparse_model(kw_only=True, slots=False)
class _EventData:
    """The data fields every event type has (the Events API's common event data)."""

    event_type: ClassVar[EventType]

    timestamp_unixtime_ms: int | None = attrs.field(default=None, converter=optional_timestamp_ms)
    source_message_id: str | None = attrs.field(default=None, converter=optional_id_string)
    session_uuid: str | None = attrs.field(default=None, converter=optional_uuid)
    session_start_unixtime_ms: int | None = attrs.field(
        default=None, converter=optional_timestamp_ms
    )
    event_start_unixtime_ms: int | None = attrs.field(default=None, converter=optional_timestamp_ms)
    custom_attributes: dict[str, Scalar] | None = attrs.field(
        default=None, converter=optional_scalar_map
    )
    location: Location | None = None
    device_current_state: DeviceCurrentState | None = None
    is_goal_defined: bool | None = None
    lifetime_value_change: Decimal | None = attrs.field(default=None, converter=optional_decimal)
    lifetime_value_attribute_name: str | None = None
    data_connection_type: str | None = None
    event_num: int | None = None
    view_controller: str | None = None
    is_main_thread: bool | None = None
    canonical_name: str | None = None
    # Read-only on mParticle's side; modelled so outbound documents load.
    event_id: int | None = None
    session_id: int | None = None
    event_system_notification_info: EventSystemNotificationInfo | None = None


@sparse_model(kw_only=True, slots=False)
class CustomEvent(_EventData):
    """A named custom event (``custom_event``)."""

    event_type: ClassVar[EventType] = EventType.CUSTOM_EVENT

    event_name: str
    custom_event_type: CustomEventType = attrs.field(converter=_custom_event_type)
    custom_flags: dict[str, Scalar] | None = attrs.field(
        default=None, converter=optional_scalar_map
    )


def _opt_impressions(
    value: Iterable[ProductImpression] | None,
) -> tuple[ProductImpression, ...] | None:
    return None if value is None else model_tuple(ProductImpression, value)


@sparse_model(kw_only=True, slots=False)
class CommerceEvent(_EventData):
    """A commerce event: exactly one of product_action, promotion_action, product_impressions."""

    event_type: ClassVar[EventType] = EventType.COMMERCE_EVENT

    product_action: ProductAction | None = None
    promotion_action: PromotionAction | None = None
    product_impressions: tuple[ProductImpression, ...] | None = attrs.field(
        default=None, converter=_opt_impressions
    )
    shopping_cart: ShoppingCart | None = None
    currency_code: str | None = None
    screen_name: str | None = None
    is_non_interactive: bool | None = None
    event_name: str | None = None
    custom_event_type: CommerceEventType | None = attrs.field(
        default=None, converter=_opt_commerce_event_type
    )
    custom_flags: dict[str, Scalar] | None = attrs.field(
        default=None, converter=optional_scalar_map
    )

    def __attrs_post_init__(self) -> None:
        # Counted without building a list: this runs for every commerce event of a sync.
        if (
            (self.product_action is not None)
            + (self.promotion_action is not None)
            + (self.product_impressions is not None)
        ) == 1:
            return
        present = [
            name
            for name in ("product_action", "promotion_action", "product_impressions")
            if getattr(self, name) is not None
        ]
        if len(present) != 1:
            found = ", ".join(present) if present else "none"
            raise ModelError(
                "a commerce event holds exactly one of product_action, promotion_action or "
                f"product_impressions (found: {found})"
            )


@sparse_model(kw_only=True, slots=False)
class ScreenViewEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.SCREEN_VIEW

    screen_name: str
    activity_type: str | None = None
    custom_flags: dict[str, Scalar] | None = attrs.field(
        default=None, converter=optional_scalar_map
    )


@sparse_model(kw_only=True, slots=False)
class SessionStartEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.SESSION_START


@sparse_model(kw_only=True, slots=False)
class SessionEndEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.SESSION_END

    session_duration_ms: int


@sparse_model(kw_only=True, slots=False)
class UserAttributeChangeEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.USER_ATTRIBUTE_CHANGE
    _sparse_always: ClassVar[frozenset[str]] = frozenset({"new", "old"})

    user_attribute_name: str
    new: UserAttributeValue = attrs.field(default=None, converter=optional_user_attribute_value)
    old: UserAttributeValue = attrs.field(default=None, converter=optional_user_attribute_value)
    deleted: bool | None = None
    is_new_attribute: bool | None = None


@sparse_model(kw_only=True, slots=False)
class UserIdentityChangeEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.USER_IDENTITY_CHANGE
    _sparse_always: ClassVar[frozenset[str]] = frozenset({"new", "old"})

    new: UserIdentity
    #: None for an identity added for the first time; written as ``null`` on the wire.
    old: UserIdentity | None = None


@sparse_model(kw_only=True, slots=False)
class OptOutEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.OPT_OUT

    is_opted_out: bool


@sparse_model(kw_only=True, slots=False)
class PushRegistrationEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.PUSH_REGISTRATION

    register: bool
    registration_token: str


@sparse_model(kw_only=True, slots=False)
class PushMessageEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.PUSH_MESSAGE

    push_message_token: str
    push_message_type: PushMessageType = attrs.field(converter=_push_message_type)
    push_notification_payload: str
    message: str | None = None
    network: str | None = None
    application_state: ApplicationState | None = attrs.field(
        default=None, converter=_opt_application_state
    )
    action_identifier: str | None = None
    push_message_behavior: PushMessageBehavior | None = attrs.field(
        default=None, converter=_opt_push_behavior
    )

    def __attrs_post_init__(self) -> None:
        if self.action_identifier is not None and len(self.action_identifier) > 100:
            raise ModelError("action_identifier is limited to 100 characters")


@sparse_model(kw_only=True, slots=False)
class ApplicationStateTransitionEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.APPLICATION_STATE_TRANSITION

    application_transition_type: ApplicationTransitionType = attrs.field(converter=_transition_type)
    is_first_run: bool | None = None
    is_upgrade: bool | None = None
    successfully_closed: bool | None = None
    push_notification_payload: str | None = None
    launch_referral: str | None = None


@sparse_model(kw_only=True, slots=False)
class BreadcrumbEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.BREADCRUMB

    label: str
    session_number: int | None = None


def _opt_breadcrumbs(value: Iterable[BreadcrumbEvent] | None) -> tuple[BreadcrumbEvent, ...] | None:
    return None if value is None else model_tuple(BreadcrumbEvent, value)


@sparse_model(kw_only=True, slots=False)
class CrashReportEvent(_EventData):
    """A crash. ``breadcrumbs`` are breadcrumb events, as the JSON Schema has them."""

    event_type: ClassVar[EventType] = EventType.CRASH_REPORT

    severity: str
    message: str
    class_name: str | None = None
    stack_trace: str | None = None
    exception_handled: bool | None = None
    topmost_context: str | None = None
    pl_crash_report_file_base64: str | None = None
    ios_image_base_address: int | None = None
    ios_image_size: int | None = None
    session_number: int | None = None
    breadcrumbs: tuple[BreadcrumbEvent, ...] | None = attrs.field(
        default=None, converter=_opt_breadcrumbs
    )


@sparse_model(kw_only=True, slots=False)
class NetworkPerformanceEvent(_EventData):
    """``response_code`` is an integer, as in the JSON Schema and OpenAPI file."""

    event_type: ClassVar[EventType] = EventType.NETWORK_PERFORMANCE

    url: str
    response_code: int
    http_verb: str | None = None
    time_elapsed: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    data: str | None = None


@sparse_model(kw_only=True, slots=False)
class FirstRunEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.FIRST_RUN


@sparse_model(kw_only=True, slots=False)
class UninstallEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.UNINSTALL


@sparse_model(kw_only=True, slots=False)
class ProfileEvent(_EventData):
    event_type: ClassVar[EventType] = EventType.PROFILE

    previous_mpid: int
    current_mpid: int
    profile_event_type: ProfileEventType = attrs.field(converter=_profile_event_type)


#: Any inbound event.
Event = (
    CustomEvent
    | CommerceEvent
    | ScreenViewEvent
    | SessionStartEvent
    | SessionEndEvent
    | UserAttributeChangeEvent
    | UserIdentityChangeEvent
    | OptOutEvent
    | PushRegistrationEvent
    | PushMessageEvent
    | ApplicationStateTransitionEvent
    | BreadcrumbEvent
    | CrashReportEvent
    | NetworkPerformanceEvent
    | FirstRunEvent
    | UninstallEvent
    | ProfileEvent
)

#: Event classes by wire ``event_type``.
EVENT_CLASSES: dict[EventType, type[Event]] = {
    cls.event_type: cls
    for cls in (
        CustomEvent,
        CommerceEvent,
        ScreenViewEvent,
        SessionStartEvent,
        SessionEndEvent,
        UserAttributeChangeEvent,
        UserIdentityChangeEvent,
        OptOutEvent,
        PushRegistrationEvent,
        PushMessageEvent,
        ApplicationStateTransitionEvent,
        BreadcrumbEvent,
        CrashReportEvent,
        NetworkPerformanceEvent,
        FirstRunEvent,
        UninstallEvent,
        ProfileEvent,
    )
}


def _opt_events(value: Iterable[Event] | None) -> tuple[Event, ...] | None:
    if value is None:
        return None
    if value.__class__ is tuple:
        events: tuple[Any, ...] = value  # what mapping hands over: no ABC checks, no copy
    elif isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ModelError(f"expected a list of events, got {type(value).__name__}")
    else:
        events = tuple(value)
    # One C-level pass in the common case; the loop only finds the culprit.
    if _EVENT_TYPES.issuperset(map(type, events)):
        return events
    for index, event in enumerate(events):
        if type(event) not in _EVENT_TYPES:
            raise ModelError(
                f"events[{index}] is a {type(event).__name__}, not an event model "
                "(build events with CustomEvent, CommerceEvent, ...)"
            )
    raise AssertionError("unreachable: the pass above found a stranger")  # pragma: no cover


_EVENT_TYPES = frozenset(EVENT_CLASSES.values())


def _opt_identities(
    value: UserIdentities | Mapping[str, str | None] | None,
) -> UserIdentities | None:
    if value is None or isinstance(value, UserIdentities):
        return value
    if not isinstance(value, Mapping):
        raise ModelError(f"expected a UserIdentities or a mapping, got {type(value).__name__}")
    return UserIdentities.from_mapping(value)


passes_through(UserIdentities, _opt_identities)


@sparse_model(kw_only=True, slots=False)
class Batch:
    """One user's batch: the body of ``/v2/events``, one element of ``/v2/bulkevents``.

    ``environment`` defaults to development; production must be asked for. None means
    unset: the key is left out and mParticle reads the batch as production (``loads`` gives
    None for a document without the key, so loading and dumping keeps its meaning).
    Output-only fields (``schema_version``, the batch ``timestamp_unixtime_ms``,
    ``source_info``) are not modelled: mParticle sets them.
    """

    _sparse_always: ClassVar[frozenset[str]] = frozenset({"environment"})
    #: Always-written fields that ``dumps`` leaves out when None: a batch loaded without
    #: ``environment`` keeps none, which mParticle reads as production.
    _omitted_when_none: ClassVar[frozenset[str]] = frozenset({"environment"})

    events: tuple[Event, ...] | None = attrs.field(default=None, converter=_opt_events)
    source_request_id: str | None = attrs.field(default=None, converter=optional_id_string)
    environment: Environment | None = attrs.field(
        default=Environment.DEVELOPMENT, converter=_environment
    )
    ip: str | None = attrs.field(default=None, converter=optional_ip)
    device_info: DeviceInfo | None = None
    application_info: ApplicationInfo | None = None
    user_attributes: dict[str, UserAttributeValue] | None = attrs.field(
        default=None, converter=optional_user_attributes
    )
    deleted_user_attributes: tuple[str, ...] | None = attrs.field(
        default=None, converter=optional_str_tuple
    )
    user_identities: UserIdentities | None = attrs.field(default=None, converter=_opt_identities)
    partner_identities: dict[str, str] | None = None
    integration_attributes: dict[str, dict[str, str]] | None = None
    context: Context | None = None
    mpid: int | None = None
    mp_deviceid: str | None = attrs.field(default=None, converter=optional_device_uuid)
    consent_state: ConsentState | None = None
    attribution_info: AttributionInfo | None = None
