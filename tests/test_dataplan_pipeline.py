"""Data plans in the pipeline: a mapping names a plan, batches are tagged and validated per row.

The acceptance tests sync against FakeEventsServer: with ``block`` nothing mParticle would
block is sent and every blocked row is reported with its violation; with ``report``
everything is sent and the same violations are listed.
"""

from __future__ import annotations

import io
import json
import pickle
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed import (
    ConfigurationError,
    DataPlanError,
    DataPlanViolationError,
    LoadedDataPlan,
    MappingError,
    RowError,
    RowViolation,
    StateError,
    ViolationAction,
    ViolationType,
)
from mparticle_feed._cli import main
from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._mapping.files import load_mapping, mapping_from_dict
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.sources import Constant
from mparticle_feed._mapping.spec import CustomEventMapping, UserAttributeMapping
from mparticle_feed._sync.planfile import Plan
from mparticle_feed._sync.run import plan, sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLAN = ROOT / "examples" / "shop_data_plan.json"

BLOCK_ALL = {"event": "block", "event_attribute": "block", "user_attribute": "block"}


def plan_document(
    *, actions: dict[str, str] | None = None, identities: bool = False
) -> dict[str, Any]:
    """A whole plan: version 1 (production, allows everything), version 2 (development)."""
    order = {
        "match": {
            "type": "custom_event",
            "criteria": {"event_name": "Order Placed", "custom_event_type": "transaction"},
        },
        "validator": {
            "type": "json_schema",
            "definition": {
                "properties": {
                    "data": {
                        "type": "object",
                        "additionalProperties": True,
                        "properties": {
                            "custom_attributes": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["order_id"],
                                "properties": {
                                    "order_id": {"type": "string"},
                                    "channel": {"type": "string", "enum": ["web", "store"]},
                                },
                            }
                        },
                    }
                }
            },
        },
    }
    users = {
        "match": {"type": "user_attributes", "criteria": {}},
        "validator": {
            "type": "json_schema",
            "definition": {"additionalProperties": False, "properties": {"tier": {}}},
        },
    }
    points = [order, users]
    if identities:
        points.append(
            {
                "match": {"type": "user_identities", "criteria": {}},
                "validator": {
                    "type": "json_schema",
                    "definition": {
                        "additionalProperties": False,
                        "properties": {"customerid": {"type": "string"}},
                    },
                },
            }
        )
    return {
        "data_plan_id": "shop",
        "data_plan_versions": [
            {
                "version": 1,
                "activated_environment": "production",
                "version_document": {"data_points": [order]},
            },
            {
                "version": 2,
                "activated_environment": "development",
                "version_document": {"data_points": points},
                "settings": {"validation_actions": actions or BLOCK_ALL},
            },
        ],
    }


PLAN = LoadedDataPlan.from_dict(plan_document())


def orders(data_plan: Any = PLAN, **changes: Any) -> CustomEventMapping:
    fields: dict[str, Any] = {
        "primary_key": "id",
        "user_identities": {"customer_id": "user"},
        "event_name": "name",
        "stamp_arrival_time": True,
        "custom_event_type": Constant("transaction"),
        "custom_attributes": {"order_id": "id", "channel": "channel", "coupon": "coupon"},
        "user_attributes": {"tier": "tier", "vip": "vip"},
        "data_plan": data_plan,
    }
    fields.update(changes)
    return CustomEventMapping(**fields)


def order_rows() -> list[dict[str, Any]]:
    """Six rows; rows 3 (unplanned event), 4 (unplanned attribute), 5 (invalid value) and
    6 (an unplanned user attribute, shared by its batch with row 5) break version 2."""
    base = {"name": "Order Placed", "channel": "web", "coupon": None, "tier": "gold", "vip": None}
    return [
        {**base, "id": "o1", "user": "u1"},
        {**base, "id": "o2", "user": "u1"},
        {**base, "id": "o3", "user": "u2", "name": "Wishlist Shared"},
        {**base, "id": "o4", "user": "u2", "coupon": "SPRING"},
        {**base, "id": "o5", "user": "u3", "channel": "phone", "vip": "yes"},
        {**base, "id": "o6", "user": "u3", "vip": "yes"},
    ]


def keyed(violations: list[RowViolation] | tuple[RowViolation, ...]) -> list[tuple[Any, ...]]:
    return [(v.row.primary_key, str(v.violation)) for v in violations]


