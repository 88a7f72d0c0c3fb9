"""Data-plan stage: matching a batch's events to data points and listing the violations.

An event is matched by its type and criteria, as mParticle does; a batch's user attributes
and identities by the ``user_attributes`` and ``user_identities`` points. Each point's JSON
Schema is rooted at the event (``{"event_type": ..., "data": {...}}``) or at the attribute
map. Only events that fail the fast check are explained, so a clean sync pays little.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from .._wire.codec import to_dict

# The wire stage's modules, not the package root: the root imports this stage.
from .._wire.models import (
    ApplicationStateTransitionEvent,
    Batch,
    BreadcrumbEvent,
    CommerceEvent,
    CrashReportEvent,
    CustomEvent,
    FirstRunEvent,
    NetworkPerformanceEvent,
    OptOutEvent,
    ScreenViewEvent,
    SessionEndEvent,
    SessionStartEvent,
    UninstallEvent,
)
from ._schema import CompiledSchema
from ._types import (
    EVENT_MATCH_TYPES,
    DataPlanMatch,
    ValidationActions,
    Violation,
    ViolationAction,
    ViolationType,
)

__all__ = ["PlanValidator", "event_key", "json_pointer"]

_INVALID_VALUE_KEYWORDS = frozenset(
    {
        "type",
        "const",
        "enum",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "format",
    }
)

_SIMPLE_KEYS: dict[type, tuple[str, ...]] = {
    SessionStartEvent: ("session_start",),
    SessionEndEvent: ("session_end",),
    FirstRunEvent: ("first_run",),
    OptOutEvent: ("opt_out",),
    CrashReportEvent: ("crash_report",),
    BreadcrumbEvent: ("breadcrumb",),
    NetworkPerformanceEvent: ("network_performance",),
    UninstallEvent: ("uninstall",),
}


def event_key(event: object) -> tuple[str, ...] | None:
    """The match key mParticle looks an event up by; None for types no data point plans."""
    cls = event.__class__
    if cls is CustomEvent:
        assert isinstance(event, CustomEvent)
        return ("custom_event", event.event_name, event.custom_event_type.value)
    if cls is ScreenViewEvent:
        assert isinstance(event, ScreenViewEvent)
        return ("screen_view", event.screen_name)
    if cls is CommerceEvent:
        assert isinstance(event, CommerceEvent)
        if event.product_action is not None:
            return ("product_action", event.product_action.action.value)
        if event.promotion_action is not None:
            return ("promotion_action", event.promotion_action.action.value)
        return ("product_impression",)
    if cls is ApplicationStateTransitionEvent:
        assert isinstance(event, ApplicationStateTransitionEvent)
        return ("application_state_transition", event.application_transition_type.value)
    return _SIMPLE_KEYS.get(cls)


def _match_for(key: tuple[str, ...]) -> DataPlanMatch:
    names = EVENT_MATCH_TYPES[key[0]]
    return DataPlanMatch(type=key[0], criteria=dict(zip(names, key[1:], strict=True)))


def json_pointer(parts: Iterable[object]) -> str:
    """``#/a/b`` from path parts, escaped as RFC 6901 says (``~`` and ``/``)."""
    escaped = [str(part).replace("~", "~0").replace("/", "~1") for part in parts]
    return "#/" + "/".join(escaped) if escaped else "#"


_MAX_SHOWN = 100


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


_NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*\Z")


