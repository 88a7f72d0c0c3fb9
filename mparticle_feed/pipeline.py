"""The pipeline's building blocks, for code that composes the stages itself.

:func:`mparticle_feed.sync` and :func:`mparticle_feed.plan` run the whole flow; reach for
these names to run a stage on its own (a custom sender, a test of routing, a benchmark)::

    rows ─▶ map_rows ─▶ SourcedBatch ─▶ route ─▶ RoutedBatch ─▶ pack ─▶ Request ─▶ client

Every stage passes a row it cannot take on as a :class:`RowProblem` (the row's
:class:`RowRef`, the :class:`Stage`, the field and the reason) instead of dropping it.
``docs/architecture.md`` describes each stage and the module that holds it.
"""

from __future__ import annotations

from ._delivery.packing import PackedBatch, Request, derive_source_request_id, pack
from ._delivery.routing import RoutedBatch, route
from ._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from ._sync.send import send_plan
from ._sync.state import InFlightRequest, StateEntry, SyncStart

__all__ = [
    "InFlightRequest",
    "PackedBatch",
    "Request",
    "RoutedBatch",
    "RowProblem",
    "RowRef",
    "SourcedBatch",
    "Stage",
    "StateEntry",
    "SyncStart",
    "derive_source_request_id",
    "pack",
    "route",
    "send_plan",
]
