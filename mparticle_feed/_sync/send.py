"""Delivering packed requests of a sync or a plan and settling them in the state (sync stage).

Exactly once, by construction: with a state, every request is committed to the state's
outbox (exact batch bytes, ids, endpoint, rows, entries to record) before it is handed to
the client, and every outcome is recorded against its outbox batch. A run first replays
whatever an earlier run left unsettled, byte for byte, and maps no row until that is
settled. A plan is an outbox written to a file: sending it writes its requests to the
outbox, then replays them.
"""

from __future__ import annotations

import functools
import logging
import operator
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson

from .._delivery.packing import PackedBatch, Request, _Pieces
from .._delivery.report import BatchOutcome, UploadReport
from .._delivery.routing import Endpoint, RoutedBatch, route, utc_now
from .._errors import PayloadError, PlanRefusedError, StateError
from .._mapping.dataplan_step import RowViolation
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from .._wire.codec import from_dict
from .protocol import SyncState
from .report import SyncReport
from .state import MappingChange, OutboxBatch, OutboxRequest, StateEntry, StateStore, SyncStart
from .status import _ACCEPTED, _FAILED, _PENDING, _REJECTED, _UNCHANGED, _UNSEEN

if TYPE_CHECKING:
    from .planfile import Plan

__all__ = ["DEFAULT_MAX_PLAN_AGE", "Progress", "Sender", "send_plan"]

#: How old a plan may be when it is sent (``max_plan_age``).
DEFAULT_MAX_PLAN_AGE = timedelta(hours=1)

logger = logging.getLogger(__name__)


StateArg = SyncState | str | os.PathLike[str] | None


@attrs.frozen(kw_only=True)
class Progress:
    """Where a running sync is: rows read so far and how many batches settled."""

    rows_read: int
    batches_accepted: int
    batches_other: int
    requests_handed_out: int
    elapsed_seconds: float


def _open_state(state: StateArg) -> tuple[SyncState | None, bool]:
    if isinstance(state, (str, os.PathLike)):
        return StateStore(state), True
    return state, False


@contextmanager
def held_state(state: StateArg, name: str) -> Iterator[SyncState | None]:
    """The run's store, locked for sync ``name``; opened and closed here when given a path."""
    store, owned = _open_state(state)
    try:
        with store.run_lock(name) if store is not None else nullcontext():
            yield store
    finally:
        if owned and store is not None:
            store.close()


def finish_run(
    report: SyncReport,
    store: SyncState | None,
    *,
    violations: tuple[RowViolation, ...],
    events_per_batch: float,
    advice: str | None,
) -> SyncReport:
    """The report with the mapping's figures (data-plan violations, batching); the run
    recorded in the state and logged. A sync and a plan's send end here."""
    report = attrs.evolve(
        report, violations=violations, events_per_batch=events_per_batch, advice=advice
    )
    if store is not None:
        store.finish_sync(report.name, status="stopped" if report.pending else "finished")
    _log(report)
    return report


@functools.cache
def _at_least(code: int) -> bytes:
    """The byte table that raises every code below ``code`` to it."""
    return bytes(max(value, code) for value in range(256))