# --- the mapping names a plan ---------------------------------------------------------------


def test_batches_are_tagged_with_the_version_of_the_mapping_environment() -> None:
    rows = [r for r in order_rows() if r["id"] in ("o1", "o2")]
    batches = list(map_rows(rows, orders()))
    assert [b.batch.context.data_plan for b in batches] == [  # type: ignore[union-attr]
        mpf.DataPlan(plan_id="shop", plan_version=2)
    ]
    production = list(map_rows(rows, orders(environment="production")))
    context = production[0].batch.context
    assert context is not None
    assert context.data_plan == mpf.DataPlan(plan_id="shop", plan_version=1)


def test_tagging_keeps_the_rest_of_a_mapped_context() -> None:
    mapping = orders(context=Constant({"location": {"latitude": 1.5, "longitude": 2.5}}))
    (sourced,) = map_rows(order_rows()[:1], mapping)
    context = sourced.batch.context
    assert context is not None
    assert context.location is not None
    assert context.location.latitude == 1.5
    assert context.data_plan == mpf.DataPlan(plan_id="shop", plan_version=2)


def test_a_plan_that_cannot_tag_or_has_no_active_version_is_refused() -> None:
    untagged = mpf.DataPlanVersion.from_dict({"version_document": {"data_points": []}})
    with pytest.raises(DataPlanError, match="data_plan_id"):
        orders(data_plan=untagged)
    inactive = plan_document()
    for version in inactive["data_plan_versions"]:
        version["activated_environment"] = "none"
    with pytest.raises(DataPlanError, match="active in development"):
        orders(data_plan=LoadedDataPlan.from_dict(inactive))
    with pytest.raises(DataPlanError, match="expected a plan"):
        orders(data_plan=42)


def test_a_mapping_file_names_its_plan_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "shop.json").write_text(json.dumps(plan_document()))
    (tmp_path / "orders.toml").write_text(
        'kind = "custom_event"\nprimary_key = "id"\nevent_name = "name"\n'
        "stamp_arrival_time = true\n"
        'custom_event_type = { const = "transaction" }\n'
        'data_plan = { path = "plans/shop.json", version = 2 }\n'
        '[user_identities]\ncustomer_id = "user"\n'
    )
    mapping = load_mapping(tmp_path / "orders.toml")
    assert mapping.data_plan == PLAN.__class__.from_dict(plan_document(), version=2)
    assert mapping.to_dict()["data_plan"] == {
        "path": str(tmp_path / "plans" / "shop.json"),
        "version": 2,
    }
    as_json = tmp_path / "orders.json"
    as_json.write_text(json.dumps({**mapping.to_dict(), "data_plan": {"path": "plans/shop.json"}}))
    assert load_mapping(as_json).fingerprint() == mapping.fingerprint()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"path": "missing.json"}, "cannot read data plan file"),
        ({"path": "plan.json", "versoin": 2}, "unknown key"),
        ({"path": "plan.json", "version": 7}, "no version 7"),
        ({"path": "plan.json", "version": "2"}, "expected an integer"),
        (3, "must be a table"),
    ],
)
def test_a_bad_data_plan_key_names_the_key(tmp_path: Path, value: Any, message: str) -> None:
    (tmp_path / "plan.json").write_text(json.dumps(plan_document()))
    document = {
        "kind": "custom_event",
        "primary_key": "id",
        "event_name": "name",
        "stamp_arrival_time": True,
        "user_identities": {"customer_id": "user"},
        "data_plan": value,
    }
    with pytest.raises(MappingError, match=rf"^data_plan\b.*{message}"):
        mapping_from_dict(document, base_dir=tmp_path)


def test_the_fingerprint_changes_with_the_plan_tag_and_content_not_the_path(
    tmp_path: Path,
) -> None:
    untagged = orders(data_plan=None)
    fingerprints = {
        untagged.fingerprint(),
        orders().fingerprint(),
        orders(data_plan=LoadedDataPlan.from_dict(plan_document(), version=1)).fingerprint(),
        orders(
            data_plan=LoadedDataPlan.from_dict(plan_document(actions={"event": "allow"}))
        ).fingerprint(),
    }
    assert len(fingerprints) == 4
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(plan_document()))
    assert (
        orders(data_plan=tmp_path / "a.json").fingerprint()
        == orders(data_plan={"path": str(tmp_path / "b.json")}).fingerprint()
        == orders().fingerprint()
    )


