"""Running an upload against the fake server and turning what happened into figures."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from reliability_kit import API_KEY, API_SECRET, Figures, secret_leaks

from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._delivery.report import UploadReport
from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._mapping.provenance import RowRef, SourcedBatch
from mparticle_feed.testing import FakeClock, FakeEventsServer

__all__ = ["client_for", "figures_for", "non_server_threads", "row_statuses"]

#: Worst first: a row that travelled in several parts takes the worst of their outcomes.
_SEVERITY = {"rejected": 3, "failed": 2, "pending": 1, "accepted": 0}


def client_for(
    server: FakeEventsServer, clock: FakeClock | None = None, **options: Any
) -> EventsClient:
    """A client aimed at ``server``; with ``clock``, every wait is on the fake clock."""
    settings: dict[str, Any] = {
        "base_url": server.url,
        "timeout": 0.3,
        "connect_timeout": 0.3,
        "max_workers": 1,
        "retry": RetryPolicy(initial_backoff=0.5, max_backoff=30.0),
        "rate_limit": None,  # the faults are the subject; pacing has tests of its own
    }
    if clock is not None:
        settings.update(clock=clock.monotonic, sleep=clock.sleep, random=lambda: 0.5)
    settings.update(options)
    return EventsClient(API_KEY, API_SECRET, **settings)


def row_statuses(report: UploadReport) -> dict[RowRef, str]:
    """Each row's outcome: the worst of the outcomes of the batches it travelled in."""
    statuses: dict[RowRef, str] = {}

    def note(row: RowRef, status: str) -> None:
        old = statuses.get(row)
        if old is None or _SEVERITY[status] > _SEVERITY[old]:
            statuses[row] = status

    for outcome in report.outcomes:
        for row in outcome.rows:
            note(row, outcome.status)
    for problem in report.problems:
        note(problem.row, "rejected")
    return statuses


def figures_for(
    scenario: str,
    rows: Iterable[SourcedBatch] | set[RowRef],
    report: UploadReport,
    server: FakeEventsServer | None = None,
    clock: FakeClock | None = None,
    note: str = "",
) -> Figures:
    """The scorecard row of one upload; rows the report does not mention count nowhere."""
    wanted = rows if isinstance(rows, set) else {r for b in rows for r in b.rows}
    statuses = row_statuses(report)
    unknown = set(statuses) - wanted
    assert not unknown, f"the report names {len(unknown)} rows that were never input"
    tally = {"accepted": 0, "rejected": 0, "failed": 0, "pending": 0}
    for row in wanted:
        if row in statuses:
            tally[statuses[row]] += 1
    figures = Figures(
        scenario=scenario,
        rows_in=len(wanted),
        attempts_total=report.attempts_total,
        retries=dict(report.retries),
        note=note,
        **tally,
    )
    for text in (
        repr(report),
        *map(repr, report.outcomes),
        *(o.reason or "" for o in report.outcomes),
    ):
        assert not secret_leaks(text), "the API secret appeared in the report"
    if server is not None:
        figures.with_server(server)
    if clock is not None:
        figures.with_clock(clock)
    return figures


def non_server_threads() -> set[threading.Thread]:
    """Live threads other than the fake servers' own."""
    return {t for t in threading.enumerate() if not t.name.startswith("fake-events-server")}
