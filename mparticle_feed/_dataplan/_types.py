"""Data-plan stage: the values a plan is made of and the violations validation reports."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import attrs

__all__ = [
    "BATCH_MATCH_TYPES",
    "EVENT_MATCH_TYPES",
    "DataPlanMatch",
    "ValidationActions",
    "Violation",
    "ViolationAction",
    "ViolationType",
]

#: Match types of event data points, with the criteria each one is keyed by.
EVENT_MATCH_TYPES: Mapping[str, tuple[str, ...]] = {
    "custom_event": ("event_name", "custom_event_type"),
    "screen_view": ("screen_name",),
    "product_action": ("action",),
    "promotion_action": ("action",),
    "product_impression": (),
    "application_state_transition": ("application_transition_type",),
    "session_start": (),
    "session_end": (),
    "first_run": (),
    "opt_out": (),
    "crash_report": (),
    "breadcrumb": (),
    "network_performance": (),
    "uninstall": (),
}

#: Match types of batch-level data points (validated against the batch, not an event).
BATCH_MATCH_TYPES = ("user_attributes", "user_identities")


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class ViolationType(_StrEnum):
    """mParticle's validation error types."""

    UNPLANNED = "unplanned"
    MISSING_REQUIRED = "missing_required"
    INVALID_VALUE = "invalid_value"
    UNKNOWN = "unknown"


class ViolationAction(_StrEnum):
    """What mParticle does with the data under the plan's ``validation_actions``."""

    ALLOW = "allow"
    BLOCK_EVENT = "block_event"
    BLOCK_ATTRIBUTE = "block_attribute"
    BLOCK_BATCH = "block_batch"


def _criteria(value: Mapping[str, Any] | None) -> dict[str, str]:
    return {} if value is None else {str(key): str(item) for key, item in value.items()}


@attrs.frozen(kw_only=True)
class DataPlanMatch:
    """A data point's match: its ``type`` and the ``criteria`` that pick it out.

    ``key`` is what events are looked up by: the type and the criteria values in a fixed order.
    """

    type: str
    criteria: dict[str, str] = attrs.field(factory=dict, converter=_criteria)

    @property
    def key(self) -> tuple[str, ...]:
        names = EVENT_MATCH_TYPES.get(self.type, ())
        return (self.type, *(self.criteria.get(name, "") for name in names))

    def __str__(self) -> str:
        if not self.criteria:
            return self.type
        shown = ", ".join(f"{name}={value!r}" for name, value in sorted(self.criteria.items()))
        return f"{self.type} ({shown})"


def _action(value: object, name: str) -> bool:
    if value in (None, "allow"):
        return False
    if value == "block":
        return True
    from .._errors import DataPlanError

    raise DataPlanError(
        f"settings.validation_actions.{name} is {value!r}; expected 'allow' or 'block'"
    )


@attrs.frozen(kw_only=True)
class ValidationActions:
    """The plan version's block settings (``settings.validation_actions``).

    mParticle blocks only unplanned data: an unplanned event, an unplanned event attribute,
    an unplanned user attribute, an unplanned user identity. Invalid values and missing
    required attributes are always allowed through (and reported).
    """

    block_unplanned_events: bool = False
    block_unplanned_event_attributes: bool = False
    block_unplanned_user_attributes: bool = False
    block_unplanned_user_identities: bool = False

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> ValidationActions:
        """Read ``{"event": "block", "event_attribute": "allow", "user_attribute": ..., "user_identity": ...}``."""
        value = value or {}
        known = {"event", "event_attribute", "user_attribute", "user_identity"}
        unknown = sorted(set(value) - known)
        if unknown:
            from .._errors import DataPlanError

            raise DataPlanError(
                f"settings.validation_actions has unknown key(s) {', '.join(unknown)}; "
                f"expected {', '.join(sorted(known))}"
            )
        return cls(
            block_unplanned_events=_action(value.get("event"), "event"),
            block_unplanned_event_attributes=_action(
                value.get("event_attribute"), "event_attribute"
            ),
            block_unplanned_user_attributes=_action(value.get("user_attribute"), "user_attribute"),
            block_unplanned_user_identities=_action(value.get("user_identity"), "user_identity"),
        )

    def to_dict(self) -> dict[str, str]:
        def word(block: bool) -> str:
            return "block" if block else "allow"

        return {
            "event": word(self.block_unplanned_events),
            "event_attribute": word(self.block_unplanned_event_attributes),
            "user_attribute": word(self.block_unplanned_user_attributes),
            "user_identity": word(self.block_unplanned_user_identities),
        }


@attrs.frozen(kw_only=True)
class Violation:
    """One way a batch breaks the plan.

    * ``event_index``: the event's index in ``batch.events``; None for a batch-level point
      (``user_attributes``, ``user_identities``).
    * ``match``: the data point matched, or the match mParticle would look for (unplanned).
    * ``error_type``: unplanned, missing_required, invalid_value or unknown.
    * ``pointer``: a JSON pointer into the event (``#/data/custom_attributes/Campaign Id``),
      or into the batch for batch-level points (``#/user_attributes/tier``); ``#`` for a
      whole unplanned event.
    * ``keyword``: the JSON Schema keyword that failed (None for an unplanned event).
    * ``expected`` / ``actual``: what the schema asks for and what was found, as short text.
    * ``action``: what mParticle would do under the plan's validation actions.
    """

    event_index: int | None
    match: DataPlanMatch
    error_type: ViolationType
    pointer: str
    keyword: str | None = None
    expected: str | None = None
    actual: str | None = None
    action: ViolationAction = ViolationAction.ALLOW

    @property
    def blocked(self) -> bool:
        return self.action is not ViolationAction.ALLOW

    def __str__(self) -> str:
        where = "batch" if self.event_index is None else f"events[{self.event_index}]"
        text = f"{where} {self.match}: {self.error_type} at {self.pointer}"
        if self.keyword is not None:
            text += f" ({self.keyword}"
            text += f", expected {self.expected}" if self.expected is not None else ""
            text += f", got {self.actual}" if self.actual is not None else ""
            text += ")"
        if self.blocked:
            text += f"; mParticle would {self.action.value.replace('_', ' ')}"
        return text