def test_tagging_a_sync_with_a_plan_is_a_mapping_change(tmp_path: Path) -> None:
    rows = order_rows()[:2]
    with (
        FakeEventsServer() as server,
        StateStore(tmp_path / "s.sqlite") as state,
        EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as client,
    ):
        assert sync(rows, orders(data_plan=None), client, state=state).sent == 2
        with pytest.raises(StateError, match="different mapping"):
            sync(rows, orders(), client, state=state)
        # The tag changes every row's content: "keep" sends them again, tagged.
        report = sync(rows, orders(), client, state=state, on_mapping_change="keep")
        assert report.sent == 2
        assert report.mapping_changed
        newer = LoadedDataPlan.from_dict(plan_document(), version=1)
        with pytest.raises(StateError):
            sync(rows, orders(data_plan=newer), client, state=state)


def test_a_mapping_with_a_plan_pickles_and_compares_by_content() -> None:
    mapping = orders()
    copy = pickle.loads(pickle.dumps(mapping))
    assert copy == mapping
    assert copy.fingerprint() == mapping.fingerprint()
    run = map_rows(order_rows(), copy)
    list(run)
    assert keyed(run.violations) == keyed(_violations(mapping))


def _violations(mapping: CustomEventMapping, policy: str = "report") -> list[RowViolation]:
    run = map_rows(order_rows(), mapping, data_plan_policy=policy)  # type: ignore[arg-type]
    list(run)
    return run.violations


# --- policies in map_rows -------------------------------------------------------------------


def test_report_keeps_every_row_and_lists_each_violation_with_its_row() -> None:
    run = map_rows(order_rows(), orders())
    batches = list(run)
    assert run.rows_mapped == 6
    assert run.rows_rejected == 0
    assert sum(len(b.batch.events or ()) for b in batches) == 6
    found = {(v.row.primary_key, v.violation.error_type, v.field) for v in run.violations}
    assert found == {
        ("o3", ViolationType.UNPLANNED, None),
        ("o4", ViolationType.UNPLANNED, "custom_attributes.coupon"),
        ("o5", ViolationType.INVALID_VALUE, "custom_attributes.channel"),
        ("o5", ViolationType.UNPLANNED, "user_attributes.vip"),
        ("o6", ViolationType.UNPLANNED, "user_attributes.vip"),
    }
    assert not any(v.dropped for v in run.violations)


def test_block_does_what_mparticle_would_and_rejects_blocked_rows() -> None:
    run = map_rows(order_rows(), orders(), data_plan_policy="block")
    batches = list(run)
    assert run.rows_in == run.rows_mapped + run.rows_rejected == 6
    assert [(p.row.primary_key, str(p.stage), p.field) for p in run.rejected] == [
        ("o3", "data_plan", None)
    ]
    assert "Wishlist Shared" in run.rejected[0].reason
    assert "events[" not in run.rejected[0].reason  # a row has one event: no batch index
    assert "unplanned" in run.rejected[0].reason
    sent = [mpf.to_dict(b.batch) for b in batches]
    events = [e["data"] for batch in sent for e in batch.get("events", ())]
    assert [e["event_name"] for e in events] == ["Order Placed"] * 5
    assert all("coupon" not in e["custom_attributes"] for e in events)
    assert all("vip" not in (batch.get("user_attributes") or {}) for batch in sent)
    # The invalid channel is reported, never blocked: mParticle lets it through.
    assert {e["custom_attributes"]["channel"] for e in events} == {"web", "phone"}
    dropped = {(v.row.primary_key, v.field) for v in run.violations if v.dropped}
    assert dropped == {
        ("o3", None),
        ("o4", "custom_attributes.coupon"),
        ("o5", "user_attributes.vip"),
        ("o6", "user_attributes.vip"),
    }
    assert run.batches_out == len(batches)


def test_block_and_report_find_the_same_violations() -> None:
    assert keyed(_violations(orders(), "block")) == keyed(_violations(orders(), "report"))


def test_a_blocked_batch_rejects_every_row_of_it() -> None:
    blocking = LoadedDataPlan.from_dict(
        plan_document(actions={"user_identity": "block"}, identities=True)
    )
    mapping = orders(data_plan=blocking, user_identities={"customer_id": "user", "email": "email"})
    rows = [
        {**row, "email": "a@example.com" if row["user"] == "u1" else None} for row in order_rows()
    ]
    run = map_rows(rows, mapping, data_plan_policy="block")
    batches = list(run)
    assert {p.row.primary_key for p in run.rejected} == {"o1", "o2"}
    assert {p.field for p in run.rejected} == {"user_identities.email"}
    assert all(b.batch.user_identities.email is None for b in batches)  # type: ignore[union-attr]
    assert run.rows_rejected == 2
    assert run.rows_mapped == 4


