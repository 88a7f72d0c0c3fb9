"""Data-plan stage: hypothesis strategies for data a plan allows, data it refuses, and plans.

Imported only by :mod:`mparticle_feed.testing.strategies` (hypothesis is a test dependency).
Events are generated as wire documents from each data point's schema, then loaded through
the codec, so they are exactly what a mapping could produce and send.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping
from datetime import timezone
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from .._errors import PayloadError
from .._wire.codec import from_dict, to_dict
from .._wire.common import Context
from .._wire.enums import (
    ApplicationTransitionType,
    CustomEventType,
    Environment,
    ProductActionType,
    PromotionActionType,
)
from .._wire.models import Batch, CustomEvent, Event
from ._plan import DataPlanVersion, DataPoint, LoadedDataPlan
from ._types import BATCH_MATCH_TYPES, EVENT_MATCH_TYPES, DataPlanMatch, ValidationActions
from ._validate import event_key

__all__ = [
    "data_plan_versions",
    "plan_batches",
    "plan_events",
    "violating_batches",
]

_MAX_ITEMS = 3
_BOUND = 1_000_000_000
_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_text = st.text(st.characters(codec="utf-8"), max_size=12)


def _types(schema: Mapping[str, Any]) -> list[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    return list(declared) if isinstance(declared, list) else []


def _strings(schema: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    fmt = schema.get("format")
    if fmt == "email":
        base: st.SearchStrategy[str] = st.emails()
    elif fmt == "date-time":
        base = st.datetimes(timezones=st.just(timezone.utc)).map(lambda d: d.isoformat())
    elif fmt == "date":
        base = st.dates().map(lambda d: d.isoformat())
    elif fmt in ("uri", "url"):
        base = st.sampled_from(["https://example.test/", "https://example.test/a?b=c"])
    elif fmt == "ipv4":
        base = st.ip_addresses(v=4).map(str)
    elif "pattern" in schema:
        base = st.from_regex(re.compile(schema["pattern"]))
    else:
        base = st.text(
            st.characters(codec="utf-8"),
            min_size=low,
            max_size=max(low, int(high) if high is not None else 12),
        )
    if low or high is not None:
        base = base.filter(lambda s: len(s) >= low and (high is None or len(s) <= high))
    return base


def _bounds(schema: Mapping[str, Any], integer: bool) -> tuple[float, float]:
    low: float = -_BOUND
    high: float = _BOUND
    if "minimum" in schema:
        low = max(low, schema["minimum"])
    if "maximum" in schema:
        high = min(high, schema["maximum"])
    exclusive_low, exclusive_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = 1 if integer else 1e-6
    if isinstance(exclusive_low, (int, float)) and not isinstance(exclusive_low, bool):
        low = max(low, exclusive_low + step)
    if isinstance(exclusive_high, (int, float)) and not isinstance(exclusive_high, bool):
        high = min(high, exclusive_high - step)
    return low, high


def _numbers(schema: Mapping[str, Any], integer: bool) -> st.SearchStrategy[Any]:
    low, high = _bounds(schema, integer)
    multiple = schema.get("multipleOf")
    if multiple:
        return st.integers(math.ceil(low / multiple), math.floor(high / multiple)).map(
            lambda k: k * multiple
        )
    ints = st.integers(math.ceil(low), math.floor(high))
    if integer:
        return ints
    return ints | st.floats(low, high, allow_nan=False, allow_infinity=False)


def from_schema(schema: Any, *, scalar_only: bool = False) -> st.SearchStrategy[Any]:
    """Values a data point's schema allows, for the keywords mParticle's plans use."""
    if schema is True or not isinstance(schema, Mapping):
        return _text
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(list(schema["enum"]))
    kinds = _types(schema) or (["string"] if scalar_only else ["string", "number", "boolean"])
    options: list[st.SearchStrategy[Any]] = []
    for kind in kinds:
        if kind == "string":
            options.append(_strings(schema))
        elif kind in ("number", "integer"):
            options.append(_numbers(schema, kind == "integer"))
        elif kind == "boolean":
            options.append(st.booleans())
        elif kind == "null":
            options.append(st.none())
        elif kind == "object" and not scalar_only:
            options.append(objects_from_schema(schema))
        elif kind == "array" and not scalar_only:
            items = schema.get("items", {})
            options.append(
                st.lists(
                    from_schema(items, scalar_only=True),
                    min_size=int(schema.get("minItems", 0)),
                    max_size=max(
                        int(schema.get("minItems", 0)), int(schema.get("maxItems", _MAX_ITEMS))
                    ),
                )
            )
    return st.one_of(options) if options else _text


def objects_from_schema(
    schema: Mapping[str, Any], *, scalar_values: bool = False
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with every required property and some optional ones; never unplanned keys."""
    properties = schema.get("properties") or {}
    required = [name for name in schema.get("required", ()) if isinstance(name, str)]
    fixed = {
        name: from_schema(properties.get(name, {}), scalar_only=scalar_values) for name in required
    }
    optional = {
        name: from_schema(sub, scalar_only=scalar_values)
        for name, sub in properties.items()
        if name not in fixed
    }
    return st.fixed_dictionaries(fixed, optional=optional)


