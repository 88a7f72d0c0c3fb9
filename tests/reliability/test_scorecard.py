"""The scorecard does what the scenarios rely on: it refuses a broken invariant, and prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_kit import Figures, Scorecard

HERE = Path(__file__).resolve().parent


def test_the_scorecard_refuses_a_broken_invariant_and_prints(tmp_path: Path) -> None:
    card = Scorecard()
    with pytest.raises(AssertionError, match="rows in 3"):
        card.record(Figures(scenario="R0 broken", rows_in=3, accepted=2))
    card.record(Figures(scenario="R2 demo", rows_in=3, accepted=2, rejected=1, retries={"503": 1}))
    card.record(Figures(scenario="R10 demo", rows_in=1, failed=1))
    path = card.write(tmp_path / "card.json")
    assert [r["scenario"] for r in json.loads(path.read_text())["scenarios"]] == [
        "R2 demo",
        "R10 demo",
    ]
    done = subprocess.run(
        [sys.executable, str(HERE / "print_scorecard.py"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "R2 demo" in done.stdout
    assert "503:1" in done.stdout