def _types(schema: Mapping[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset((declared,))
    return frozenset(declared) if isinstance(declared, list) else frozenset()


def _conform(value: Any, schema: Any) -> Any:
    """The value as mParticle sees it: nulls dropped, "42" taken as a number, 42 as "42".

    mParticle's docs: data planning does not tell ``42`` or ``true`` from ``"42"`` or
    ``"true"``, as long as the value converts.
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        fallback = additional if isinstance(additional, Mapping) else None
        return {
            key: _conform(item, properties.get(key, fallback))
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list):
        items = schema.get("items")
        return [_conform(item, items) for item in value] if isinstance(items, Mapping) else value
    types = _types(schema)
    if not types:
        return value
    if isinstance(value, str) and "string" not in types:
        if types & {"number", "integer"} and _NUMBER.match(value):
            number = float(value)
            if math.isfinite(number):
                return int(number) if number.is_integer() and "integer" in types else number
        if "boolean" in types and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        return value
    if "string" in types and not types & {"number", "integer", "boolean"}:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
    return value


def _original(instance: Any, path: Sequence[object], fallback: Any) -> Any:
    """The value at ``path`` as sent (before :func:`_conform`), for the report."""
    value = instance
    for part in path:
        if isinstance(value, dict):
            if part not in value:
                return fallback
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return fallback
    return value


def _expected(keyword: str, value: Any) -> str:
    if keyword == "enum":
        return "one of " + _show(value)
    if keyword == "const":
        return _show(value)
    return f"{keyword} {_show(value)}"


class _Point:
    __slots__ = ("match", "schema")

    def __init__(self, match: DataPlanMatch, schema: CompiledSchema) -> None:
        self.match = match
        self.schema = schema


def _explain(
    point: _Point,
    instance: Any,
    *,
    event_index: int | None,
    prefix: Sequence[str],
    unplanned_action: ViolationAction,
    names: Mapping[str, str] | None = None,
) -> list[Violation]:
    """Every violation in an instance the fast check refused."""
    definition = point.schema.explainer.schema
    conformed = _conform(instance, definition)
    violations: list[Violation] = []
    seen: set[tuple[object, ...]] = set()

    def add(
        parts: Sequence[object],
        error_type: ViolationType,
        keyword: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        action: ViolationAction = ViolationAction.ALLOW,
    ) -> None:
        wire_parts = list(parts)
        if names is not None and len(wire_parts) == 1:
            wire_parts[0] = names.get(str(wire_parts[0]), wire_parts[0])
        pointer = json_pointer([*prefix, *wire_parts])
        if (pointer, keyword) in seen:
            return
        seen.add((pointer, keyword))
        violations.append(
            Violation(
                event_index=event_index,
                match=point.match,
                error_type=error_type,
                pointer=pointer,
                keyword=keyword,
                expected=expected,
                actual=actual,
                action=action,
            )
        )

    for error in point.schema.explainer.iter_errors(conformed):
        keyword = str(error.validator)
        path = list(error.absolute_path)
        if keyword == "additionalProperties" and isinstance(error.instance, dict):
            planned = error.schema.get("properties") or {}
            for name, value in error.instance.items():
                if name not in planned:
                    add(
                        [*path, name],
                        ViolationType.UNPLANNED,
                        keyword,
                        actual=_show(value),
                        action=unplanned_action,
                    )
        elif keyword == "additionalItems":
            add(path, ViolationType.UNPLANNED, keyword, actual=_show(error.instance))
        elif keyword == "required" and isinstance(error.instance, dict):
            for name in error.validator_value:
                if name not in error.instance:
                    add([*path, name], ViolationType.MISSING_REQUIRED, keyword, expected=name)
        else:
            error_type = (
                ViolationType.INVALID_VALUE
                if keyword in _INVALID_VALUE_KEYWORDS
                else ViolationType.UNKNOWN
            )
            add(
                path,
                error_type,
                keyword,
                expected=_expected(keyword, error.validator_value),
                actual=_show(_original(instance, path, error.instance)),
            )
    return violations


def _identity_names(schema: Mapping[str, Any]) -> dict[str, str]:
    """Wire identity name -> the plan's, where they differ (mParticle's UI says ``customerid``)."""
    planned = schema.get("properties") or {}
    if "customerid" in planned and "customer_id" not in planned:
        return {"customer_id": "customerid"}
    return {}


class PlanValidator:
    """The compiled points of one plan version."""

    def __init__(
        self,
        events: Mapping[tuple[str, ...], tuple[DataPlanMatch, CompiledSchema]],
        user_attributes: tuple[DataPlanMatch, CompiledSchema] | None,
        user_identities: tuple[DataPlanMatch, CompiledSchema] | None,
        actions: ValidationActions,
    ) -> None:
        self._events = {key: _Point(*point) for key, point in events.items()}
        self._user_attributes = None if user_attributes is None else _Point(*user_attributes)
        self._user_identities = None if user_identities is None else _Point(*user_identities)
        self._identity_names: dict[str, str] = {}
        if self._user_identities is not None:
            self._identity_names = _identity_names(self._user_identities.schema.explainer.schema)
        self._actions = actions
        self._unplanned_event = (
            ViolationAction.BLOCK_EVENT if actions.block_unplanned_events else ViolationAction.ALLOW
        )
        self._unplanned_event_attribute = (
            ViolationAction.BLOCK_ATTRIBUTE
            if actions.block_unplanned_event_attributes
            else ViolationAction.ALLOW
        )
        self._unplanned_user_attribute = (
            ViolationAction.BLOCK_ATTRIBUTE
            if actions.block_unplanned_user_attributes
            else ViolationAction.ALLOW
        )
        # An identity decides whose profile a batch lands on: mParticle drops the batch.
        self._unplanned_identity = (
            ViolationAction.BLOCK_BATCH
            if actions.block_unplanned_user_identities
            else ViolationAction.ALLOW
        )

    def validate(self, batch: Batch) -> list[Violation]:
        violations: list[Violation] = []
        document: dict[str, Any] | None = None
        lookup = self._events
        for index, event in enumerate(batch.events or ()):
            key = event_key(event)
            if key is None:
                continue  # user attribute/identity changes, push, profile: no data point plans them
            point = lookup.get(key)
            if point is None:
                violations.append(
                    Violation(
                        event_index=index,
                        match=_match_for(key),
                        error_type=ViolationType.UNPLANNED,
                        pointer="#",
                        action=self._unplanned_event,
                    )
                )
                continue
            if document is None:
                document = to_dict(batch)
            instance = document["events"][index]
            if not point.schema.is_valid(instance):
                violations.extend(
                    _explain(
                        point,
                        instance,
                        event_index=index,
                        prefix=(),
                        unplanned_action=self._unplanned_event_attribute,
                    )
                )
        if self._user_attributes is not None:
            document = document or to_dict(batch)
            attributes = document.get("user_attributes") or {}
            if not self._user_attributes.schema.is_valid(attributes):
                violations.extend(
                    _explain(
                        self._user_attributes,
                        attributes,
                        event_index=None,
                        prefix=("user_attributes",),
                        unplanned_action=self._unplanned_user_attribute,
                    )
                )
        if self._user_identities is not None:
            document = document or to_dict(batch)
            identities = dict(document.get("user_identities") or {})
            plan_names = self._identity_names
            for wire, planned in plan_names.items():
                if wire in identities:
                    identities[planned] = identities.pop(wire)
            if not self._user_identities.schema.is_valid(identities):
                violations.extend(
                    _explain(
                        self._user_identities,
                        identities,
                        event_index=None,
                        prefix=("user_identities",),
                        unplanned_action=self._unplanned_identity,
                        names={planned: wire for wire, planned in plan_names.items()},
                    )
                )
        return violations