# --- events -------------------------------------------------------------------------------

_ATTRIBUTE_MAPS = ("custom_attributes", "custom_flags")


def _base_data(match: DataPlanMatch) -> st.SearchStrategy[dict[str, Any]]:
    """The wire fields an event of this match needs: its criteria and the model's required fields."""
    criteria = match.criteria
    kind = match.type
    if kind == "custom_event":
        return st.just(
            {
                "event_name": criteria["event_name"],
                "custom_event_type": criteria["custom_event_type"],
            }
        )
    if kind == "screen_view":
        return st.just({"screen_name": criteria["screen_name"]})
    if kind == "product_action":
        return st.just({"product_action": {"action": criteria["action"]}})
    if kind == "promotion_action":
        return st.just({"promotion_action": {"action": criteria["action"]}})
    if kind == "product_impression":
        return st.builds(
            lambda name: {
                "product_impressions": [{"product_impression_list": name, "products": []}]
            },
            _names,
        )
    if kind == "application_state_transition":
        return st.just({"application_transition_type": criteria["application_transition_type"]})
    if kind == "session_end":
        return st.builds(lambda ms: {"session_duration_ms": ms}, st.integers(0, 10**9))
    if kind == "opt_out":
        return st.builds(lambda opted: {"is_opted_out": opted}, st.booleans())
    if kind == "crash_report":
        return st.builds(lambda s, m: {"severity": s, "message": m}, _names, _names)
    if kind == "breadcrumb":
        return st.builds(lambda label: {"label": label}, _names)
    if kind == "network_performance":
        return st.builds(
            lambda url, code: {"url": url, "response_code": code},
            st.just("https://example.test/"),
            st.integers(100, 599),
        )
    return st.just({})


def _merge(base: dict[str, Any], generated: dict[str, Any]) -> dict[str, Any]:
    data = dict(generated)
    for key, value in base.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # the criteria (an action) win
        elif key in ("product_impressions",) and isinstance(data.get(key), list) and data[key]:
            continue
        else:
            data[key] = value
    return data


def _data_schema(point: DataPoint) -> Mapping[str, Any]:
    properties = point.schema.get("properties") or {}
    data = properties.get("data")
    return data if isinstance(data, Mapping) else {}


