"""mparticle_feed: rows from any SQL warehouse to mParticle's Events API.

Typed wire models, a row-mapping layer, and a client that delivers batches to
``/v2/bulkevents`` (or ``/v2/bulkevents/historical`` for events older than 28 days).

The top level holds what a user types; the pipeline's building blocks (routing, packing,
provenance, the state store's records) live in :mod:`mparticle_feed.pipeline`.
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

from ._dataplan import (
    DataPlanMatch,
    DataPlanVersion,
    DataPoint,
    LoadedDataPlan,
    ValidationActions,
    Violation,
    ViolationAction,
    ViolationType,
    apply_blocks,
    load_data_plan,
)
from ._delivery.client import PODS, EventsClient
from ._delivery.limiter import RateLimiter, TokenBucket
from ._delivery.report import BatchOutcome, OutcomeStatus, UploadReport
from ._delivery.retry import RetryPolicy
from ._delivery.routing import Endpoint
from ._errors import (
    ConfigurationError,
    DataPlanError,
    DataPlanViolationError,
    DeliveryError,
    MappingError,
    ModelError,
    MParticleFeedError,
    PayloadError,
    PlanFileError,
    PlanRefusedError,
    RowError,
    StateError,
    StateLockedError,
    UploadConfigurationError,
)
from ._mapping.dataplan_step import DataPlanPolicy, RowViolation
from ._mapping.files import load_mapping, mapping_from_dict
from ._mapping.run import MappingRun, map_rows
from ._mapping.sources import (
    RESERVED_USER_ATTRIBUTES,
    Attributes,
    Column,
    Computed,
    Constant,
    ListOf,
    Source,
    Struct,
    SyncKind,
)
from ._mapping.spec import (
    CommerceEventMapping,
    CustomEventMapping,
    EventMapping,
    RowMapping,
    ScreenViewEventMapping,
    UserAttributeMapping,
)
from ._source.coerce import EpochUnit
from ._source.rows import Cursor, Rows, RowSource, rows_from_cursor
from ._source.sources import rows_from
from ._sync.convert import sqlite_to_table, table_to_sqlite
from ._sync.partition import DistributedReport
from ._sync.planfile import Plan, PlannedRequest
from ._sync.protocol import SyncState
from ._sync.report import SyncReport
from ._sync.run import plan, sync
from ._sync.send import Progress, Sender
from ._sync.state import MappingChange, StateStore
from ._sync.tablestate import TableState
from ._wire.codec import dumps, from_dict, loads, to_dict
from ._wire.commerce import (
    Product,
    ProductAction,
    ProductImpression,
    Promotion,
    PromotionAction,
    ShoppingCart,
)
from ._wire.common import (
    ApplicationInfo,
    AttributionInfo,
    ConsentPurpose,
    ConsentState,
    Context,
    DataPlan,
    DeviceCurrentState,
    DeviceInfo,
    EventSystemNotificationInfo,
    Location,
    UserIdentities,
    UserIdentity,
)
from ._wire.enums import (
    ApplicationOS,
    ApplicationState,
    ApplicationTransitionType,
    AttAuthorizationStatus,
    CommerceEventType,
    CustomEventType,
    DeviceOrientation,
    DevicePlatform,
    Environment,
    EventType,
    IdentityType,
    LocationSource,
    ProductActionType,
    ProfileEventType,
    PromotionActionType,
    PushMessageBehavior,
    PushMessageType,
    SystemNotificationType,
)
from ._wire.models import (
    ApplicationStateTransitionEvent,
    Batch,
    BreadcrumbEvent,
    CommerceEvent,
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

try:
    __version__ = version("mparticle-feed")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ApplicationInfo",
    "ApplicationOS",
    "ApplicationState",
    "ApplicationStateTransitionEvent",
    "ApplicationTransitionType",
    "AttAuthorizationStatus",
    "Attributes",
    "AttributionInfo",
    "Batch",
    "BatchOutcome",
    "BreadcrumbEvent",
    "Column",
    "CommerceEvent",
    "CommerceEventMapping",
    "CommerceEventType",
    "Computed",
    "ConfigurationError",
    "ConsentPurpose",
    "ConsentState",
    "Constant",
    "Context",
    "CrashReportEvent",
    "Cursor",
    "CustomEvent",
    "CustomEventMapping",
    "CustomEventType",
    "DataPlan",
    "DataPlanError",
    "DataPlanMatch",
    "DataPlanPolicy",
    "DataPlanVersion",
    "DataPlanViolationError",
    "DataPoint",
    "DeliveryError",
    "DeviceCurrentState",
    "DeviceInfo",
    "DeviceOrientation",
    "DevicePlatform",
    "DistributedReport",
    "Endpoint",
    "Environment",
    "EpochUnit",
    "Event",
    "EventMapping",
    "EventSystemNotificationInfo",
    "EventType",
    "EventsClient",
    "FirstRunEvent",
    "IdentityType",
    "ListOf",
    "LoadedDataPlan",
    "Location",
    "LocationSource",
    "MParticleFeedError",
    "MappingChange",
    "MappingError",
    "MappingRun",
    "ModelError",
    "NetworkPerformanceEvent",
    "OptOutEvent",
    "OutcomeStatus",
    "PODS",
    "PayloadError",
    "Plan",
    "PlanFileError",
    "PlanRefusedError",
    "PlannedRequest",
    "Product",
    "ProductAction",
    "ProductActionType",
    "ProductImpression",
    "ProfileEvent",
    "ProfileEventType",
    "Progress",
    "Promotion",
    "PromotionAction",
    "PromotionActionType",
    "PushMessageBehavior",
    "PushMessageEvent",
    "PushMessageType",
    "PushRegistrationEvent",
    "RESERVED_USER_ATTRIBUTES",
    "RateLimiter",
    "RetryPolicy",
    "RowError",
    "RowMapping",
    "RowSource",
    "RowViolation",
    "Rows",
    "ScreenViewEvent",
    "ScreenViewEventMapping",
    "Sender",
    "SessionEndEvent",
    "SessionStartEvent",
    "ShoppingCart",
    "Source",
    "StateError",
    "StateLockedError",
    "StateStore",
    "Struct",
    "SyncKind",
    "SyncReport",
    "SyncState",
    "SystemNotificationType",
    "TableState",
    "TokenBucket",
    "UninstallEvent",
    "UploadConfigurationError",
    "UploadReport",
    "UserAttributeChangeEvent",
    "UserAttributeMapping",
    "UserIdentities",
    "UserIdentity",
    "UserIdentityChangeEvent",
    "ValidationActions",
    "Violation",
    "ViolationAction",
    "ViolationType",
    "__version__",
    "apply_blocks",
    "dumps",
    "from_dict",
    "load_data_plan",
    "load_mapping",
    "loads",
    "map_rows",
    "mapping_from_dict",
    "plan",
    "rows_from",
    "rows_from_cursor",
    "sqlite_to_table",
    "sync",
    "table_to_sqlite",
    "to_dict",
]
