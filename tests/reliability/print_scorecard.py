"""Print the reliability scorecard as a table.

Usage: ``python tests/reliability/print_scorecard.py [path]``; the path defaults to
``$MPF_SCORECARD`` or ``scorecard.json`` at the repository root. Exits 1 when the file is
missing or a scenario broke the invariant rows in = accepted + rejected + failed + pending.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("rows_in", "rows"),
    ("accepted", "acc"),
    ("rejected", "rej"),
    ("failed", "fail"),
    ("pending", "pend"),
    ("invariant_holds", "inv"),
    ("requests_sent", "reqs"),
    ("attempts_total", "tries"),
    ("retries", "retries by cause"),
    ("sleeps", "sleeps"),
    ("slept_seconds", "slept s"),
    ("ids_sent_more_than_once", "ids>1"),
    ("unique_ids_at_server", "ids"),
    ("max_request_bytes", "max req B"),
    ("max_batch_bytes", "max batch B"),
    ("open_connections_after", "conns"),
)


def _cell(key: str, value: Any) -> str:
    if key == "retries":
        return ", ".join(f"{k}:{v}" for k, v in sorted(value.items())) or "-"
    if key == "invariant_holds":
        return "ok" if value else "BROKEN"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width table, one line per scenario."""
    table = [[title for _, title in COLUMNS]]
    table += [[_cell(key, row.get(key, "")) for key, _ in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = []
    for n, line in enumerate(table):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {row['scenario']}: {row['note']}" for row in rows if row.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    default = Path(__file__).resolve().parents[2] / "scorecard.json"
    path = Path(argv[1]) if len(argv) > 1 else Path(os.environ.get("MPF_SCORECARD") or default)
    if not path.is_file():
        print(f"no scorecard at {path}: run `pytest tests/reliability` first", file=sys.stderr)
        return 1
    rows = json.loads(path.read_text(encoding="utf-8"))["scenarios"]
    print(f"reliability scorecard ({path.name}, {len(rows)} scenarios)")
    print(render(rows))
    broken = [row["scenario"] for row in rows if not row.get("invariant_holds")]
    if broken:
        print(f"invariant broken in: {', '.join(broken)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