def _event_from(point: DataPoint, version: DataPlanVersion) -> st.SearchStrategy[Event]:
    data_schema = _data_schema(point)
    properties = data_schema.get("properties") or {}
    required = set(data_schema.get("required") or ())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, sub in properties.items():
        strategy = (
            objects_from_schema(sub, scalar_values=True)
            if name in _ATTRIBUTE_MAPS and isinstance(sub, Mapping)
            else from_schema(sub)
        )
        (fields if name in required else optional)[name] = strategy
    generated = st.fixed_dictionaries(fields, optional=optional)
    event_type = (
        "commerce_event"
        if point.match.type
        in (
            "product_action",
            "promotion_action",
            "product_impression",
        )
        else point.match.type
    )

    def build(base: dict[str, Any], extra: dict[str, Any]) -> Event:
        document = {"event_type": event_type, "data": _merge(base, extra)}
        try:
            batch = from_dict({"events": [document]})
        except PayloadError:
            assume(False)
            raise  # unreachable: assume(False) stops the example
        assert batch.events is not None
        event = batch.events[0]
        # A schema this generator reads loosely (a pattern beside a format, say) can still
        # produce a value the plan refuses; those examples are dropped, never returned.
        violations = version.validate(Batch(events=[event]))
        assume(not any(v.event_index is not None for v in violations))
        return event

    return st.builds(build, _base_data(point.match), generated)


def _version(plan: LoadedDataPlan | DataPlanVersion, environment: Environment) -> DataPlanVersion:
    return plan if isinstance(plan, DataPlanVersion) else plan.version_for(environment)


def plan_events(
    plan: LoadedDataPlan | DataPlanVersion,
    environment: Environment = Environment.DEVELOPMENT,
) -> st.SearchStrategy[Event]:
    """Events the plan (its version for ``environment``) allows: every planned event can come."""
    version = _version(plan, environment)
    points = [p for p in version.data_points if p.match.type in EVENT_MATCH_TYPES]
    if not points:
        return st.nothing()
    return st.one_of([_event_from(p, version) for p in points])


def _identities_from(schema: Mapping[str, Any]) -> st.SearchStrategy[dict[str, str]]:
    def to_wire(values: dict[str, Any]) -> dict[str, str]:
        return {("customer_id" if k == "customerid" else k): str(v) for k, v in values.items()}

    planned = dict((schema.get("properties") or {}).items())
    return objects_from_schema({**schema, "properties": planned}).map(to_wire)


def _environments(plan: LoadedDataPlan | DataPlanVersion) -> list[Environment]:
    if isinstance(plan, DataPlanVersion) or plan.version is not None or len(plan.versions) == 1:
        return list(Environment)
    return [env for env in Environment if any(v.is_active_in(env) for v in plan.versions)]


def plan_batches(
    plan: LoadedDataPlan | DataPlanVersion,
    *,
    min_events: int = 0,
    max_events: int = 5,
    environment: Environment | None = None,
) -> st.SearchStrategy[Batch]:
    """Batches the plan allows: tagged with the plan, planned events, planned attributes."""
    environments = [environment] if environment is not None else _environments(plan)
    if not environments:
        return st.nothing()
    return st.sampled_from(environments).flatmap(
        lambda env: _batches_in(plan, env, min_events, max_events)
    )


def _batches_in(
    plan: LoadedDataPlan | DataPlanVersion,
    environment: Environment,
    min_events: int,
    max_events: int,
) -> st.SearchStrategy[Batch]:
    version = _version(plan, environment)
    points = {p.match.type: p for p in version.data_points if p.match.type in BATCH_MATCH_TYPES}
    events = plan_events(version)
    has_events = any(p.match.type in EVENT_MATCH_TYPES for p in version.data_points)
    event_lists: st.SearchStrategy[list[Event] | None] = (
        st.lists(events, min_size=min_events, max_size=max_events) if has_events else st.none()
    )
    attributes_point = points.get("user_attributes")
    attributes: st.SearchStrategy[dict[str, Any] | None] = (
        st.none()
        if attributes_point is None
        else objects_from_schema(attributes_point.schema).map(lambda d: d or None)
    )
    identities_point = points.get("user_identities")
    identities: st.SearchStrategy[dict[str, str] | None] = (
        st.none() if identities_point is None else _identities_from(identities_point.schema)
    )
    context = None if version.plan_id is None else Context(data_plan=version.tag())

    def build(
        event_list: list[Event] | None,
        user_attributes: dict[str, Any] | None,
        user_identities: dict[str, str] | None,
    ) -> Batch:
        document = to_dict(Batch(events=event_list, environment=environment, context=context))
        if user_attributes:
            document["user_attributes"] = user_attributes
        if user_identities:
            document["user_identities"] = user_identities
        try:
            batch = from_dict(document)
        except PayloadError:
            assume(False)
            raise
        assume(version.validate(batch) == [])
        return batch

    return st.builds(build, event_lists, attributes, identities)


