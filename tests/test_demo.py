from __future__ import annotations

import io
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

from mparticle_feed._demo import DEMO_SYNCS, build_warehouse, demo_mapping_path, run_demo
from mparticle_feed._mapping.files import load_mapping

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_warehouse_has_bad_rows_and_old_events(tmp_path: Path) -> None:
    path = build_warehouse(tmp_path / "shop.sqlite", now=NOW)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 41
    cutoff = (NOW - timedelta(days=28)).isoformat(timespec="seconds")
    old = conn.execute("SELECT count(*) FROM orders WHERE ordered_at < ?", (cutoff,)).fetchone()[0]
    assert old > 0
    assert (
        conn.execute("SELECT count(*) FROM page_views WHERE viewed_at IS NULL").fetchone()[0] == 1
    )
    # Same seed, same rows.
    again = build_warehouse(tmp_path / "again.sqlite", now=NOW)
    rows = sqlite3.connect(again).execute("SELECT * FROM orders ORDER BY order_id").fetchall()
    assert rows == conn.execute("SELECT * FROM orders ORDER BY order_id").fetchall()


def test_demo_mappings_load() -> None:
    kinds = {load_mapping(demo_mapping_path(filename)).kind.value for _, filename, _ in DEMO_SYNCS}
    assert kinds == {"custom_event", "commerce_event", "user_attributes"}


def test_run_demo_counts_add_up(tmp_path: Path) -> None:
    out = io.StringIO()
    reports = run_demo(tmp_path, out=out, now=NOW)
    text = out.getvalue()
    assert [r.kind for r in reports] == ["user_attributes", "commerce_event", "custom_event"]
    for report in reports:
        assert report.rows_in == report.accepted + report.rejected + report.failed + report.pending
        assert report.failed == report.pending == 0
    assert sum(r.rejected for r in reports) == 5
    assert sum(r.historical_rows() for r in reports) > 0
    assert sum(r.live_rows() for r in reports) > 0
    match = re.search(r"total: (\d+) rows in = (\d+) accepted .* \+ (\d+) rejected", text)
    assert match is not None
    rows_in, accepted, rejected = map(int, match.groups())
    assert rows_in == accepted + rejected
    assert "second pass: 0" in text
    assert "not valid JSON" in text
    assert (tmp_path / "shop.sqlite").exists()