def test_strict_raises_on_the_first_violation_naming_the_row() -> None:
    run = map_rows(order_rows(), orders(), data_plan_policy="strict")
    with pytest.raises(DataPlanViolationError) as caught:
        list(run)
    error = caught.value
    assert (error.row_number, error.primary_key) == (3, "o3")
    assert error.violation.error_type is ViolationType.UNPLANNED  # type: ignore[attr-defined]
    assert str(error).startswith("row 3 (primary key 'o3'): events[0]")
    # Rows before the first violation pass.
    assert list(map_rows(order_rows()[:2], orders(), data_plan_policy="strict"))


def test_a_strict_mapping_run_raises_for_a_blocked_row() -> None:
    with pytest.raises(RowError, match="row 3"):
        list(map_rows(order_rows(), orders(), data_plan_policy="block", strict=True))


def test_an_unknown_policy_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="data_plan_policy"):
        map_rows(order_rows(), orders(), data_plan_policy="warn")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="data_plan_policy"):
        map_rows(order_rows(), orders(data_plan=None), data_plan_policy="blok")  # type: ignore[arg-type]


def test_a_user_attribute_sync_leaves_out_blocked_attributes() -> None:
    mapping = UserAttributeMapping(
        user_identities={"customer_id": "user"},
        user_attributes={"tier": "tier", "vip": "vip"},
        data_plan=PLAN,
    )
    rows = [
        {"user": "u1", "tier": "gold", "vip": "yes"},
        {"user": "u2", "tier": "gold", "vip": None},
    ]
    run = map_rows(rows, mapping, data_plan_policy="block")
    assert [b.batch.user_attributes for b in run] == [{"tier": "gold"}, {"tier": "gold"}]
    assert run.rows_rejected == 0
    assert [(v.row.primary_key, v.field, v.dropped) for v in run.violations] == [
        ("u1", "user_attributes.vip", True)
    ]


# --- a property: every row accounted for, nothing blockable sent ----------------------------

ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "user": st.sampled_from(["u1", "u2"]),
            "name": st.sampled_from(["Order Placed", "Refund"]),
            "channel": st.sampled_from(["web", "store", "phone", None]),
            "coupon": st.sampled_from(["SPRING", None]),
            "tier": st.sampled_from(["gold", None]),
            "vip": st.sampled_from(["yes", None]),
        }
    ),
    max_size=12,
).map(lambda rows: [{**row, "id": f"r{n}"} for n, row in enumerate(rows)])


@settings(max_examples=60, deadline=None)
@given(ROWS)
def test_block_sends_nothing_mparticle_would_block_and_accounts_for_every_row(
    rows: list[dict[str, Any]],
) -> None:
    mapping = orders()
    blocked = map_rows(rows, mapping, data_plan_policy="block")
    sent = list(blocked)
    reported = map_rows(rows, mapping)
    everything = list(reported)
    assert keyed(blocked.violations) == keyed(reported.violations)
    version = PLAN.version_for("development")
    for sourced in sent:
        assert not [v for v in version.validate(sourced.batch) if v.blocked]
    rejected = {p.row.row_number for p in blocked.rejected}
    kept = {row.row_number for s in sent for row in s.rows}
    assert rejected.isdisjoint(kept)
    assert rejected | kept == set(range(1, len(rows) + 1))
    assert rejected == {
        v.row.row_number
        for v in blocked.violations
        if v.violation.action in (ViolationAction.BLOCK_EVENT, ViolationAction.BLOCK_BATCH)
    }
    assert sum(len(s.rows) for s in everything) == len(rows)


# --- plan() and sync() against FakeEventsServer ---------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer() as fake:
        yield fake


@pytest.fixture
def client(server: FakeEventsServer) -> Iterator[EventsClient]:
    with EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as events:
        yield events


def sent_documents(server: FakeEventsServer) -> list[dict[str, Any]]:
    return [mpf.to_dict(batch) for batch in server.accepted_batches()]