def violating_batches(
    plan: LoadedDataPlan | DataPlanVersion,
    *,
    environment: Environment | None = None,
) -> st.SearchStrategy[Batch]:
    """Batches with at least one violation of the plan: an unplanned event or user attribute."""

    def unplanned_event(batch: Batch, name: str) -> Batch:
        version = _version(plan, batch.environment or Environment.PRODUCTION)
        planned = {p.match.key for p in version.data_points}
        event = CustomEvent(event_name=name, custom_event_type=CustomEventType.OTHER)
        assume(event_key(event) not in planned)
        return _with(batch, events=[*(batch.events or ()), event])

    def unplanned_attribute(batch: Batch, name: str) -> Batch:
        version = _version(plan, batch.environment or Environment.PRODUCTION)
        point = next((p for p in version.data_points if p.match.type == "user_attributes"), None)
        assume(point is not None and point.schema.get("additionalProperties") is False)
        assert point is not None
        assume(name not in (point.schema.get("properties") or {}))
        return _with(batch, user_attributes={**(batch.user_attributes or {}), name: "x"})

    base = plan_batches(plan, environment=environment)
    unplanned_names = st.text(string.ascii_letters, min_size=1, max_size=8).map(
        lambda s: "unplanned " + s
    )
    return st.one_of(
        st.builds(unplanned_event, base, unplanned_names),
        st.builds(unplanned_attribute, base, unplanned_names),
    ).filter(lambda batch: bool(_any_violation(plan, batch)))


def _any_violation(plan: LoadedDataPlan | DataPlanVersion, batch: Batch) -> bool:
    return bool(plan.validate(batch))


def _with(batch: Batch, **changes: Any) -> Batch:
    import attrs

    return attrs.evolve(batch, **changes)


# --- generated plans ----------------------------------------------------------------------

_SCALAR_SCHEMAS: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.just({"type": "string"}),
    st.builds(lambda n: {"type": "string", "maxLength": n}, st.integers(1, 20)),
    st.just({"type": "string", "pattern": "^[a-z]+[0-9]*$"}),
    st.lists(
        st.text(string.ascii_lowercase, min_size=1, max_size=6), min_size=1, max_size=4, unique=True
    ).map(lambda values: {"type": "string", "enum": values}),
    st.just({"type": "string", "format": "email"}),
    st.builds(
        lambda low, span: {"type": "number", "minimum": low, "maximum": low + span},
        st.integers(-1000, 1000),
        st.integers(0, 1000),
    ),
    st.just({"type": "integer", "minimum": 0}),
    st.just({"type": "boolean"}),
)


def _attribute_schemas() -> st.SearchStrategy[dict[str, Any]]:
    names = st.text(string.ascii_letters + " _", min_size=1, max_size=10)

    def build(
        properties: dict[str, Any], required_flags: list[bool], additional: bool
    ) -> dict[str, Any]:
        required = [name for name, flag in zip(properties, required_flags, strict=False) if flag]
        return {
            "type": "object",
            "additionalProperties": additional,
            "properties": properties,
            "required": required,
        }

    return st.builds(
        build,
        st.dictionaries(names, _SCALAR_SCHEMAS, max_size=4),
        st.lists(st.booleans(), min_size=4, max_size=4),
        st.booleans(),
    )


