"""Rows, a mapping and a one-process reference shared by the Spark and Dask tests.

Imported by its plain name (its folder is on ``sys.path``, and on the workers' paths), so
objects of this module pickle by reference into Spark and Dask tasks.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from mparticle_feed import (
    BatchOutcome,
    Constant,
    CustomEventMapping,
    EventsClient,
    SyncReport,
    TokenBucket,
    UploadReport,
    sync,
    to_dict,
)
from mparticle_feed.pipeline import (
    order_columns,
)
from mparticle_feed.testing import FakeEventsServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

MAPPING = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user", "email": "email"},
    event_name="name",
    timestamp_unixtime_ms="ts",
    custom_attributes={"amount": "amount", "row_id": "id"},
)

#: Spark's schema of :func:`rows` (DDL).
SPARK_SCHEMA = "id string, user string, email string, name string, ts timestamp, amount long"


def rows(count: int = 3000, users: int = 350) -> list[dict[str, Any]]:
    """Rows in no particular order: some users have many rows (several batches), some
    events are historical (older than 28 days), some amounts are null (a nullable integer
    column), some names are null (rejected at mapping), some e-mails are null."""
    out = []
    for n in range(count):
        user = (n * 7919) % users
        age = timedelta(days=40) if user % 5 == 0 else timedelta(hours=2 + n % 48)
        out.append(
            {
                "id": f"r{(n * 104729) % 1_000_003:07d}",
                "user": f"u{user:04d}",
                "email": None if user % 3 == 0 else f"u{user}@example.com",
                "name": None if n % 97 == 0 else ("View", "Buy", "Share")[n % 3],
                "ts": NOW - age - timedelta(milliseconds=n),
                "amount": None if n % 4 == 0 else (n * 31) - 40_000,
            }
        )
    return out


def sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """(user, primary key) ascending with nulls first: the engines' sort."""
    _, ordering = order_columns(MAPPING)
    return tuple((row[c] is not None, row[c] if row[c] is not None else "") for c in ordering)


def canonical_batches(server: FakeEventsServer) -> dict[str, bytes]:
    """Accepted batches by id, once each (as mParticle de-duplicates), as canonical JSON."""
    return {
        str(batch.source_request_id): orjson.dumps(to_dict(batch), option=orjson.OPT_SORT_KEYS)
        for batch in server.accepted_batches()
    }


def one_process(data: list[dict[str, Any]]) -> tuple[dict[str, bytes], SyncReport]:
    """The reference: one process syncing the rows ordered by (user, key), at ``NOW``."""
    with FakeEventsServer(now=lambda: NOW) as server:
        with EventsClient("test-key", "test-secret", base_url=server.url) as client:
            report = sync(sorted(data, key=sort_key), MAPPING, client, now=NOW)
        return canonical_batches(server), report


class FailOnceAfterSending:
    """A sender that dies after its requests were sent and answered, once per marker file.

    The first task to finish sending raises (as a task lost after sending would); every
    other task, and that task's retry, passes.
    """

    def __init__(self, client: EventsClient, marker: str) -> None:
        self.client = client
        self.marker = marker
        self.historical_after = client.historical_after
        self.historical_min_age = client.historical_min_age
        self.max_batches = client.max_batches
        self.max_request_bytes = client.max_request_bytes
        self.max_batch_bytes = client.max_batch_bytes

    def send(
        self,
        requests: Iterable[Any],
        *,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport:
        report = self.client.send(requests, on_outcome=on_outcome)
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return report
        os.close(descriptor)
        raise RuntimeError("injected failure: the task died after sending")


class DiesAfterSending(FailOnceAfterSending):
    """A sender whose task dies after every send, before any outcome is recorded: the
    answers are lost with it, as when an executor is killed mid-task."""

    def send(
        self,
        requests: Iterable[Any],
        *,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport:
        self.client.send(requests, on_outcome=lambda outcome: None)
        raise RuntimeError("injected failure: the task died after sending")


__all__ = [
    "BUDGET_BATCHES",
    "MAPPING",
    "NOW",
    "SPARK_SCHEMA",
    "CountingBucket",
    "DiesAfterSending",
    "FailOnceAfterSending",
    "budget_rows",
    "canonical_batches",
    "check_shared_budget",
    "one_process",
    "rows",
    "sort_key",
]


class CountingBucket(TokenBucket):
    """The driver's limiter, counting the batches it metered: tasks that share its budget
    reserve through it; tasks on a static split never do."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.metered = 0

    def acquire(self, batches: int) -> float:
        self.metered += batches
        return super().acquire(batches)


#: The shared-budget case: one user a row, so one batch a row, against a fake allowing
#: 400 batches a second. A static split paces each of 4 tasks at 100/s, so two running
#: tasks reach half the limit; one budget lets them use it all.
BUDGET_BATCHES = 2000
BUDGET_MAPPING = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=Constant("View"),
    timestamp_unixtime_ms="ts",
)


def budget_rows() -> list[dict[str, Any]]:
    return [{"id": f"r{n:05d}", "user": f"u{n:05d}", "ts": NOW} for n in range(BUDGET_BATCHES)]


def check_shared_budget(engine_sync: Callable[..., Any], frame: Any) -> None:
    """Sync ``frame`` (:func:`budget_rows`) through ``engine_sync`` in 4 partitions and check
    every task metered its batches through the driver's one budget."""
    budget = CountingBucket(400.0)
    with (
        FakeEventsServer(now=lambda: NOW, rate_limit=400.0) as server,
        EventsClient(
            "test-key", "test-secret", base_url=server.url, rate_limit=budget, max_batches=20
        ) as client,
    ):
        result = engine_sync(frame, BUDGET_MAPPING, client, partitions=4, now=NOW)
        requests = server.requests
    result.raise_for_failures()
    assert len(server.accepted_batches()) == BUDGET_BATCHES
    statuses = Counter(request.status for request in requests)
    assert statuses[429] <= 0.02 * len(requests) + 1
    # A static split would leave the driver's budget untouched; the rate achieved is the
    # benchmark's to measure, not a test's.
    assert budget.metered >= BUDGET_BATCHES
