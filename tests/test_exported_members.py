"""The public surface: a sorted ``__all__`` that holds every name of the API contract below.

The top level holds what a user types; ``mparticle_feed.pipeline`` holds the building blocks
of the flow, with its own contract. A name lives in one of the two, never both.
"""

from __future__ import annotations

from types import ModuleType

import pytest

import mparticle_feed
import mparticle_feed.pipeline
import mparticle_feed.testing

# The public API contract: names users and tests rely on. Add names; never rename or drop one
# (0.1.0.dev0 was never released; from the first release on a removal needs a deprecation).
CONTRACT = frozenset(
    {
        # models
        "Batch", "CustomEvent", "CommerceEvent", "ScreenViewEvent", "SessionStartEvent",
        "SessionEndEvent", "UserAttributeChangeEvent", "UserIdentityChangeEvent", "OptOutEvent",
        "PushRegistrationEvent", "PushMessageEvent", "ApplicationStateTransitionEvent",
        "BreadcrumbEvent", "CrashReportEvent", "NetworkPerformanceEvent", "FirstRunEvent",
        "UninstallEvent", "ProfileEvent", "ProductAction", "Product", "PromotionAction",
        "Promotion", "ProductImpression", "ShoppingCart", "UserIdentities", "DeviceInfo",
        "ApplicationInfo", "Location", "DeviceCurrentState", "Context", "DataPlan",
        "ConsentState", "ConsentPurpose",
        # enums
        "Environment", "CustomEventType", "ProductActionType", "PromotionActionType",
        "IdentityType",
        # codec
        "dumps", "loads", "to_dict", "from_dict",
        # rows and mapping (one mapping class per sync kind)
        "rows_from_cursor", "rows_from", "Rows", "CustomEventMapping", "CommerceEventMapping",
        "UserAttributeMapping", "load_mapping", "map_rows",
        "ScreenViewEventMapping", "EventMapping",
        # delivery
        "EventsClient", "RateLimiter", "TokenBucket",
        # sync and reports
        "plan", "sync", "Plan", "SyncReport", "UploadReport",
        # data plans
        "load_data_plan", "LoadedDataPlan", "DataPlanVersion", "Violation", "RowViolation",
        "DataPlanPolicy", "DataPlanError", "DataPlanViolationError",
        # distributed runs (the engines are the optional modules mparticle_feed.spark/.dask)
        "DistributedReport",
        # pluggable state (issue 17): the protocol the sync core calls
        "SyncState", "TableState", "sqlite_to_table", "table_to_sqlite",
        # errors
        "MParticleFeedError",
        # the protocols and aliases of the public signatures
        "Cursor", "RowSource", "Sender", "Progress", "MappingChange",
        # exactly once (issue 11): a refused plan, a sync already running
        "PlanRefusedError", "StateLockedError",
    }
)  # fmt: skip

#: ``mparticle_feed.pipeline``: the stages' building blocks (most moved from the top level in 0.1).
PIPELINE_CONTRACT = frozenset(
    {
        "route", "RoutedBatch", "pack", "PackedBatch", "Request", "derive_source_request_id",
        "SourcedBatch", "RowRef", "RowProblem", "Stage",
        "send_plan", "StateEntry", "SyncStart", "InFlightRequest",
        # a distributed run's pieces, for engines other than Spark and Dask
        "sync_partition", "PartitionTask", "PartitionReport", "combine_reports",
        "order_columns", "LimiterService", "RemoteLimiter", "shared_budget",
    }
)  # fmt: skip

#: ``mparticle_feed.testing``: the test kit (its strategies are a submodule of their own).
TESTING_CONTRACT = frozenset(
    {"FakeClock", "FakeEventsServer", "PerBody", "ReceivedRequest", "Reply", "Responder"}
)

MODULES = [mparticle_feed, mparticle_feed.pipeline, mparticle_feed.testing]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted(module: ModuleType) -> None:
    assert module.__all__ == sorted(module.__all__)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_has_no_duplicates(module: ModuleType) -> None:
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_public_names_are_exported_where_defined(module: ModuleType) -> None:
    exported = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, ModuleType)
        and getattr(value, "__module__", "").startswith("mparticle_feed")
    }
    assert exported <= set(module.__all__)


def test_pipeline_contract_is_exported_there_and_only_there() -> None:
    assert sorted(PIPELINE_CONTRACT - set(mparticle_feed.pipeline.__all__)) == []
    assert sorted(set(mparticle_feed.pipeline.__all__) & set(mparticle_feed.__all__)) == []
    assert sorted(PIPELINE_CONTRACT & set(dir(mparticle_feed))) == []


def test_testing_contract_is_exported() -> None:
    assert sorted(TESTING_CONTRACT - set(mparticle_feed.testing.__all__)) == []


def test_every_contract_name_is_exported() -> None:
    missing = sorted(CONTRACT - set(mparticle_feed.__all__))
    assert missing == [], f"in the public API contract, not exported: {missing}"


def test_the_client_uploads() -> None:
    assert callable(mparticle_feed.EventsClient.upload)


# Names issue 15 (data plans) adds; DESIGN.md lists them among the names the open issues add.
DATA_PLAN_NAMES = {
    "DataPlanError",
    "DataPlanMatch",
    "DataPlanVersion",
    "DataPlanViolationError",
    "DataPoint",
    "LoadedDataPlan",
    "ValidationActions",
    "Violation",
    "ViolationAction",
    "ViolationType",
    "apply_blocks",
    "load_data_plan",
}


def test_data_plan_names_are_exported() -> None:
    assert sorted(DATA_PLAN_NAMES - set(mparticle_feed.__all__)) == []
