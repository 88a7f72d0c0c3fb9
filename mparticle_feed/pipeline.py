"""The pipeline's building blocks, for code that composes the stages itself.

:func:`mparticle_feed.sync` and :func:`mparticle_feed.plan` run the whole flow; reach for
these names to run a stage on its own (a custom sender, a test of routing, a benchmark)::

    rows ─▶ map_rows ─▶ SourcedBatch ─▶ route ─▶ RoutedBatch ─▶ pack ─▶ Request ─▶ client

Every stage passes a row it cannot take on as a :class:`RowProblem` (the row's
:class:`RowRef`, the :class:`Stage`, the field and the reason) instead of dropping it.
``docs/architecture.md`` describes each stage and the module that holds it.

A distributed run's pieces are here too, for engines other than Spark and Dask:
:func:`order_columns` (partition and sort by), :class:`PartitionTask` and
:func:`sync_partition` (a task's body), :func:`combine_reports` (on the driver), and
:class:`LimiterService` / :class:`RemoteLimiter` (one rate budget served from the driver)
and :func:`shared_budget` (which serves it, or splits it, for a run's tasks).
"""

from __future__ import annotations

from ._delivery.limiter_service import LimiterService, RemoteLimiter
from ._delivery.packing import PackedBatch, Request, derive_source_request_id, pack
from ._delivery.routing import RoutedBatch, route
from ._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from ._sync.partition import (
    PartitionReport,
    PartitionTask,
    combine_reports,
    order_columns,
    shared_budget,
    sync_partition,
)
from ._sync.send import send_plan
from ._sync.state import InFlightRequest, StateEntry, SyncStart

__all__ = [
    "InFlightRequest",
    "LimiterService",
    "PackedBatch",
    "PartitionReport",
    "PartitionTask",
    "RemoteLimiter",
    "Request",
    "RoutedBatch",
    "RowProblem",
    "RowRef",
    "SourcedBatch",
    "Stage",
    "StateEntry",
    "SyncStart",
    "combine_reports",
    "derive_source_request_id",
    "order_columns",
    "pack",
    "route",
    "send_plan",
    "shared_budget",
    "sync_partition",
]
