"""Hypothesis settings of the Arrow engine's differential tests: ``ARROW_EXAMPLES`` sets how
many examples each runs (each test's own default otherwise)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["arrow_settings"]


def arrow_settings(default: int) -> settings:
    """Examples from ``ARROW_EXAMPLES`` or ``default``; no deadline (building Arrow tables is
    slow on a shared machine)."""
    return settings(
        max_examples=int(os.environ.get("ARROW_EXAMPLES", str(default))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
