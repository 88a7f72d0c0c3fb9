"""Rows, mappings and a dying client shared by the sync's tests (test_sync.py,
test_planfile.py, test_exactly_once.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from mparticle_feed import BatchOutcome, EventsClient, UploadReport
from mparticle_feed._mapping.sources import Constant
from mparticle_feed._mapping.spec import CustomEventMapping, UserAttributeMapping
from mparticle_feed.testing import FakeEventsServer

__all__ = [
    "EVENTS",
    "DiesAfterAccept",
    "NOW",
    "PROFILES",
    "check_invariant",
    "event_rows",
    "ms",
    "profile_rows",
    "sent_keys",
]

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


EVENTS = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=Constant("Thing Happened"),
    timestamp_unixtime_ms="ts",
    custom_attributes={"value": "value", "row_id": "id"},
)

PROFILES = UserAttributeMapping(
    primary_key="user",
    user_identities={"customer_id": "user"},
    user_attributes={"plan": "plan", "city": "city", "score": "score"},
)


def event_rows(
    count: int, *, users: int | None = None, age: timedelta = timedelta(hours=1)
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{n:04d}",
            "user": f"u{(n % users) if users else n:04d}",
            "ts": ms(NOW - age),
            "value": n,
        }
        for n in range(count)
    ]


def profile_rows() -> list[dict[str, Any]]:
    return [
        {"user": f"u{n}", "plan": "pro" if n % 2 else "free", "city": "Lyon", "score": n}
        for n in range(6)
    ]


def sent_keys(server: FakeEventsServer, *, start: int = 0) -> list[str]:
    """Primary keys of every event in accepted requests (row_id attribute), in order."""
    keys = []
    for request in server.requests[start:]:
        if not request.accepted:
            continue
        for batch in request.batches or ():
            for event in batch.events or ():
                keys.append(str(event.custom_attributes["row_id"]))  # type: ignore[attr-defined,index]
    return keys


def check_invariant(report: Any) -> None:
    """Every row ends somewhere, and every accepted row was sent or unchanged."""
    assert report.rows_in == report.accepted + report.rejected + report.failed + report.pending
    assert report.accepted == report.sent + report.unchanged


class DiesAfterAccept:
    """A client wrapper: the process "dies" (KeyboardInterrupt) after mParticle answered 202
    for ``after`` batches and before the sync records the next accepted outcome — the
    crash window between a send and its settle. ``crashed_ids`` names the batch it died on.
    """

    def __init__(self, client: EventsClient, after: int = 0) -> None:
        self.client = client
        self.after = after
        self.crashed_ids: list[str] = []
        self.historical_after = client.historical_after
        self.historical_min_age = client.historical_min_age
        self.max_batches = client.max_batches
        self.max_request_bytes = client.max_request_bytes
        self.max_batch_bytes = client.max_batch_bytes

    def send(self, requests: Any, *, on_outcome: Callable[[BatchOutcome], None]) -> UploadReport:
        seen = 0

        def dying(outcome: BatchOutcome) -> None:
            nonlocal seen
            if outcome.status == "accepted":
                seen += 1
                if seen > self.after:
                    self.crashed_ids.append(outcome.source_request_id)
                    raise KeyboardInterrupt
            on_outcome(outcome)

        return self.client.send(requests, on_outcome=dying)
