from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
# CI explores a fixed sequence of examples, so a landing never hinges on a lucky draw;
# local runs stay random and keep finding new cases.
settings.register_profile(
    "ci", parent=settings.get_profile("default"), max_examples=100, derandomize=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


def _validator() -> Any:
    sys.path.insert(0, str(SHARED / "tools"))
    try:
        from validate_payload import validate
    finally:
        sys.path.pop(0)
    return validate


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """mParticle's published schemas and sample, beside the project (../shared/reference)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"{REFERENCE} is missing: the tests need ../shared/reference beside the repo")
    return REFERENCE


@pytest.fixture(scope="session")
def schema_problems(reference_dir: Path) -> Any:
    """``schema_problems(doc, "2026" | "2021") -> list[str]``: [] when the document is valid."""
    return _validator()