class _Statuses:
    """Per row number, the worst outcome seen; one byte per row."""

    def __init__(self, initial: bytes = b"") -> None:
        self.codes = bytearray(initial)

    def mark(self, row: RowRef, code: int) -> None:
        self.mark_numbers((row.row_number,), code)

    def mark_numbers(self, numbers: Iterable[int], code: int) -> None:
        """:meth:`mark` for rows given by number (ascending), at once."""
        codes = self.codes
        if isinstance(numbers, range) and numbers.step == 1:
            start, stop = numbers.start, numbers.stop
            if start < stop:
                while stop > len(codes):
                    # As marking the rows one by one would grow it.
                    first = max(start, len(codes))
                    codes.extend(b"\x00" * max(first + 1 - len(codes), len(codes)))
                codes[start:stop] = codes[start:stop].translate(_at_least(code))
            return
        for index in numbers:
            if index >= len(codes):
                # Grown by doubling, so the bytes come out the same however rows are grouped.
                codes.extend(b"\x00" * max(index + 1 - len(codes), len(codes)))
            codes[index] = max(codes[index], code)

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
        store: SyncState | None,
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
        self.unsettled: list[tuple[str, str]] = []

    def feed(self, requests: Iterable[Request], ids: Any = None) -> Iterator[Request]:
        """Commit each request to the outbox, then hand it out (``ids``: the IdSequence)."""
        for request in requests:
            if self.stop is not None and self.stop.is_set():
                self.stopped = "stop was requested"
                logger.info("sync %r: stop requested; remaining rows stay pending", self.name)
                return
            if self.store is not None:
                batches = [self.outbox_batch(packed) for packed in request.batches]
                # The outcomes received so far are settled in the transaction that commits
                # this request: one state write per request.
                outcomes, self.unsettled = self.unsettled, []
                try:
                    self.store.outbox_add(
                        self.name,
                        [(str(request.endpoint), batches)],
                        next_seq=0 if ids is None else ids.next,
                        settled=outcomes,
                    )
                except BaseException:
                    self.unsettled[:0] = outcomes  # not written: the final flush tries again
                    raise
            self.handed_out += 1
            yield request

    def flush(self) -> None:
        """Record the outcomes received since the last flush, in one transaction."""
        if self.store is not None and self.unsettled:
            outcomes, self.unsettled = self.unsettled, []
            self.store.settle_many(self.name, outcomes)

    def outbox_batch(self, packed: PackedBatch) -> OutboxBatch:
        """The batch as the outbox keeps it; its rows' entries leave memory here."""
        sourced = packed.sourced
        pop = self.entries.pop
        owned = _owned_rows(sourced)
        found = [pop(row.row_number, None) for row in owned] if self.entries else []
        rows = tuple([(r.row_number, r.primary_key) for r in sourced.rows])
        # One event per row (the usual batch): the same refs, so the same pairs, shared.
        same = len(sourced.event_rows) == len(rows) and all(
            map(operator.is_, sourced.event_rows, sourced.rows)
        )
        return OutboxBatch(
            source_request_id=packed.source_request_id,
            body=packed.body,
            rows=rows,
            event_rows=rows
            if same
            else tuple([(r.row_number, r.primary_key) for r in sourced.event_rows]),
            entries=tuple([entry for entry in found if entry is not None]),
        )

    def on_outcome(self, outcome: BatchOutcome) -> None:
        code = outcome.status.code
        status = outcome.status.value  # report keys stay plain strings (JSON-ready)
        self.batches[status] += 1
        counts = self.by_endpoint.setdefault(str(outcome.endpoint), Counter())
        counts[status] += len(outcome.rows)
        for row in outcome.rows:
            self.statuses.mark(row, code)
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
        if self.store is not None:
            # Settled in one transaction with the others of its request (see flush): an
            # outcome lost to a crash before that leaves its batch in the outbox, replayed
            # with the same id next time.
            self.unsettled.append((outcome.source_request_id, status))
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
    replayed: Counter[str] | None = None,
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
        replayed=dict(replayed or {}),
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


def outbox_request(request: OutboxRequest) -> Request:
    """An outbox request rebuilt for the client: the same bytes, ids, endpoint and rows."""
    packed = []
    for batch in request.batches:
        try:
            model = from_dict(orjson.loads(batch.body))
            sourced = SourcedBatch(
                batch=model,
                event_rows=tuple(RowRef(n, k) for n, k in batch.event_rows),
                rows=tuple(RowRef(n, k) for n, k in batch.rows),
            )
        except (orjson.JSONDecodeError, PayloadError, ValueError) as exc:
            msg = f"outbox batch {batch.source_request_id} cannot be read back: {exc}"
            raise StateError(msg) from exc
        packed.append(
            PackedBatch(
                source_request_id=batch.source_request_id,
                body=batch.body,
                sourced=sourced,
                user_key=_Pieces(sourced).user_key,
            )
        )
    return Request(endpoint=Endpoint(request.endpoint), body=request.body, batches=tuple(packed))


def replay_outbox(
    store: SyncState,
    name: str,
    client: Sender,
    *,
    on_outcome: Callable[[BatchOutcome], None],
    stop: threading.Event | None = None,
    between: Callable[[], None] | None = None,
) -> tuple[Any, int]:
    """Send every unsettled outbox request of ``name`` again, byte for byte.

    ``on_outcome`` must settle each outcome in ``store`` (``between`` is called before
    each request is handed out, to record outcomes received so far). Returns the client's report
    (None when the outbox was empty) and how many batches stayed unsent because ``stop``
    was set.
    """
    pending = store.outbox(name)
    if not pending:
        return None, 0
    logger.info("sync %r: replaying %d request(s) from the outbox", name, len(pending))
    unsent = 0

    def requests() -> Iterator[Request]:
        nonlocal unsent
        for index, request in enumerate(pending):
            if stop is not None and stop.is_set():
                unsent = sum(len(r.batches) for r in pending[index:])
                return
            if between is not None:
                between()
            yield outbox_request(request)

    return client.send(requests(), on_outcome=on_outcome), unsent


