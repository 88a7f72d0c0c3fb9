"""Rows, a mapping and accounting shared by the sync scenarios (R10-R13, R15)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from builders import NOW
from reliability_kit import Figures

from mparticle_feed._mapping.spec import CustomEventMapping
from mparticle_feed._sync.report import SyncReport
from mparticle_feed.testing import FakeEventsServer

__all__ = [
    "EVENT_MS",
    "MAPPING",
    "event_rows_at_server",
    "good_rows",
    "sqlite_source",
    "sync_figures",
]

EVENT_MS = int(NOW.timestamp() * 1000) - 3_600_000

MAPPING = CustomEventMapping(
    event_name="name",
    primary_key="id",
    user_identities={"customer_id": "user"},
    timestamp_unixtime_ms="ts",
    custom_attributes={"v": "v", "row_id": "id"},
)


def good_rows(n: int, *, users: int = 7, start: int = 1, size: int = 0) -> list[dict[str, Any]]:
    """``n`` valid rows; consecutive rows often share a user; ``size`` pads each row."""
    return [
        {
            "id": i,
            "user": f"user{(i // 3) % users}",
            "name": "order_placed",
            "ts": EVENT_MS + i,
            "v": "é" * size if size else i,
        }
        for i in range(start, start + n)
    ]


def sqlite_source(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write ``rows`` to table ``events`` of an SQLite file (a real DB-API warehouse)."""
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, user TEXT, name TEXT, ts INTEGER, v)"
        )
        db.executemany(
            "INSERT INTO events VALUES (:id, :user, :name, :ts, :v)", [dict(r) for r in rows]
        )
    # the connection context manager commits; close explicitly too
    sqlite3.connect(path).close()


def event_rows_at_server(server: FakeEventsServer, *, accepted_only: bool = True) -> list[int]:
    """The ``row_id`` of every event the server took (with a 2xx, by default), repeats kept."""
    return [
        int(event.custom_attributes["row_id"])  # type: ignore[union-attr, index, arg-type]
        for request in server.requests
        if not accepted_only or request.accepted
        for batch in request.batches or ()
        for event in batch.events or ()
    ]


def sync_figures(
    scenario: str,
    reports: Iterable[SyncReport],
    server: FakeEventsServer | None,
    rows_in: int,
    note: str = "",
) -> Figures:
    """A scorecard row from the last report of a (possibly resumed) run."""
    reports = list(reports)
    last = reports[-1]
    figures = Figures(
        scenario=scenario,
        rows_in=rows_in,
        accepted=last.accepted,
        rejected=last.rejected,
        failed=last.failed,
        pending=last.pending,
        attempts_total=sum(r.requests_sent for r in reports),
        retries={k: sum(r.retries.get(k, 0) for r in reports) for r in reports for k in r.retries},
        note=note,
    )
    if server is not None:
        figures.with_server(server)
    return figures
