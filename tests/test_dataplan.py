"""Data plans: loading mParticle's exports, matching every event type, violations and actions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mparticle_feed as mpf
from mparticle_feed import (
    DataPlanError,
    DataPlanVersion,
    LoadedDataPlan,
    Violation,
    ViolationAction,
    ViolationType,
    apply_blocks,
    load_data_plan,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLAN = ROOT / "examples" / "shop_data_plan.json"
TS = 1_700_000_000_000


def point(
    match_type: str, definition: dict[str, Any] | None = None, **criteria: str
) -> dict[str, Any]:
    return {
        "match": {"type": match_type, "criteria": criteria},
        "validator": {"type": "json_schema", "definition": definition or {}},
    }


def data_schema(
    properties: dict[str, Any], *, additional: bool = True, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "properties": {
            "data": {
                "type": "object",
                "additionalProperties": additional,
                "required": list(required),
                "properties": properties,
            }
        }
    }


def attrs_schema(
    properties: dict[str, Any], *, additional: bool = False, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    return data_schema(
        {
            "custom_attributes": {
                "type": "object",
                "additionalProperties": additional,
                "required": list(required),
                "properties": properties,
            }
        }
    )


def version(
    *points: dict[str, Any], actions: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    document: dict[str, Any] = {"version_document": {"data_points": list(points)}, **extra}
    if actions is not None:
        document["settings"] = {"validation_actions": actions}
    return document


def plan_of(*points: dict[str, Any], actions: dict[str, str] | None = None) -> LoadedDataPlan:
    return LoadedDataPlan.from_dict(version(*points, actions=actions, data_plan_id="p", version=1))


def product(**extra: Any) -> mpf.Product:
    return mpf.Product(id="sku-1", name="Lamp", price=10, quantity=1, **extra)


# One event of each plannable kind, with the data point that plans it.
PLANNED: list[tuple[dict[str, Any], mpf.Event]] = [
    (
        point("custom_event", event_name="Signed Up", custom_event_type="other"),
        mpf.CustomEvent(
            event_name="Signed Up", custom_event_type="other", timestamp_unixtime_ms=TS
        ),
    ),
    (point("screen_view", screen_name="Home"), mpf.ScreenViewEvent(screen_name="Home")),
    (
        point("product_action", action="purchase"),
        mpf.CommerceEvent(
            product_action=mpf.ProductAction(action="purchase", products=[product()])
        ),
    ),
    (
        point("promotion_action", action="click"),
        mpf.CommerceEvent(
            promotion_action=mpf.PromotionAction(
                action="click", promotions=[mpf.Promotion(id="spring")]
            )
        ),
    ),
    (
        point("product_impression"),
        mpf.CommerceEvent(
            product_impressions=[
                mpf.ProductImpression(product_impression_list="home", products=[product()])
            ]
        ),
    ),
    (
        point("application_state_transition", application_transition_type="application_background"),
        mpf.ApplicationStateTransitionEvent(application_transition_type="application_background"),
    ),
    (point("session_start"), mpf.SessionStartEvent()),
    (point("session_end"), mpf.SessionEndEvent(session_duration_ms=1000)),
    (point("first_run"), mpf.FirstRunEvent()),
    (point("opt_out"), mpf.OptOutEvent(is_opted_out=True)),
    (point("crash_report"), mpf.CrashReportEvent(severity="fatal", message="boom")),
    (point("breadcrumb"), mpf.BreadcrumbEvent(label="tapped")),
    (
        point("network_performance"),
        mpf.NetworkPerformanceEvent(url="https://x.test", response_code=200),
    ),
    (point("uninstall"), mpf.UninstallEvent()),
]


def test_every_event_match_type_is_covered_here() -> None:
    from mparticle_feed._dataplan._types import EVENT_MATCH_TYPES

    assert {p["match"]["type"] for p, _ in PLANNED} == set(EVENT_MATCH_TYPES)


@pytest.mark.parametrize(
    ("data_point", "event"),
    PLANNED,
    ids=lambda v: v["match"]["type"] if isinstance(v, dict) else "",
)
def test_each_match_type_matches_its_event_and_only_it(
    data_point: dict[str, Any], event: mpf.Event
) -> None:
    plan = plan_of(data_point, actions={"event": "block"})
    assert plan.validate(mpf.Batch(events=[event])) == []
    others = [other for p, other in PLANNED if p is not data_point]
    violations = plan.validate(mpf.Batch(events=others))
    assert [v.event_index for v in violations] == list(range(len(others)))
    assert {v.error_type for v in violations} == {ViolationType.UNPLANNED}
    assert {v.action for v in violations} == {ViolationAction.BLOCK_EVENT}
    assert {v.pointer for v in violations} == {"#"}


def test_criteria_must_all_match() -> None:
    plan = plan_of(point("custom_event", event_name="Signed Up", custom_event_type="other"))
    wrong_type = mpf.CustomEvent(event_name="Signed Up", custom_event_type="navigation")
    (violation,) = plan.validate(mpf.Batch(events=[wrong_type]))
    assert violation.error_type is ViolationType.UNPLANNED
    assert violation.match.type == "custom_event"
    assert violation.match.criteria == {
        "event_name": "Signed Up",
        "custom_event_type": "navigation",
    }
    assert violation.action is ViolationAction.ALLOW  # no block settings: mParticle lets it through


def test_events_no_data_point_can_plan_are_not_reported() -> None:
    plan = plan_of(point("session_start"), actions={"event": "block"})
    change = mpf.UserAttributeChangeEvent(user_attribute_name="tier", new="gold")
    assert plan.validate(mpf.Batch(events=[change])) == []


ORDER = point(
    "custom_event",
    attrs_schema(
        {
            "Campaign Id": {"type": "string", "pattern": "^C-[0-9]+$"},
            "total": {"type": "number", "minimum": 0},
            "gift": {"type": "boolean"},
        },
        required=("Campaign Id",),
    ),
    event_name="Order",
    custom_event_type="transaction",
)


def order(**attributes: Any) -> mpf.CustomEvent:
    return mpf.CustomEvent(
        event_name="Order", custom_event_type="transaction", custom_attributes=attributes
    )


def only(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, violations
    return violations[0]


def test_additional_attribute_refused_is_unplanned_with_pointer_and_action() -> None:
    plan = plan_of(ORDER, actions={"event_attribute": "block"})
    violation = only(
        plan.validate(mpf.Batch(events=[order(**{"Campaign Id": "C-1", "coupon": "X"})]))
    )
    assert violation.event_index == 0
    assert violation.error_type is ViolationType.UNPLANNED
    assert violation.pointer == "#/data/custom_attributes/coupon"
    assert violation.keyword == "additionalProperties"
    assert violation.actual == "X"
    assert violation.action is ViolationAction.BLOCK_ATTRIBUTE


def test_additional_attribute_allowed_when_the_schema_allows_it() -> None:
    lenient = point(
        "custom_event",
        attrs_schema({"Campaign Id": {"type": "string"}}, additional=True),
        event_name="Order",
        custom_event_type="transaction",
    )
    plan = plan_of(lenient, actions={"event_attribute": "block"})
    assert plan.validate(mpf.Batch(events=[order(**{"Campaign Id": "C-1", "coupon": "X"})])) == []


def test_missing_required_attribute() -> None:
    plan = plan_of(ORDER, actions={"event_attribute": "block", "event": "block"})
    violation = only(plan.validate(mpf.Batch(events=[order(total=3)])))
    assert violation.error_type is ViolationType.MISSING_REQUIRED
    assert violation.pointer == "#/data/custom_attributes/Campaign Id"
    assert violation.keyword == "required"
    assert violation.expected == "Campaign Id"
    # mParticle blocks only unplanned data: a missing attribute is reported, not blocked.
    assert violation.action is ViolationAction.ALLOW


@pytest.mark.parametrize(
    ("attributes", "keyword", "pointer_tail"),
    [
        ({"Campaign Id": "spring"}, "pattern", "Campaign Id"),
        ({"Campaign Id": "C-1", "total": -1}, "minimum", "total"),
        ({"Campaign Id": "C-1", "total": "lots"}, "type", "total"),
        ({"Campaign Id": "C-1", "gift": "maybe"}, "type", "gift"),
    ],
)
def test_invalid_values(attributes: dict[str, Any], keyword: str, pointer_tail: str) -> None:
    violation = only(plan_of(ORDER).validate(mpf.Batch(events=[order(**attributes)])))
    assert violation.error_type is ViolationType.INVALID_VALUE
    assert violation.keyword == keyword
    assert violation.pointer == f"#/data/custom_attributes/{pointer_tail}"
    assert violation.actual == str(attributes[pointer_tail])
    assert violation.expected is not None


def test_numbers_and_booleans_as_strings_are_valid_as_mparticle_says() -> None:
    batch = mpf.Batch(events=[order(**{"Campaign Id": "C-1", "total": "12.5", "gift": "true"})])
    assert plan_of(ORDER).validate(batch) == []
    as_number = point(
        "custom_event",
        attrs_schema({"code": {"type": "string"}}),
        event_name="Order",
        custom_event_type="transaction",
    )
    assert plan_of(as_number).validate(mpf.Batch(events=[order(code=42)])) == []


def test_unknown_error_type_for_keywords_mparticle_does_not_classify() -> None:
    tagged = point(
        "custom_event",
        data_schema({"custom_attributes": {"type": "object", "minProperties": 2}}),
        event_name="Order",
        custom_event_type="transaction",
    )
    violation = only(plan_of(tagged).validate(mpf.Batch(events=[order(a=1)])))
    assert violation.error_type is ViolationType.UNKNOWN
    assert violation.keyword == "minProperties"
    assert violation.pointer == "#/data/custom_attributes"


def test_event_data_schema_refusing_additional_properties_flags_event_fields() -> None:
    strict_screen = point(
        "screen_view",
        data_schema({"screen_name": {"const": "Home"}}, additional=False),
        screen_name="Home",
    )
    plan = plan_of(strict_screen, actions={"event_attribute": "block"})
    event = mpf.ScreenViewEvent(screen_name="Home", activity_type="activity_started")
    violation = only(plan.validate(mpf.Batch(events=[event])))
    assert violation.pointer == "#/data/activity_type"
    assert violation.action is ViolationAction.BLOCK_ATTRIBUTE
    kept = apply_blocks(mpf.Batch(events=[event]), [violation])
    assert kept == mpf.Batch(events=[mpf.ScreenViewEvent(screen_name="Home")])


USER_ATTRIBUTES = point(
    "user_attributes",
    {
        "additionalProperties": False,
        "required": ["tier"],
        "properties": {"tier": {"enum": ["gold", "silver"]}, "orders": {"type": "integer"}},
    },
)
USER_IDENTITIES = point(
    "user_identities",
    {
        "additionalProperties": False,
        "required": ["customerid"],
        "properties": {"customerid": {"type": "string"}},
    },
)


def test_user_attributes_point() -> None:
    plan = plan_of(USER_ATTRIBUTES, actions={"user_attribute": "block"})
    assert plan.validate(mpf.Batch(user_attributes={"tier": "gold", "orders": "3"})) == []
    violations = plan.validate(mpf.Batch(user_attributes={"tier": "platinum", "pet": "cat"}))
    by_pointer = {v.pointer: v for v in violations}
    assert set(by_pointer) == {"#/user_attributes/tier", "#/user_attributes/pet"}
    assert by_pointer["#/user_attributes/tier"].error_type is ViolationType.INVALID_VALUE
    assert by_pointer["#/user_attributes/pet"].error_type is ViolationType.UNPLANNED
    assert by_pointer["#/user_attributes/pet"].action is ViolationAction.BLOCK_ATTRIBUTE
    assert {v.event_index for v in violations} == {None}
    missing = only(plan.validate(mpf.Batch(user_attributes={"orders": 1})))
    assert missing.error_type is ViolationType.MISSING_REQUIRED
    assert missing.pointer == "#/user_attributes/tier"
    pet = [by_pointer["#/user_attributes/pet"]]
    kept = apply_blocks(mpf.Batch(user_attributes={"tier": "gold", "pet": "cat"}), pet)
    assert kept is not None
    assert kept.user_attributes == {"tier": "gold"}


def test_user_identities_point_names_customer_id_as_mparticle_plans_it() -> None:
    plan = plan_of(USER_IDENTITIES, actions={"user_identity": "block"})
    assert plan.validate(mpf.Batch(user_identities={"customer_id": "42"})) == []
    violations = plan.validate(mpf.Batch(user_identities={"email": "a@b.test"}))
    by_type = {v.error_type: v for v in violations}
    assert by_type[ViolationType.UNPLANNED].pointer == "#/user_identities/email"
    assert by_type[ViolationType.UNPLANNED].action is ViolationAction.BLOCK_BATCH
    assert by_type[ViolationType.MISSING_REQUIRED].pointer == "#/user_identities/customer_id"
    assert apply_blocks(mpf.Batch(user_identities={"email": "a@b.test"}), violations) is None


def test_validation_actions_allow_by_default_and_block_each_kind() -> None:
    unplanned_event = mpf.CustomEvent(event_name="Nope", custom_event_type="other")
    batch = mpf.Batch(
        events=[order(**{"Campaign Id": "C-1", "extra": 1}), unplanned_event],
        user_attributes={"tier": "gold", "pet": "cat"},
        user_identities={"customer_id": "1", "email": "a@b.test"},
    )
    allow_all = plan_of(ORDER, USER_ATTRIBUTES, USER_IDENTITIES)
    assert {v.action for v in allow_all.validate(batch)} == {ViolationAction.ALLOW}
    assert apply_blocks(batch, allow_all.validate(batch)) is batch
    block = {"event": "block", "event_attribute": "block", "user_attribute": "block"}
    blocking = plan_of(ORDER, USER_ATTRIBUTES, USER_IDENTITIES, actions=block)
    violations = blocking.validate(batch)
    assert {(v.event_index, v.action) for v in violations} == {
        (0, ViolationAction.BLOCK_ATTRIBUTE),
        (1, ViolationAction.BLOCK_EVENT),
        (None, ViolationAction.BLOCK_ATTRIBUTE),
        (None, ViolationAction.ALLOW),  # user_identity left at allow
    }
    kept = apply_blocks(batch, violations)
    assert kept == mpf.Batch(
        events=[order(**{"Campaign Id": "C-1"})],
        user_attributes={"tier": "gold"},
        user_identities={"customer_id": "1", "email": "a@b.test"},
    )


def test_violation_reads_well() -> None:
    plan = plan_of(ORDER, actions={"event_attribute": "block"})
    (violation,) = plan.validate(mpf.Batch(events=[order(**{"Campaign Id": "C-1", "coupon": "X"})]))
    text = str(violation)
    assert "events[0]" in text
    assert "#/data/custom_attributes/coupon" in text
    assert "block attribute" in text


# --- loading --------------------------------------------------------------------------------


def test_the_example_plan_loads_and_picks_versions_by_environment() -> None:
    plan = load_data_plan(EXAMPLE_PLAN)
    assert plan.plan_id == "shop_plan"
    assert plan.version_for(mpf.Environment.PRODUCTION).version == 1
    assert plan.version_for(mpf.Environment.DEVELOPMENT).version == 2
    batch = mpf.Batch(
        environment="production",
        events=[
            mpf.CustomEvent(
                event_name="Order Placed",
                custom_event_type="transaction",
                custom_attributes={"order_id": "x"},
            )
        ],
    )
    assert plan.validate(batch) == []  # version 1 needs no channel
    violations = plan.validate(attrs_evolve(batch, environment="development"))
    assert {v.pointer for v in violations} >= {
        "#/data/custom_attributes/order_id",
        "#/data/custom_attributes/channel",
    }
    assert plan.tag(mpf.Environment.DEVELOPMENT) == mpf.DataPlan(
        plan_id="shop_plan", plan_version=2
    )


def attrs_evolve(batch: mpf.Batch, **changes: Any) -> mpf.Batch:
    import attrs

    return attrs.evolve(batch, **changes)


def test_version_by_number_and_by_tag() -> None:
    pinned = load_data_plan(EXAMPLE_PLAN, version=1)
    assert pinned.version_for(mpf.Environment.DEVELOPMENT).version == 1
    plan = load_data_plan(EXAMPLE_PLAN)
    tagged = mpf.Batch(
        environment="development",
        context=mpf.Context(data_plan=mpf.DataPlan(plan_id="shop_plan", plan_version=1)),
        events=[
            mpf.CustomEvent(
                event_name="Order Placed",
                custom_event_type="transaction",
                custom_attributes={"order_id": "x"},
            )
        ],
    )
    assert plan.validate(tagged) == []
    with pytest.raises(DataPlanError, match="no version 7"):
        load_data_plan(EXAMPLE_PLAN, version=7)


def test_environment_without_an_active_version() -> None:
    document = json.loads(EXAMPLE_PLAN.read_text())
    document["data_plan_versions"][0]["activated_environment"] = "none"
    plan = LoadedDataPlan.from_dict(document)
    with pytest.raises(DataPlanError, match="active in production"):
        plan.validate(mpf.Batch(environment="production"))
    # A version active in production is active in development too, and the latest one wins.
    document["data_plan_versions"][0]["activated_environment"] = "production"
    document["data_plan_versions"][1]["activated_environment"] = "production"
    assert LoadedDataPlan.from_dict(document).version_for("development").version == 2


def test_one_version_document_loads_and_round_trips(tmp_path: Path) -> None:
    document = json.loads(EXAMPLE_PLAN.read_text())["data_plan_versions"][1]
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(document))
    plan = load_data_plan(path)
    (only_version,) = plan.versions
    assert only_version.version == 2
    assert plan.plan_id == "shop_plan"
    assert only_version.validation_actions.block_unplanned_events
    assert not only_version.validation_actions.block_unplanned_user_identities
    assert DataPlanVersion.from_dict(only_version.to_dict()) == only_version


def test_data_plan_builder_output_without_version_loads() -> None:
    plan = LoadedDataPlan.from_dict(
        {"version_description": "", "version_document": {"data_points": [ORDER]}}
    )
    assert plan.plan_id is None
    assert plan.versions[0].version is None
    with pytest.raises(DataPlanError, match="no data_plan_id"):
        plan.tag()


@pytest.mark.parametrize(
    "keyword_schema",
    [
        {"$ref": "#/definitions/x"},
        {"oneOf": [{"type": "string"}, {"type": "number"}]},
        {"if": {"type": "string"}, "then": {"minLength": 1}},
        {"properties": {"a": {"anyOf": [{"type": "string"}]}}},
        {"properties": {"a": {"items": {"not": {"type": "string"}}}}},
        {"patternProperties": {"^x": {}}},
    ],
)
def test_unsupported_keywords_are_refused_with_where(keyword_schema: dict[str, Any]) -> None:
    data = point(
        "custom_event",
        {"properties": {"data": keyword_schema}},
        event_name="A",
        custom_event_type="other",
    )
    with pytest.raises(DataPlanError, match=r"data_points\[0\].*do not support"):
        plan_of(data)


def test_a_property_named_like_a_keyword_is_fine() -> None:
    plan = plan_of(point("user_attributes", {"properties": {"if": {"type": "string"}, "not": {}}}))
    assert plan.validate(mpf.Batch(user_attributes={"if": "x"})) == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"version_document": {"data_points": [point("media")]}}, "match.type is 'media'"),
        (
            {"version_document": {"data_points": [point("custom_event", event_name="A")]}},
            "custom_event_type is required",
        ),
        (
            {
                "version_document": {
                    "data_points": [{**point("first_run"), "validator": {"type": "regex"}}]
                }
            },
            "only 'json_schema'",
        ),
        (
            {"version_document": {"data_points": [point("first_run", {"type": "strnig"})]}},
            "invalid JSON Schema",
        ),
        (
            {"version_document": {"data_points": [point("first_run"), point("first_run")]}},
            "same match",
        ),
        (
            {
                "version_document": {"data_points": []},
                "settings": {"validation_actions": {"event": "drop"}},
            },
            "'allow' or 'block'",
        ),
        (
            {
                "version_document": {"data_points": []},
                "settings": {"validation_actions": {"events": "block"}},
            },
            "unknown key",
        ),
        (
            {"version_document": {"data_points": []}, "activated_environment": "staging"},
            "activated_environment",
        ),
        ({"version_document": {}}, "data_points must be a list"),
        ({"data_plan_versions": []}, "at least one version"),
        ({"version": "2", "version_document": {"data_points": []}}, "expected an integer"),
    ],
)
def test_malformed_plans_are_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(DataPlanError, match=message):
        LoadedDataPlan.from_dict(document)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "plan.json"
    bad.write_text("{")
    with pytest.raises(DataPlanError, match=r"plan\.json is not valid JSON"):
        load_data_plan(bad)
    with pytest.raises(DataPlanError, match="cannot read"):
        load_data_plan(tmp_path / "missing.json")
    bad.write_text(json.dumps({"version_document": {"data_points": [point("media")]}}))
    with pytest.raises(DataPlanError, match=r"plan\.json: data_points\[0\]"):
        load_data_plan(bad)


def test_errors_derive_from_the_root_error() -> None:
    assert issubclass(DataPlanError, mpf.MParticleFeedError)
    assert issubclass(mpf.DataPlanViolationError, mpf.MParticleFeedError)


def test_core_imports_without_the_extra_and_a_plan_says_what_to_install() -> None:
    # A child process where the two libraries cannot be imported.
    code = (
        "import sys\n"
        "sys.modules['jsonschema'] = None\n"
        "sys.modules['fastjsonschema'] = None\n"
        "import mparticle_feed as mpf\n"
        "try:\n"
        "    mpf.LoadedDataPlan.from_dict({'version_document': {'data_points': []}})\n"
        "except mpf.DataPlanError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "mparticle-feed[dataplans]" in result.stdout