def test_acceptance_block_sends_none_of_the_blocked_data_and_reports_each_row(
    server: FakeEventsServer, client: EventsClient
) -> None:
    report = sync(order_rows(), orders(), client, data_plan_policy="block")
    assert (report.rows_in, report.sent, report.rejected, report.failed) == (6, 5, 1, 0)
    documents = sent_documents(server)
    events = [e["data"] for d in documents for e in d.get("events", ())]
    assert sorted(e["custom_attributes"]["order_id"] for e in events) == [
        "o1",
        "o2",
        "o4",
        "o5",
        "o6",
    ]
    assert all(e["event_name"] == "Order Placed" for e in events)
    assert all("coupon" not in e["custom_attributes"] for e in events)
    assert all("vip" not in (d.get("user_attributes") or {}) for d in documents)
    assert all(
        d["context"]["data_plan"] == {"plan_id": "shop", "plan_version": 2} for d in documents
    )
    (reject,) = report.rejects
    assert (reject.row.primary_key, str(reject.stage)) == ("o3", "data_plan")
    assert "Wishlist Shared" in reject.reason
    blocked_rows = {v.row.primary_key for v in report.violations if v.dropped}
    assert blocked_rows == {"o3", "o4", "o5", "o6"}
    summary = report.summary()
    assert "data plan" in summary
    assert "5 violation(s) in 4 row(s), 4 dropped" in summary
    assert "rejected row 3 (key o3) at data_plan" in summary
    html = report._repr_html_()
    assert "user_attributes.vip" in html
    assert "dropped" in html


def test_acceptance_report_sends_everything_and_lists_the_same_violations(
    server: FakeEventsServer, client: EventsClient
) -> None:
    report = sync(order_rows(), orders(), client)
    assert (report.sent, report.rejected) == (6, 0)
    documents = sent_documents(server)
    events = [e["data"] for d in documents for e in d.get("events", ())]
    assert len(events) == 6
    assert {"coupon"} <= {key for e in events for key in e["custom_attributes"]}
    assert any("vip" in (d.get("user_attributes") or {}) for d in documents)
    with (
        FakeEventsServer() as other,
        EventsClient("test-key", "test-secret", base_url=other.url, max_workers=1) as second,
    ):
        blocked = sync(order_rows(), orders(), second, data_plan_policy="block")
    assert keyed(report.violations) == keyed(blocked.violations)
    assert not any(v.dropped for v in report.violations)


def test_the_rejects_file_lists_blocked_rows_and_violations(client: EventsClient) -> None:
    report = sync(order_rows(), orders(), client, data_plan_policy="block")
    out = io.StringIO()
    assert report.write_rejects(out) == 1 + 5
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0]["outcome"] == "rejected"
    assert records[0]["stage"] == "data_plan"
    violation = records[2]
    assert violation["outcome"] == "violation"
    assert violation["primary_key"] == "o4"
    assert violation["field"] == "custom_attributes.coupon"
    assert violation["violation"]["pointer"] == "#/data/custom_attributes/coupon"
    assert violation["violation"]["action"] == "block_attribute"
    assert violation["dropped"] is True


def test_a_plan_shows_what_mparticle_would_drop_and_its_file_keeps_the_violations(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path
) -> None:
    reviewed = plan(order_rows(), orders(), data_plan_policy="block")
    assert reviewed.rows_to_send == 5
    assert reviewed.rejected == 1
    assert keyed(reviewed.violations) == keyed(_violations(orders()))
    assert "violation row 4 (key o4) [custom_attributes.coupon]" in reviewed.summary()
    assert "block_attribute" in reviewed._repr_html_()
    path = tmp_path / "plan.jsonl"
    reviewed.write_jsonl(path)
    again = Plan.read_jsonl(path)
    assert again.violations == reviewed.violations
    report = again.send(client)
    assert report.sent == 5
    assert report.violations == reviewed.violations
    via_sync = sync(None, orders(), client, plan=again)
    assert via_sync.violations == reviewed.violations


def test_a_plan_file_with_a_removed_violation_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plan.jsonl"
    plan(order_rows(), orders()).write_jsonl(path)
    lines = path.read_text().splitlines()
    kept = [line for line in lines if '"outcome": "violation"' not in line or "o4" not in line]
    assert len(kept) == len(lines) - 1
    path.write_text("\n".join(kept) + "\n")
    with pytest.raises(mpf.PlanFileError, match="edited"):
        Plan.read_jsonl(path)


