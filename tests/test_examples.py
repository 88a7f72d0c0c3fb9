"""Every script in examples/ runs to completion (each starts its own FakeEventsServer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {
        "sqlite_warehouse",
        "duckdb_warehouse",
        "user_attributes",
        "historical_backfill",
    } <= names


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rows in" in result.stdout
