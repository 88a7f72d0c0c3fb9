"""Data-plan stage: load mParticle data plans, validate batches as mParticle does, apply its blocks.

Sits between batching and routing: a mapping that names a plan tags its batches with
``context.data_plan`` and validates them before anything is sent.
"""

from __future__ import annotations

from ._blocking import apply_blocks
from ._plan import DataPlanVersion, DataPoint, LoadedDataPlan, load_data_plan
from ._types import DataPlanMatch, ValidationActions, Violation, ViolationAction, ViolationType

__all__ = [
    "DataPlanMatch",
    "DataPlanVersion",
    "DataPoint",
    "LoadedDataPlan",
    "ValidationActions",
    "Violation",
    "ViolationAction",
    "ViolationType",
    "apply_blocks",
    "load_data_plan",
]