def check_plan(
    plan: Plan,
    client: Sender,
    store: SyncState | None,
    *,
    now: datetime,
    max_plan_age: timedelta,
) -> None:
    """Refuse a plan that a later run superseded, that is too old, or would route elsewhere.

    Raises :class:`PlanRefusedError`; make a new plan then.
    """
    if store is not None:
        version, _ = store.version(plan.name)
        if plan.state_version is not None and version != plan.state_version:
            msg = (
                f"plan for sync {plan.name!r} was made at state version {plan.state_version}, "
                f"but the state is at version {version}: a later run superseded it. "
                "Make a new plan."
            )
            raise PlanRefusedError(msg)
        if store.in_flight(plan.name):
            msg = (
                f"sync {plan.name!r} has unsettled batches from an interrupted run in its "
                "outbox; run the sync (it replays them first), then make a new plan"
            )
            raise PlanRefusedError(msg)
    made = datetime.fromtimestamp(plan.created_at, tz=now.tzinfo)
    age = now - made
    if age > max_plan_age:
        msg = (
            f"plan for sync {plan.name!r} was made {age.total_seconds() / 3600:.1f} h ago; "
            f"plans older than {max_plan_age.total_seconds() / 3600:g} h are refused "
            "(their rows may have changed, their events may route elsewhere). Make a new plan."
        )
        raise PlanRefusedError(msg)
    for request in plan.requests:
        for packed in request.batches:
            routed = list(
                route(
                    [packed.sourced],
                    now=now,
                    historical_after=client.historical_after,
                    historical_min_age=client.historical_min_age,
                    historical_only=plan.historical_only,
                )
            )
            if not (
                len(routed) == 1
                and isinstance(routed[0], RoutedBatch)
                and routed[0].endpoint == request.endpoint
            ):
                first = packed.sourced.rows[0] if packed.sourced.rows else None
                where = (
                    "" if first is None else f" (row {first.row_number}, key {first.primary_key})"
                )
                msg = (
                    f"plan for sync {plan.name!r}: batch {packed.source_request_id}{where} was "
                    f"planned for {request.endpoint} but would not go there now (28-day and "
                    "72-hour rules, checked at send time). Make a new plan."
                )
                raise PlanRefusedError(msg)


def send_plan(
    plan: Plan,
    client: Sender,
    *,
    state: StateArg = None,
    on_mapping_change: MappingChange = "fail",
    stop: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    now: datetime | None = None,
    max_plan_age: timedelta = DEFAULT_MAX_PLAN_AGE,
) -> SyncReport:
    """Send a reviewed plan's requests byte for byte; record accepted rows in ``state``.

    Refuses (:class:`PlanRefusedError`) a plan that a later run of the sync superseded,
    one older than ``max_plan_age``, or one with a batch that would now go to the other
    endpoint (``now``: the time ages are measured from, default the current UTC time).
    Sending again a plan whose send was interrupted resumes it: what the outbox still
    holds is replayed, nothing else is sent.
    """
    with held_state(state, plan.name) as store:
        resuming = store is not None and store.current_plan(plan.name) == plan.plan_id
        if not resuming:
            check_plan(
                plan,
                client,
                store,
                now=now if now is not None else utc_now(),
                max_plan_age=max_plan_age,
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
        start = (
            _begin_plan(store, plan, delivery, resuming, on_mapping_change)
            if store is not None
            else None
        )
        try:
            upload, unsent = _deliver_plan(
                plan, client, store=store, delivery=delivery, resuming=resuming, stop=stop
            )
        finally:
            delivery.flush()
        if unsent:
            delivery.stopped = "stop was requested"
        report = _report(
            delivery=delivery,
            rows_in=plan.rows_in,
            pre_rejects=list(plan.rejects),
            upload=upload,
            start=start,
        )
        return finish_run(
            report,
            store,
            violations=plan.violations,
            events_per_batch=plan.events_per_batch,
            advice=plan.advice,
        )


def _begin_plan(
    store: SyncState,
    plan: Plan,
    delivery: _Delivery,
    resuming: bool,
    on_mapping_change: MappingChange,
) -> SyncStart:
    # A new send commits every request of the plan to the outbox in the run's first
    # transaction, so a send that dies at any point resumes by sending the plan again.
    return store.begin_sync(
        plan.name,
        kind=plan.kind,
        fingerprint=plan.fingerprint,
        on_mapping_change=on_mapping_change,
        plan=plan.plan_id,
        outbox=()
        if resuming
        else [
            (str(r.endpoint), [delivery.outbox_batch(p) for p in r.batches]) for r in plan.requests
        ],
        next_seq=plan.next_seq,
    )


def _deliver_plan(
    plan: Plan,
    client: Sender,
    *,
    store: SyncState | None,
    delivery: _Delivery,
    resuming: bool,
    stop: threading.Event | None,
) -> tuple[Any, int]:
    if store is None:
        return client.send(delivery.feed(plan.requests), on_outcome=delivery.on_outcome), 0
    if resuming:
        left = {n for r in store.outbox(plan.name) for b in r.batches for n, _ in b.rows}
        for request in plan.requests:
            for packed in request.batches:
                for row in packed.sourced.rows:
                    if row.row_number not in left:
                        delivery.statuses.mark(row, _UNCHANGED)  # settled by the earlier send
    return replay_outbox(
        store,
        plan.name,
        client,
        on_outcome=delivery.on_outcome,
        stop=stop,
        between=delivery.flush,
    )


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
    return sourced.event_rows or sourced.rows  # event_rows pair with batch.events