def _event_points() -> st.SearchStrategy[DataPoint]:
    def criteria_for(kind: str) -> st.SearchStrategy[dict[str, str]]:
        if kind == "custom_event":
            return st.builds(
                lambda name, type_: {"event_name": name, "custom_event_type": type_.value},
                st.text(string.ascii_letters + " ", min_size=1, max_size=12),
                st.sampled_from(
                    [t for t in CustomEventType if t is not CustomEventType.ATTRIBUTION]
                ),
            )
        if kind == "screen_view":
            return st.builds(
                lambda n: {"screen_name": n}, st.text(string.ascii_letters, min_size=1, max_size=10)
            )
        if kind == "product_action":
            return st.sampled_from(list(ProductActionType)).map(lambda a: {"action": a.value})
        if kind == "promotion_action":
            return st.sampled_from(list(PromotionActionType)).map(lambda a: {"action": a.value})
        if kind == "application_state_transition":
            return st.sampled_from(list(ApplicationTransitionType)).map(
                lambda t: {"application_transition_type": t.value}
            )
        return st.just({})

    def build(
        kind: str, criteria: dict[str, str], attributes: dict[str, Any], open_data: bool
    ) -> DataPoint:
        data_properties: dict[str, Any] = {"custom_attributes": attributes}
        definition = {
            "properties": {
                "data": {
                    "type": "object",
                    "additionalProperties": open_data,
                    "properties": data_properties,
                }
            }
        }
        if not open_data:
            # A closed event lists what its kind needs, as mParticle's UI writes it.
            needed = {
                "custom_event": ("event_name", "custom_event_type"),
                "screen_view": ("screen_name",),
                "product_action": ("product_action",),
                "promotion_action": ("promotion_action",),
                "product_impression": ("product_impressions",),
                "application_state_transition": ("application_transition_type",),
                "session_end": ("session_duration_ms",),
                "opt_out": ("is_opted_out",),
                "crash_report": ("severity", "message"),
                "breadcrumb": ("label",),
                "network_performance": ("url", "response_code"),
            }.get(kind, ())
            for name in needed:
                data_properties.setdefault(name, {})
        return DataPoint(match=DataPlanMatch(type=kind, criteria=criteria), schema=definition)

    kinds = st.sampled_from(list(EVENT_MATCH_TYPES))
    return kinds.flatmap(
        lambda kind: st.builds(
            build, st.just(kind), criteria_for(kind), _attribute_schemas(), st.booleans()
        )
    )


def data_plan_versions(*, plan_id: str = "generated_plan") -> st.SearchStrategy[DataPlanVersion]:
    """Plan versions: event points of every match type, maybe user attribute and identity points."""

    def identities_point(required_customer: bool, additional: bool) -> DataPoint:
        return DataPoint(
            match=DataPlanMatch(type="user_identities"),
            schema={
                "type": "object",
                "additionalProperties": additional,
                "properties": {
                    "customerid": {"type": "string"},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["customerid"] if required_customer else [],
            },
        )

    def build(
        events: list[DataPoint],
        attributes: dict[str, Any] | None,
        identities: DataPoint | None,
        actions: ValidationActions,
        number: int,
    ) -> DataPlanVersion:
        points = list(events)
        if attributes is not None:
            points.append(DataPoint(match=DataPlanMatch(type="user_attributes"), schema=attributes))
        if identities is not None:
            points.append(identities)
        return DataPlanVersion(
            data_points=tuple(points),
            plan_id=plan_id,
            version=number,
            activated_environment="production",
            validation_actions=actions,
        )

    return st.builds(
        build,
        st.lists(_event_points(), min_size=1, max_size=5, unique_by=lambda p: p.match.key),
        st.none() | _attribute_schemas(),
        st.none() | st.builds(identities_point, st.booleans(), st.booleans()),
        st.builds(
            ValidationActions,
            block_unplanned_events=st.booleans(),
            block_unplanned_event_attributes=st.booleans(),
            block_unplanned_user_attributes=st.booleans(),
            block_unplanned_user_identities=st.booleans(),
        ),
        st.integers(1, 20),
    )
