"""Delivering packed requests of a sync or a plan and settling their rows in the state."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._delivery.packing import Request
from .._delivery.report import BatchOutcome, UploadReport
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from .report import SyncReport
from .state import MappingChange, StateEntry, StateStore, SyncStart
from .status import _ACCEPTED, _FAILED, _PENDING, _REJECTED, _STATUS_CODE, _UNCHANGED, _UNSEEN

if TYPE_CHECKING:
    from .planfile import Plan

__all__ = ["Progress", "Sender", "send_plan"]

logger = logging.getLogger(__name__)


StateArg = StateStore | str | os.PathLike[str] | None


@attrs.frozen(kw_only=True)
class Progress:
    """Where a running sync is: rows read so far and how many batches settled."""

    rows_read: int
    batches_accepted: int
    batches_other: int
    requests_handed_out: int
    elapsed_seconds: float


def _open_state(state: StateArg) -> tuple[StateStore | None, bool]:
    if state is None or isinstance(state, StateStore):
        return state, False
    return StateStore(state), True


class _Statuses:
    """Per row number, the worst outcome seen; one byte per row."""

    def __init__(self, initial: bytes = b"") -> None:
        self.codes = bytearray(initial)

    def mark(self, row: RowRef, code: int) -> None:
        index = row.row_number
        if index >= len(self.codes):
            self.codes.extend(b"\x00" * max(index + 1 - len(self.codes), len(self.codes)))
        self.codes[index] = max(self.codes[index], code)

    def counts(self, rows_in: int) -> Counter[int]:
        counts: Counter[int] = Counter(self.codes[1 : rows_in + 1])
        counts[_UNSEEN] += max(rows_in - max(len(self.codes) - 1, 0), 0)
        return counts


class _Delivery:
    """The delivery half: hands requests to the client and records every outcome."""

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        store: StateStore | None,
        statuses: _Statuses,
        entries: dict[int, StateEntry],
        stop: threading.Event | None,
        progress: Callable[[Progress], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.kind = kind
        self.store = store
        self.statuses = statuses
        self.entries = entries
        self.stop = stop
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.failures: list[RowProblem] = []
        self.delivery_rejects: list[RowProblem] = []
        self.by_endpoint: dict[str, Counter[str]] = {}
        self.batches: Counter[str] = Counter()
        self.handed_out = 0
        self.stopped: str | None = None
        self.rows_read: Callable[[], int] = lambda: 0

    def feed(self, requests: Iterable[Request]) -> Iterator[Request]:
        for request in requests:
            if self.stop is not None and self.stop.is_set():
                self.stopped = "stop was requested"
                logger.info("sync %r: stop requested; remaining rows stay pending", self.name)
                return
            if self.store is not None:
                self.store.mark_in_flight(
                    self.name,
                    [
                        (b.source_request_id, str(request.endpoint), len(b.sourced.rows))
                        for b in request.batches
                    ],
                )
            self.handed_out += 1
            yield request

    def on_outcome(self, outcome: BatchOutcome) -> None:
        code = _STATUS_CODE[outcome.status]
        self.batches[outcome.status] += 1
        counts = self.by_endpoint.setdefault(str(outcome.endpoint), Counter())
        counts[outcome.status] += len(outcome.rows)
        for row in outcome.rows:
            self.statuses.mark(row, code)
        owned = _owned_rows(outcome.sourced) if outcome.sourced is not None else outcome.rows
        accepted: list[StateEntry] = []
        for row in owned:
            entry = self.entries.pop(row.row_number, None)
            if entry is not None and outcome.status == "accepted":
                accepted.append(entry)
        if outcome.status in ("rejected", "failed"):
            target = self.delivery_rejects if outcome.status == "rejected" else self.failures
            for row in outcome.rows:
                target.append(
                    RowProblem(
                        row=row,
                        stage=Stage.DELIVERY,
                        reason=outcome.reason or outcome.status,
                        status=outcome.http_status,
                        body=outcome.response_body,
                        source_request_id=outcome.source_request_id,
                    )
                )
        if self.store is not None and outcome.status != "pending":
            self.store.settle(
                self.name, source_request_id=outcome.source_request_id, accepted=accepted
            )
        if self.progress is not None:
            self.progress(
                Progress(
                    rows_read=self.rows_read(),
                    batches_accepted=self.batches["accepted"],
                    batches_other=sum(self.batches.values()) - self.batches["accepted"],
                    requests_handed_out=self.handed_out,
                    elapsed_seconds=self.clock() - self.started,
                )
            )


def _report(
    *,
    delivery: _Delivery,
    rows_in: int,
    pre_rejects: list[RowProblem],
    upload: Any,
    start: SyncStart | None,
) -> SyncReport:
    counts = delivery.statuses.counts(rows_in)
    stopped = delivery.stopped or getattr(upload, "stopped", None)
    unsettled = counts[_UNSEEN]
    failures = list(delivery.failures)
    if unsettled and not stopped:
        # Never expected; still, no row may vanish from the report.
        logger.error("sync %r: %d rows ended without an outcome", delivery.name, unsettled)
        failures.extend(
            RowProblem(row=RowRef(number), stage=Stage.DELIVERY, reason="no outcome was recorded")
            for number in range(1, rows_in + 1)
            if number >= len(delivery.statuses.codes) or delivery.statuses.codes[number] == _UNSEEN
        )
    return SyncReport(
        name=delivery.name,
        kind=delivery.kind,
        rows_in=rows_in,
        sent=counts[_ACCEPTED],
        unchanged=counts[_UNCHANGED],
        rejected=counts[_REJECTED],
        failed=counts[_FAILED] + (unsettled if not stopped else 0),
        pending=counts[_PENDING] + (unsettled if stopped else 0),
        by_endpoint={k: dict(v) for k, v in delivery.by_endpoint.items()},
        batches=dict(delivery.batches),
        requests_sent=int(getattr(upload, "requests_sent", 0)),
        retries=dict(getattr(upload, "retries", {})),
        rate_limit_wait_seconds=float(getattr(upload, "rate_limit_wait_seconds", 0.0)),
        rate_limit_headers=dict(getattr(upload, "rate_limit_headers", {})),
        elapsed_seconds=delivery.clock() - delivery.started,
        stopped=stopped,
        resumed=bool(start and start.resumed),
        resent_in_flight=len(start.in_flight) if start else 0,
        mapping_changed=bool(start and start.mapping_changed),
        rejects=tuple(pre_rejects + delivery.delivery_rejects),
        failures=tuple(failures),
    )


class Sender(Protocol):
    """What a sync needs of its client: :class:`EventsClient`, or a wrapper around one."""

    historical_after: timedelta
    historical_min_age: timedelta
    max_batches: int
    max_request_bytes: int
    max_batch_bytes: int

    def send(
        self,
        requests: Iterable[Request | RowProblem],
        *,
        on_outcome: Callable[[BatchOutcome], None] | None = None,
    ) -> UploadReport: ...


def send_plan(
    plan: Plan,
    client: Sender,
    *,
    state: StateArg = None,
    on_mapping_change: MappingChange = "fail",
    stop: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SyncReport:
    """Send a reviewed plan's requests byte for byte; record accepted rows in ``state``."""
    store, owned = _open_state(state)
    try:
        start = (
            store.begin_sync(
                plan.name,
                kind=plan.kind,
                fingerprint=plan.fingerprint,
                on_mapping_change=on_mapping_change,
            )
            if store is not None
            else None
        )
        statuses = _Statuses(plan.settled)
        delivery = _Delivery(
            name=plan.name,
            kind=plan.kind,
            store=store,
            statuses=statuses,
            entries=dict(plan.entries),
            stop=stop,
            progress=progress,
            clock=clock,
        )
        delivery.rows_read = lambda: plan.rows_in
        upload = client.send(delivery.feed(plan.requests), on_outcome=delivery.on_outcome)
        report = _report(
            delivery=delivery,
            rows_in=plan.rows_in,
            pre_rejects=list(plan.rejects),
            upload=upload,
            start=start,
        )
        if store is not None:
            store.finish_sync(plan.name, status="stopped" if report.pending else "finished")
        _log(report)
        return report
    finally:
        if owned and store is not None:
            store.close()


def _log(report: SyncReport) -> None:
    logger.info(
        "sync %r: %d rows in, %d sent, %d unchanged, %d rejected, %d failed, %d pending",
        report.name,
        report.rows_in,
        report.sent,
        report.unchanged,
        report.rejected,
        report.failed,
        report.pending,
    )


def _owned_rows(sourced: SourcedBatch) -> tuple[RowRef, ...]:
    # A row's state entry is stored when the batch holding its event is accepted; in a
    # batch without events every row is the batch's.
    return sourced.event_rows if sourced.batch.events else sourced.rows