def test_a_plan_file_without_a_data_plan_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "plan.jsonl"
    plan(order_rows(), orders(data_plan=None)).write_jsonl(path)
    closing = json.loads(path.read_text().splitlines()[-1])["plan"]
    assert "violations" not in closing


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    path = tmp_path / "shop.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE orders (id TEXT, user TEXT, name TEXT, channel TEXT, coupon TEXT, "
            "tier TEXT, vip TEXT)"
        )
        connection.executemany(
            "INSERT INTO orders VALUES (:id, :user, :name, :channel, :coupon, :tier, :vip)",
            order_rows(),
        )
    connection.close()
    (tmp_path / "shop_plan.json").write_text(json.dumps(plan_document()))
    (tmp_path / "orders.toml").write_text(
        'kind = "custom_event"\nprimary_key = "id"\nevent_name = "name"\n'
        "stamp_arrival_time = true\n"
        'custom_event_type = { const = "transaction" }\n'
        '[user_identities]\ncustomer_id = "user"\n'
        '[custom_attributes.columns]\norder_id = "id"\nchannel = "channel"\n'
        'coupon = "coupon"\n'
        '[user_attributes.columns]\ntier = "tier"\nvip = "vip"\n'
    )
    return tmp_path


def cli_args(folder: Path, *extra: str) -> list[str]:
    return [
        "--db",
        str(folder / "shop.sqlite"),
        "--query",
        "SELECT * FROM orders ORDER BY id",
        "--mapping",
        str(folder / "orders.toml"),
        *extra,
    ]


def test_cli_sync_with_a_data_plan_blocks_and_writes_violations(
    server: FakeEventsServer,
    warehouse: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MPARTICLE_API_KEY", "test-key")
    monkeypatch.setenv("MPARTICLE_API_SECRET", "test-secret")
    out = warehouse / "rejects.jsonl"
    extra = ("--data-plan", str(warehouse / "shop_plan.json"), "--data-plan-policy", "block")
    status = main(
        ["sync", *cli_args(warehouse, *extra, "--base-url", server.url, "--out", str(out))]
    )
    assert status == 1  # a blocked row is a rejected row
    text = capsys.readouterr().out
    assert "5 sent" in text
    assert "5 violation(s) in 4 row(s), 4 dropped" in text
    assert "wrote 1 rejected or failed row(s) and 5 data-plan violation(s)" in text
    outcomes = [json.loads(line)["outcome"] for line in out.read_text().splitlines()]
    assert outcomes == ["rejected"] + ["violation"] * 5
    assert all(
        "coupon" not in e.custom_attributes for b in server.accepted_batches() for e in b.events
    )  # type: ignore[attr-defined,union-attr]


def test_cli_plan_reports_violations_and_strict_stops(
    warehouse: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan_file = str(warehouse / "shop_plan.json")
    assert main(["plan", *cli_args(warehouse, "--data-plan", plan_file)]) == 0
    assert "5 violation(s) in 4 row(s)" in capsys.readouterr().out
    assert (
        main(
            ["plan", *cli_args(warehouse, "--data-plan", plan_file, "--data-plan-policy", "strict")]
        )
        == 1
    )
    assert "DataPlanViolationError: row 3" in capsys.readouterr().err
    version_1 = ("--data-plan", plan_file, "--data-plan-version", "1")
    assert main(["plan", *cli_args(warehouse, *version_1)]) == 0
    # Version 1 blocks nothing: the same rows are listed, nothing is dropped.
    text = capsys.readouterr().out
    assert "3 violation(s) in 3 row(s)\n" in text
    assert "to send          6" in text


@pytest.mark.parametrize(
    "extra",
    [("--data-plan-version", "2"), ("--data-plan", "nowhere.json"), ("--data-plan-policy", "x")],
)
def test_cli_data_plan_usage_errors_exit_2(warehouse: Path, extra: tuple[str, ...]) -> None:
    assert main(["plan", *cli_args(warehouse, *extra)]) == 2


def test_the_shipped_example_plan_works_in_a_mapping() -> None:
    mapping = orders(data_plan=EXAMPLE_PLAN)
    assert attrs.evolve(mapping, environment="production").data_plan is not None
    run = map_rows(order_rows()[:2], mapping)
    assert len(list(run)) == 1


def test_a_commerce_sync_blocks_an_unplanned_product_action() -> None:
    mapping = mpf.CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "user"},
        product_action={"action": "action", "transaction_id": "id"},
        data_plan=EXAMPLE_PLAN,
    )
    rows = [
        {"id": "t1", "user": "u1", "action": "purchase"},
        {"id": "t2", "user": "u1", "action": "refund"},
    ]
    run = map_rows(rows, mapping, data_plan_policy="block")
    (sourced,) = list(run)
    assert [e.product_action.action for e in sourced.batch.events or ()] == [  # type: ignore[attr-defined]
        mpf.ProductActionType.PURCHASE
    ]
    (rejected,) = run.rejected
    assert rejected.row.primary_key == "t2"
    assert "product_action (action='refund')" in rejected.reason


