"""Strategies for events (models stage): one per event type, and :func:`events` for any."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..._dataplan import DataPlanVersion, LoadedDataPlan
from ..._dataplan._strategies import plan_events
from ..._wire.enums import (
    ApplicationState,
    ApplicationTransitionType,
    CustomEventType,
    Environment,
    ProfileEventType,
    PushMessageBehavior,
    PushMessageType,
)
from ..._wire.models import (
    ApplicationStateTransitionEvent,
    BreadcrumbEvent,
    CrashReportEvent,
    CustomEvent,
    Event,
    FirstRunEvent,
    NetworkPerformanceEvent,
    OptOutEvent,
    ProfileEvent,
    PushMessageEvent,
    PushRegistrationEvent,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    UninstallEvent,
    UserAttributeChangeEvent,
    UserIdentityChangeEvent,
)
from ._commerce import commerce_events
from ._objects import _common, user_identity_objects
from ._values import (
    _MAX_ITEMS,
    _int32,
    _int64,
    _json_payloads,
    _maybe,
    _names,
    _non_negative_int64,
    _only,
    _text,
    _user_attribute_values,
    _values,
    custom_attribute_maps,
)

# Public in the package: every custom event type but ``attribution``, missing from the schemas.
SCHEMA_CUSTOM_EVENT_TYPES: tuple[CustomEventType, ...] = tuple(
    member for member in CustomEventType if member is not CustomEventType.ATTRIBUTION
)


def custom_events(
    *,
    custom_event_types: Sequence[CustomEventType] = SCHEMA_CUSTOM_EVENT_TYPES,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
    fields: Collection[str] | None = None,
    max_attributes: int = _MAX_ITEMS,
) -> st.SearchStrategy[CustomEvent]:
    """Custom events.

    ``custom_event_types`` defaults to the values the JSON Schemas accept; pass
    ``list(CustomEventType)`` to include ``attribution`` as well.

    Every event strategy takes the same timestamp options: ``with_timestamp`` True (always
    set), False (never) or None (either), and ``min_timestamp`` / ``max_timestamp`` bounds
    as epoch milliseconds or aware datetimes.

    ``fields`` limits the optional fields generated (``["custom_attributes"]``: only those;
    the others stay unset), which makes examples cheaper; ``max_attributes`` bounds the
    attribute maps.
    """
    optional = {
        "custom_flags": _maybe(custom_attribute_maps(max_size=max_attributes)),
        **_common(with_timestamp, min_timestamp, max_timestamp),
        "custom_attributes": _maybe(custom_attribute_maps(max_size=max_attributes)),
    }
    if fields is not None and with_timestamp and "timestamp_unixtime_ms" not in fields:
        fields = [*fields, "timestamp_unixtime_ms"]
    return st.builds(
        CustomEvent,
        event_name=_names,
        custom_event_type=_values(list(custom_event_types)),
        **_only(optional, fields, "CustomEvent"),
    )


def screen_view_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[ScreenViewEvent]:
    """Screen views (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        ScreenViewEvent,
        screen_name=_text,
        activity_type=_maybe(st.sampled_from(["activity_started", "activity_stopped"])),
        custom_flags=_maybe(custom_attribute_maps()),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def session_start_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[SessionStartEvent]:
    """Session starts (see :func:`custom_events` for the timestamp options)."""
    return st.builds(SessionStartEvent, **_common(with_timestamp, min_timestamp, max_timestamp))


def session_end_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[SessionEndEvent]:
    """Session ends with their duration (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        SessionEndEvent,
        session_duration_ms=_non_negative_int64,
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def user_attribute_change_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[UserAttributeChangeEvent]:
    """User attribute changes (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        UserAttributeChangeEvent,
        user_attribute_name=_names,
        new=_user_attribute_values(),
        old=_user_attribute_values(),
        deleted=_maybe(st.booleans()),
        is_new_attribute=_maybe(st.booleans()),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def user_identity_change_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[UserIdentityChangeEvent]:
    """User identity changes (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        UserIdentityChangeEvent,
        new=user_identity_objects(),
        old=_maybe(user_identity_objects()),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def opt_out_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[OptOutEvent]:
    """Opt-outs (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        OptOutEvent,
        is_opted_out=st.booleans(),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def push_registration_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[PushRegistrationEvent]:
    """Push (un)registrations (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        PushRegistrationEvent,
        register=st.booleans(),
        registration_token=_names,
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def push_message_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[PushMessageEvent]:
    """Push messages with a JSON payload (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        PushMessageEvent,
        push_message_token=_names,
        push_message_type=_values(list(PushMessageType)),
        push_notification_payload=_json_payloads,
        message=_maybe(_text),
        network=_maybe(st.sampled_from(["apn", "gcm"])),
        application_state=_maybe(_values(list(ApplicationState))),
        action_identifier=_maybe(_text),
        push_message_behavior=_maybe(_values(list(PushMessageBehavior))),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def application_state_transition_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[ApplicationStateTransitionEvent]:
    """Application state transitions (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        ApplicationStateTransitionEvent,
        application_transition_type=_values(list(ApplicationTransitionType)),
        is_first_run=_maybe(st.booleans()),
        is_upgrade=_maybe(st.booleans()),
        successfully_closed=_maybe(st.booleans()),
        push_notification_payload=_maybe(_json_payloads),
        launch_referral=_maybe(_text),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def breadcrumb_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[BreadcrumbEvent]:
    """Breadcrumbs (see :func:`custom_events` for the timestamp options)."""
    return st.builds(
        BreadcrumbEvent,
        label=_text,
        session_number=_maybe(_int32),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def crash_report_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[CrashReportEvent]:
    """Crash reports, sometimes with breadcrumbs (see :func:`custom_events` for the
    timestamp options; they apply to the breadcrumbs too)."""
    return st.builds(
        CrashReportEvent,
        severity=_text,
        message=_text,
        class_name=_maybe(_text),
        stack_trace=_maybe(_text),
        exception_handled=_maybe(st.booleans()),
        topmost_context=_maybe(_text),
        pl_crash_report_file_base64=_maybe(st.binary(max_size=12).map(_base64)),
        ios_image_base_address=_maybe(_non_negative_int64),
        ios_image_size=_maybe(_non_negative_int64),
        session_number=_maybe(_int32),
        breadcrumbs=_maybe(
            st.lists(
                breadcrumb_events(
                    with_timestamp=with_timestamp,
                    min_timestamp=min_timestamp,
                    max_timestamp=max_timestamp,
                ),
                max_size=2,
            )
        ),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def _base64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")


def network_performance_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[NetworkPerformanceEvent]:
    """Network requests and their outcome (see :func:`custom_events` for the timestamp
    options)."""
    return st.builds(
        NetworkPerformanceEvent,
        url=st.sampled_from(["https://example.com/", "https://example.org/api/items?page=2"]),
        response_code=st.integers(100, 599),
        http_verb=_maybe(st.sampled_from(["GET", "POST", "PUT", "DELETE"])),
        time_elapsed=_maybe(_int32),
        bytes_in=_maybe(_int32),
        bytes_out=_maybe(_int32),
        data=_maybe(st.binary(max_size=12).map(_base64)),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def first_run_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[FirstRunEvent]:
    """First runs (see :func:`custom_events` for the timestamp options)."""
    return st.builds(FirstRunEvent, **_common(with_timestamp, min_timestamp, max_timestamp))


def uninstall_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[UninstallEvent]:
    """Uninstalls (see :func:`custom_events` for the timestamp options)."""
    return st.builds(UninstallEvent, **_common(with_timestamp, min_timestamp, max_timestamp))


def profile_events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
) -> st.SearchStrategy[ProfileEvent]:
    """Profile changes (signup, login, ...; see :func:`custom_events` for the timestamp
    options)."""
    return st.builds(
        ProfileEvent,
        previous_mpid=_int64,
        current_mpid=_int64,
        profile_event_type=_values(list(ProfileEventType)),
        **_common(with_timestamp, min_timestamp, max_timestamp),
    )


def events(
    *,
    with_timestamp: bool | None = None,
    min_timestamp: int | datetime | None = None,
    max_timestamp: int | datetime | None = None,
    data_plan: LoadedDataPlan | DataPlanVersion | None = None,
    environment: Environment = Environment.DEVELOPMENT,
) -> st.SearchStrategy[Event]:
    """Any of the 17 event types (see :func:`custom_events` for the timestamp options).

    With ``data_plan``, only events the plan allows (its version for ``environment``): each
    planned event, its attributes drawn from the data point's schema. Timestamp options do
    not apply then.
    """
    if data_plan is not None:
        if any(option is not None for option in (with_timestamp, min_timestamp, max_timestamp)):
            raise InvalidArgument("timestamp options do not apply to events drawn from a plan")
        return plan_events(data_plan, environment)
    factories: tuple[Callable[..., st.SearchStrategy[Any]], ...] = (
        custom_events,
        commerce_events,
        screen_view_events,
        session_start_events,
        session_end_events,
        user_attribute_change_events,
        user_identity_change_events,
        opt_out_events,
        push_registration_events,
        push_message_events,
        application_state_transition_events,
        breadcrumb_events,
        crash_report_events,
        network_performance_events,
        first_run_events,
        uninstall_events,
        profile_events,
    )
    return st.one_of(
        [
            factory(
                with_timestamp=with_timestamp,
                min_timestamp=min_timestamp,
                max_timestamp=max_timestamp,
            )
            for factory in factories
        ]
    )
