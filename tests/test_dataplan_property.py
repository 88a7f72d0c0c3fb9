"""Property tests: data drawn from a plan validates against it; violating data never does."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

import mparticle_feed as mpf
from mparticle_feed import DataPlanVersion, LoadedDataPlan, load_data_plan
from mparticle_feed.testing import strategies as mps

EXAMPLE_PLAN = Path(__file__).resolve().parents[1] / "examples" / "shop_data_plan.json"
HAND_WRITTEN = load_data_plan(EXAMPLE_PLAN)


@given(mps.batches(data_plan=HAND_WRITTEN, min_events=1))
def test_batches_from_a_hand_written_plan_validate(batch: mpf.Batch) -> None:
    assert HAND_WRITTEN.validate(batch) == []
    assert batch.context is not None
    assert batch.context.data_plan is not None
    assert batch.context.data_plan.plan_id == "shop_plan"


@given(st.data())
def test_batches_from_generated_plans_validate(data: st.DataObject) -> None:
    version = data.draw(mps.data_plan_versions())
    batch = data.draw(mps.batches(data_plan=version, min_events=1, max_events=3))
    assert version.validate(batch) == []
    # The plan survives its own export format.
    assert DataPlanVersion.from_dict(version.to_dict()) == version


@given(mps.violating_batches(HAND_WRITTEN))
def test_violating_batches_break_the_hand_written_plan(batch: mpf.Batch) -> None:
    assert HAND_WRITTEN.validate(batch) != []


@given(st.data())
def test_violating_batches_break_generated_plans(data: st.DataObject) -> None:
    version = data.draw(mps.data_plan_versions())
    batch = data.draw(mps.violating_batches(version))
    assert version.validate(batch) != []


@settings(max_examples=30)
@given(mps.events(data_plan=HAND_WRITTEN, environment=mpf.Environment.DEVELOPMENT))
def test_events_from_a_plan_are_planned(event: mpf.Event) -> None:
    batch = mpf.Batch(events=[event], environment="development")
    # The batch has no identities yet: only the event's own violations count here.
    assert [v for v in HAND_WRITTEN.validate(batch) if v.event_index is not None] == []


def test_every_planned_event_can_be_drawn() -> None:
    version = HAND_WRITTEN.version_for("development")
    seen: set[str] = set()

    @settings(max_examples=80, database=None)
    @given(mps.events(data_plan=version))
    def collect(event: mpf.Event) -> None:
        seen.add(type(event).__name__)

    collect()
    assert seen == {"CustomEvent", "CommerceEvent"}


def test_plan_options_do_not_mix_with_event_options() -> None:
    with pytest.raises(InvalidArgument, match="shapes the events"):
        mps.batches(data_plan=HAND_WRITTEN, event_strategy=mps.custom_events()).example()


def test_a_whole_plan_is_drawn_only_in_environments_with_an_active_version() -> None:
    only_prod = LoadedDataPlan(versions=(HAND_WRITTEN.versions[0],), plan_id="shop_plan")
    assert only_prod.version_for("production").version == 1
