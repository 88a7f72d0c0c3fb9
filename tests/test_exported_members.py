"""The public surface: a sorted ``__all__`` that holds every name of the API contract below."""

from __future__ import annotations

import mparticle_feed

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
        "rows_from_cursor", "CustomEventMapping", "CommerceEventMapping",
        "UserAttributeMapping", "load_mapping", "map_rows",
        # delivery
        "EventsClient",
        # sync and reports
        "plan", "sync", "Plan", "SyncReport", "UploadReport",
        # data plans
        "load_data_plan", "LoadedDataPlan", "DataPlanVersion", "Violation", "RowViolation",
        "DataPlanPolicy", "DataPlanError", "DataPlanViolationError",
        # errors
        "MParticleFeedError",
    }
)  # fmt: skip


def test_all_is_sorted() -> None:
    assert mparticle_feed.__all__ == sorted(mparticle_feed.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(set(mparticle_feed.__all__)) == len(mparticle_feed.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in mparticle_feed.__all__ if not hasattr(mparticle_feed, name)]
    assert missing == []


def test_public_names_are_exported_where_defined() -> None:
    exported = {
        name
        for name, value in vars(mparticle_feed).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("mparticle_feed")
    }
    assert exported <= set(mparticle_feed.__all__)


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