ACTIONS = st.fixed_dictionaries(
    {
        name: st.sampled_from(["allow", "block"])
        for name in ("event", "event_attribute", "user_attribute", "user_identity")
    }
)


@settings(max_examples=40, deadline=None)
@given(ACTIONS, ROWS, st.lists(st.sampled_from(["a@example.com", None]), min_size=2, max_size=2))
def test_every_combination_of_actions_blocks_exactly_what_mparticle_would(
    actions: dict[str, str], rows: list[dict[str, Any]], emails: list[str | None]
) -> None:
    data_plan = LoadedDataPlan.from_dict(plan_document(actions=actions, identities=True))
    mapping = orders(data_plan=data_plan, user_identities={"customer_id": "user", "email": "email"})
    rows = [{**row, "email": emails[row["user"] == "u2"]} for row in rows]
    run = map_rows(rows, mapping, data_plan_policy="block")
    sent = list(run)
    version = data_plan.version_for("development")
    for sourced in sent:
        found = version.validate(sourced.batch)
        assert not [v for v in found if v.blocked]
        # What is sent is what mParticle would keep of it: blocking again changes nothing.
        assert mpf.apply_blocks(sourced.batch, found) is sourced.batch
    kept = {row.row_number for s in sent for row in s.rows}
    rejected = {p.row.row_number for p in run.rejected}
    assert kept.isdisjoint(rejected)
    assert kept | rejected == set(range(1, len(rows) + 1))
    for item in run.violations:
        assert item.dropped == (item.violation.action is not ViolationAction.ALLOW)


def test_an_event_that_cannot_stand_without_a_blocked_attribute_rejects_its_row() -> None:
    # The plan leaves product_action.action unplanned: blocking it leaves no valid event.
    document = {
        "data_plan_id": "p",
        "version": 1,
        "version_document": {
            "data_points": [
                {
                    "match": {"type": "product_action", "criteria": {"action": "purchase"}},
                    "validator": {
                        "type": "json_schema",
                        "definition": {
                            "properties": {
                                "data": {
                                    "type": "object",
                                    "properties": {
                                        "product_action": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {"transaction_id": {}},
                                        }
                                    },
                                }
                            }
                        },
                    },
                }
            ]
        },
        "settings": {"validation_actions": {"event_attribute": "block"}},
    }
    mapping = mpf.CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "user"},
        product_action={"action": "action", "transaction_id": "id"},
        data_plan=LoadedDataPlan.from_dict(document),
    )
    rows = [{"id": "t1", "user": "u", "action": "purchase"}] * 2
    run = map_rows(rows, mapping, data_plan_policy="block")
    assert list(run) == []
    assert [(p.row.row_number, p.field) for p in run.rejected] == [
        (1, "product_action.action"),
        (2, "product_action.action"),
    ]
    assert (run.rows_mapped, run.rows_rejected, run.batches_out) == (0, 2, 0)


def test_cli_send_of_a_plan_file_reports_its_violations(
    server: FakeEventsServer,
    warehouse: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MPARTICLE_API_KEY", "test-key")
    monkeypatch.setenv("MPARTICLE_API_SECRET", "test-secret")
    plan_file = warehouse / "plan.jsonl"
    extra = ("--data-plan", str(warehouse / "shop_plan.json"), "--data-plan-policy", "block")
    assert main(["plan", *cli_args(warehouse, *extra, "--out", str(plan_file))]) == 1
    capsys.readouterr()
    assert main(["send", "--plan", str(plan_file), "--base-url", server.url]) == 1
    text = capsys.readouterr().out
    assert "5 sent" in text
    assert "5 violation(s) in 4 row(s), 4 dropped" in text
    assert len(server.accepted_batches()) == 3
