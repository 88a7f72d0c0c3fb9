"""Mapping stage: the event part of a compiled mapping, and mapping a row's event with it.

Compiling picks the event class of the mapping's kind (the general :class:`~.spec.EventMapping`
picks it per row from the event type) and plans each mapped event field: its getter and its
coercer, or a builder straight from a Struct's sources. A new event type gets its class here
(``_EVENT_CLASS_OF_KIND``, after its model in ``_wire/models.py`` and its mapping in
:mod:`.spec`).
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._errors import ModelError, type_name
from .._wire.enums import CustomEventType, EventType
from .._wire.models import EVENT_CLASSES, CommerceEvent, CustomEvent, Event, ScreenViewEvent
from .attributes import _AttributeBuilder
from .coercers import (
    Coercer,
    _as_built,
    _check_struct,
    _Coercers,
    _non_optional,
    _parsed,
    _refuse_table,
)
from .getters import Getter, _getter
from .limits import MAX_EVENT_NAME
from .rejects import _join, _Reject, _under
from .sources import Constant, Source, Struct, SyncKind

if TYPE_CHECKING:
    from .spec import CommerceEventMapping, CustomEventMapping, EventMapping, RowMapping

__all__ = ["_EventPart"]

_COMMERCE_FIELDS = (
    "product_action",
    "promotion_action",
    "product_impressions",
    "shopping_cart",
    "currency_code",
    "screen_name",
    "is_non_interactive",
    "event_name",
)
#: The event class of each single-type event mapping (the general one chooses per row).
_EVENT_CLASS_OF_KIND: dict[SyncKind, type[Event]] = {
    SyncKind.CUSTOM_EVENT: CustomEvent,
    SyncKind.COMMERCE_EVENT: CommerceEvent,
    SyncKind.SCREEN_VIEW: ScreenViewEvent,
}

_EVENT_FIELDS = (
    "timestamp_unixtime_ms",
    "source_message_id",
    "session_uuid",
    "location",
    "device_current_state",
)


class _EventPart:
    """The event fields of :class:`~.compile.CompiledMapping`: planned by ``_plan_event``,
    used by ``_event`` on every row."""

    _to_text: Coercer
    _to_event_type: Coercer
    _coercers: _Coercers
    event_attributes: list[tuple[str, _AttributeBuilder]]
    event_cls: type[Event] | None
    event_fields: list[tuple[str, Getter, Coercer]]
    #: Required fields of the event class that the mapping gives (null: the row is rejected).
    required_event_fields: tuple[str, ...]
    #: The general event mapping: the event type and the type's own fields, per row.
    event_type: Getter | None
    event_data: Getter | None
    #: Event fields built straight from a Struct's sources: the model class, and its
    #: coercion table and required fields (what that builder uses; the Arrow engine too).
    struct_plans: dict[str, tuple[type, dict[str, tuple[Coercer, type | None]], list[str]]]
    event_name: Getter | None
    custom_event_type: Getter | None
    #: The custom event type, when a constant gives a valid one: coerced once, not per row.
    fixed_event_type: CustomEventType | None

    def _plan_event(self, mapping: RowMapping, coercers: _Coercers) -> None:
        self.event_cls = None
        self.event_fields = []
        self.required_event_fields = ()
        self.event_type = None
        self.event_data = None
        self._coercers = coercers
        self.struct_plans = {}
        self.event_name = None
        self.custom_event_type = None
        self.fixed_event_type = None
        if mapping.kind is SyncKind.USER_ATTRIBUTES:
            return
        cls: type[Event] = _EVENT_CLASS_OF_KIND.get(mapping.kind, CustomEvent)
        self.event_cls = cls
        fields = {field.name: field for field in attrs.fields(attrs.resolve_types(cls))}
        for name in self._plan_event_kind(mapping):
            source = getattr(mapping, name)
            if source is None:
                continue
            _check_struct(source, fields[name], name)
            tp = _non_optional(fields[name].type)
            if typing.get_origin(tp) is None and isinstance(tp, type) and not attrs.has(tp):
                _refuse_table(source, name)  # a scalar field: text, a number, an enum
            built = (
                coercers.struct_from_sources(tp, source, name)
                if isinstance(source, Struct) and isinstance(tp, type) and attrs.has(tp)
                else None
            )
            if built is not None:
                self.event_fields.append((name, built, _as_built))
                self.struct_plans[name] = (tp, *coercers.table(tp))
            else:
                self.event_fields.append(
                    (name, _getter(source, name), coercers.for_field(fields[name]))
                )

    def _plan_event_kind(self, mapping: RowMapping) -> list[str]:
        """What the mapping's kind adds to the common event fields: the names of the fields
        read as the others are (returned), and the fields planned apart."""
        names = list(_EVENT_FIELDS)
        if mapping.kind is SyncKind.SCREEN_VIEW:
            names += ["screen_name", "activity_type"]
            self.required_event_fields = ("screen_name",)
        elif mapping.kind is SyncKind.EVENT:
            general = cast("EventMapping", mapping)
            self.event_type = _getter(general.event_type, "event_type")
            if general.data is not None:
                self.event_data = _getter(general.data, "data")
        elif mapping.kind is SyncKind.COMMERCE_EVENT:
            commerce = cast("CommerceEventMapping", mapping)
            names += [n for n in _COMMERCE_FIELDS if n != "event_name"]
            if commerce.event_name is not None:
                self.event_name = _getter(commerce.event_name, "event_name")
        elif mapping.kind is SyncKind.CUSTOM_EVENT:
            custom = cast("CustomEventMapping", mapping)
            _refuse_table(custom.event_name, "event_name")
            _refuse_table(custom.custom_event_type, "custom_event_type")
            self.event_name = _getter(custom.event_name, "event_name")
            self.custom_event_type = _getter(custom.custom_event_type, "custom_event_type")
            self.fixed_event_type = self._fixed_event_type(custom.custom_event_type)
        return names

    def _fixed_event_type(self, source: Source) -> CustomEventType | None:
        if not isinstance(source, Constant) or source.value is None:
            return None
        try:
            fixed: CustomEventType = self._to_event_type(source.value, "custom_event_type")
        except _Reject:
            return None  # rejected on every row, with the reason, as any other bad value
        return fixed

    def _any_event(self, row: Mapping[str, Any], kwargs: dict[str, Any]) -> tuple[Event, int]:
        """The general mapping's event: its class from the row's event type, its own fields
        from ``data``, with the common fields already in ``kwargs``."""
        assert self.event_type is not None
        raw = self.event_type(row)
        if raw is None:
            raise _Reject("event_type", "event type is null")
        cls = _event_class(raw if raw.__class__ is str else self._to_text(raw, "event_type"))
        table, required = self._coercers.table(cls)
        if self.event_data is not None:
            data = self.event_data(row)
            if data is not None:
                data = _parsed(data, "data")
                if not isinstance(data, Mapping):
                    raise _Reject(
                        "data",
                        f"expected an object of {cls.__name__} fields, got {type_name(data)}",
                    )
                for key, item in data.items():
                    entry = table.get(key) if isinstance(key, str) else None
                    if entry is None or key in kwargs:
                        raise _Reject(
                            _join("data", str(key)),
                            f"{cls.__name__} has no field {key!r} to map here",
                        )
                    if item is not None:
                        try:
                            kwargs[key] = entry[0](item, key)
                        except _Reject as exc:
                            raise _Reject(_under("data", exc.field), exc.reason) from None
        for name, builder in self.event_attributes:
            built = builder.build(row)
            if built:
                if name not in table:
                    raise _Reject(name, f"a {cls.event_type.value} event has no {name}")
                kwargs[name] = built
        truncated = 0
        event_name = kwargs.get("event_name")
        if isinstance(event_name, str):
            kwargs["event_name"], truncated = _event_name(event_name, "data.event_name")
        for key in required:
            if key not in kwargs:
                raise _Reject(_join("data", key), f"a {cls.event_type.value} event needs {key}")
        try:
            return cls(**kwargs), truncated
        except ModelError as exc:
            raise _Reject(None, str(exc)) from None

    def _event(self, row: Mapping[str, Any]) -> tuple[Event, int]:
        kwargs: dict[str, Any] = {}
        truncated = 0
        for name, get, coerce in self.event_fields:
            value = get(row)
            if value is None:
                if name == "timestamp_unixtime_ms":
                    # Sending it without one would silently stamp it with the arrival time.
                    raise _Reject(name, "timestamp is null")
                if name in self.required_event_fields:
                    raise _Reject(name, f"{name} is null")
                continue
            kwargs[name] = coerce(value, name)
        if self.event_type is not None:
            return self._any_event(row, kwargs)
        if self.event_name is not None:
            value = self.event_name(row)
            if value is None and self.event_cls is CustomEvent:
                raise _Reject("event_name", "event name is null")
            if value is not None:
                text = value if value.__class__ is str else self._to_text(value, "event_name")
                kwargs["event_name"], truncated = _event_name(text, "event_name")
        if self.fixed_event_type is not None:
            kwargs["custom_event_type"] = self.fixed_event_type
        elif self.custom_event_type is not None:
            value = self.custom_event_type(row)
            if value is None:
                raise _Reject("custom_event_type", "custom event type is null")
            kwargs["custom_event_type"] = self._to_event_type(value, "custom_event_type")
        for name, builder in self.event_attributes:
            built = builder.build(row)
            if built:
                kwargs[name] = built
        cls = self.event_cls
        assert cls is not None
        try:
            return cls(**kwargs), truncated
        except ModelError as exc:
            raise _Reject(None, str(exc)) from None


def _event_name(text: str, field: str) -> tuple[str, int]:
    """The event-name policy: trimmed, an empty one rejected, a long one cut to
    ``MAX_EVENT_NAME`` characters (with 1: one value truncated)."""
    name = text.strip()
    if not name:
        raise _Reject(field, "event name is empty")
    if len(name) > MAX_EVENT_NAME:
        return name[:MAX_EVENT_NAME], 1
    return name, 0


def _event_class(value: Any) -> type[Event]:
    try:
        return EVENT_CLASSES[EventType(value)]
    except (ValueError, KeyError):
        allowed = ", ".join(repr(t.value) for t in EVENT_CLASSES)
        raise _Reject(
            "event_type", f"{value!r} is not an event type; expected one of {allowed}"
        ) from None


def _custom_event_type(value: str) -> CustomEventType:
    try:
        return CustomEventType(value)
    except ValueError:
        allowed = ", ".join(repr(t.value) for t in CustomEventType)
        raise ModelError(
            f"{value!r} is not a custom event type; expected one of {allowed}"
        ) from None
