"""plan() and sync(): rows → map → keep what changed → route → pack → deliver → state.

Everything streams: rows are read in chunks, each batch is compared with the state as it
is mapped, and a request is handed to the client as soon as it is packed. Per input row
the run keeps one byte (its outcome so far), so memory grows by a byte a row, not by the
rows' content.

Incremental state (:class:`~mparticle_feed._sync.state.StateStore`) holds, per primary key,
a hash of what mParticle accepted last. A row whose mapped content has the same hash is
*unchanged*: not sent, counted as accepted. A user-attribute row sends only the attributes
whose value changed, and ``deleted_user_attributes`` for those that disappeared. The hash
is stored only when mParticle answered 202 for the batch holding the row. Before a
request leaves it is committed to the state's outbox; a run first replays what an earlier
run left unsettled there, byte for byte with the same ids, and only then maps rows (see
:mod:`.send`). New batches get ids unique to the change (:class:`IdSequence`).

A primary key seen twice in one run rejects the later rows ("duplicate primary key, first
seen at row N"); the keys seen are held in memory up to a bound, then in a temporary
SQLite file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._delivery.packing import IdSequence, Request, pack
from .._delivery.report import BatchOutcome
from .._delivery.routing import (
    DEFAULT_HISTORICAL_AFTER,
    DEFAULT_HISTORICAL_MIN_AGE,
    route,
    utc_now,
)
from .._errors import ConfigurationError
from .._mapping.dataplan_step import DataPlanPolicy, RowViolation
from .._mapping.provenance import RowProblem
from .._mapping.regroup import DEFAULT_GROUP_WINDOW
from .._mapping.run import MappingRun, ordering_advice
from .._mapping.spec import RowMapping
from .._source.rows import RowSource
from .protocol import SyncState
from .records import mapping_changed
from .report import SyncReport
from .state import MappingChange, StateStore

__all__ = ["plan", "sync"]

from .differ import _Differ
from .planfile import Plan
from .seen import SeenKeys
from .send import (
    DEFAULT_MAX_PLAN_AGE,
    Progress,
    Sender,
    StateArg,
    _Delivery,
    _log,
    _open_state,
    _report,
    _Statuses,
    finish_run,
    held_state,
    replay_outbox,
    send_plan,
)
from .status import _REJECTED

logger = logging.getLogger(__name__)


@attrs.define
class _Pipeline:
    """The pre-delivery half shared by plan() and sync()."""

    mapping: RowMapping
    name: str
    state: SyncState | None
    now: datetime
    historical_after: timedelta
    historical_min_age: timedelta
    historical_only: bool
    max_batches: int
    max_request_bytes: int
    max_batch_bytes: int
    data_plan_policy: DataPlanPolicy = "report"
    group_window: int = DEFAULT_GROUP_WINDOW
    ids: IdSequence | None = None
    statuses: _Statuses = attrs.field(factory=_Statuses)
    problems: list[RowProblem] = attrs.field(factory=list)
    mapping_run: Any = None
    differ: _Differ = attrs.field(init=False)

    #: Whether the run may write the state (a sync; a plan only reads).
    writes_state: bool = False

    def __attrs_post_init__(self) -> None:
        self.differ = _Differ(
            self.mapping.kind.value,
            self.state,
            self.name,
            self.statuses,
            refresh=self.writes_state,
        )

    def requests(self, source: RowSource, chunk_size: int) -> Iterator[Request]:
        """Start mapping now (the source and its columns are checked here), then stream."""
        # The mapping run reads the source itself, so an Arrow source reaches the Arrow engine.
        seen = SeenKeys()
        self.mapping_run = MappingRun(
            source,
            self.mapping,
            data_plan_policy=self.data_plan_policy,
            chunk_size=chunk_size,
            key_check=seen.first_seen,
            run_check=seen.first_seen_run,
            group_window=self.group_window,
            # Rows the state holds as they are are not even mapped.
            known=self.differ if self.differ.knows_sources else None,
        )
        return self._requests(seen)

    def _requests(self, seen: SeenKeys) -> Iterator[Request]:
        try:
            yield from self._packed()
        finally:
            seen.close()

    def _packed(self) -> Iterator[Request]:
        routed = route(
            self.differ(self.mapping_run),
            now=self.now,
            historical_after=self.historical_after,
            historical_min_age=self.historical_min_age,
            historical_only=self.historical_only,
        )
        for item in pack(
            routed,
            max_batches=self.max_batches,
            max_request_bytes=self.max_request_bytes,
            max_batch_bytes=self.max_batch_bytes,
            ids=self.ids,
        ):
            if isinstance(item, RowProblem):
                self.reject(item)
            else:
                yield item

    def reject(self, problem: RowProblem) -> None:
        self.problems.append(problem)
        self.statuses.mark(problem.row, _REJECTED)
        self.differ.forget(problem.row)

    def collect_mapping_rejects(self) -> None:
        """Add the mapping's rejects (once, after the rows were read)."""
        if self.mapping_run is not None:
            for problem in self.mapping_run.rejected:
                self.reject(problem)

    @property
    def rows_in(self) -> int:
        return int(self.mapping_run.rows_in) if self.mapping_run is not None else 0

    @property
    def violations(self) -> tuple[RowViolation, ...]:
        return tuple(self.mapping_run.violations) if self.mapping_run is not None else ()

    @property
    def events_per_batch(self) -> float:
        return float(self.mapping_run.events_per_batch) if self.mapping_run is not None else 0.0

    def finish(self, report: SyncReport, store: SyncState | None) -> SyncReport:
        """The report with the mapping's figures; the run recorded in the state and logged."""
        return finish_run(
            report,
            store,
            violations=self.violations,
            events_per_batch=self.events_per_batch,
            advice=self.advice(),
        )

    def advice(self) -> str | None:
        """The ORDER BY advice when the row order left batches thin (logged as a warning)."""
        if self.mapping_run is None:
            return None
        advice = ordering_advice(self.mapping_run)
        if advice is not None:
            logger.warning("sync %r: %s", self.name, advice)
        return advice


def _default_name(mapping: RowMapping) -> str:
    return mapping.kind.value


def plan(
    source: RowSource,
    mapping: RowMapping,
    *,
    state: StateArg = None,
    name: str | None = None,
    now: datetime | None = None,
    on_mapping_change: MappingChange = "fail",
    historical_after: timedelta = DEFAULT_HISTORICAL_AFTER,
    historical_min_age: timedelta = DEFAULT_HISTORICAL_MIN_AGE,
    historical_only: bool = False,
    chunk_size: int = 1000,
    max_batches: int = 100,
    max_request_bytes: int = 256_000,
    max_batch_bytes: int = 128_000,
    data_plan_policy: DataPlanPolicy = "report",
    group_window: int = DEFAULT_GROUP_WINDOW,
) -> Plan:
    """The exact requests :func:`sync` would send for these rows, without sending.

    ``source`` is a DB-API cursor (read with ``fetchmany``) or any iterable of dict rows.
    With ``state``, rows mParticle already holds are left out, as sync would. The state
    is only read. A plan holds every request body in memory: use it for review, and
    :func:`sync` for large runs. ``data_plan_policy`` is as for :func:`sync`; with
    ``"block"`` the plan shows exactly what mParticle would drop. ``group_window`` is
    :func:`map_rows`'s: the rows the regroup window holds, in all users' open batches.
    """
    store, owned = _read_only_state(state)
    created = now if now is not None else utc_now()
    try:
        sync_name = name or _default_name(mapping)
        version, ids = _plan_ids(store, sync_name, mapping, on_mapping_change)
        pipeline = _Pipeline(
            mapping=mapping,
            name=sync_name,
            state=store,
            now=now if now is not None else utc_now(),
            historical_after=historical_after,
            historical_min_age=historical_min_age,
            historical_only=historical_only,
            max_batches=max_batches,
            max_request_bytes=max_request_bytes,
            max_batch_bytes=max_batch_bytes,
            data_plan_policy=data_plan_policy,
            group_window=group_window,
        )
        pipeline.ids = ids
        requests = tuple(pipeline.requests(source, chunk_size))
        pipeline.collect_mapping_rejects()
        differ = pipeline.differ
        return Plan(
            plan_id=str(uuid.uuid4()),
            created_at=created.timestamp(),
            state_version=version,
            next_seq=0 if ids is None else ids.next,
            historical_only=historical_only,
            name=sync_name,
            kind=mapping.kind.value,
            fingerprint=mapping.fingerprint(),
            environment=mapping.environment.value,
            rows_in=pipeline.rows_in,
            unchanged=differ.unchanged,
            requests=requests,
            rejects=tuple(pipeline.problems),
            entries=dict(differ.entries),
            settled=bytes(pipeline.statuses.codes),
            violations=pipeline.violations,
            advice=pipeline.advice(),
        )
    finally:
        if owned and store is not None:
            store.close()


def _read_only_state(state: StateArg) -> tuple[SyncState | None, bool]:
    """The store a plan reads, and whether plan owns it (then plan closes it)."""
    if isinstance(state, (str, os.PathLike)):
        # plan only reads, takes no lock and works on a read-only file system. A missing
        # state file means every row is sent; an empty store (not none) still yields the
        # entries to record, should the plan be sent with a state.
        if os.path.exists(state):
            return StateStore(state, read_only=True), True
        return StateStore(":memory:"), True
    return _open_state(state)


def _plan_ids(
    store: SyncState | None, name: str, mapping: RowMapping, on_mapping_change: MappingChange
) -> tuple[int | None, IdSequence | None]:
    """The state version a plan is made against, and the ids its new batches get."""
    if store is None:
        return None, None
    _check_mapping(store, name, mapping, on_mapping_change)
    version, next_seq = store.version(name)
    return version, IdSequence(scope=name, next=next_seq)


def _check_mapping(
    store: SyncState, name: str, mapping: RowMapping, on_mapping_change: MappingChange
) -> None:
    """For plan(): refuse a changed mapping by sync's rule, without writing."""
    mapping_changed(
        name,
        store.last_mapping(name),
        kind=mapping.kind.value,
        fingerprint=mapping.fingerprint(),
        on_mapping_change=on_mapping_change,
    )


def sync(
    source: RowSource | None,
    mapping: RowMapping,
    client: Sender,
    *,
    state: StateArg = None,
    name: str | None = None,
    now: datetime | None = None,
    on_mapping_change: MappingChange = "fail",
    plan: Plan | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
    historical_only: bool = False,
    chunk_size: int = 1000,
    clock: Callable[[], float] = time.monotonic,
    data_plan_policy: DataPlanPolicy = "report",
    max_plan_age: timedelta = DEFAULT_MAX_PLAN_AGE,
    group_window: int = DEFAULT_GROUP_WINDOW,
) -> SyncReport:
    """Map ``source``'s rows with ``mapping`` and deliver them with ``client``, streaming.

    ``source`` is a DB-API cursor or any iterable of dict rows. ``client`` is an
    :class:`~mparticle_feed.EventsClient` (its routing and size settings apply).
    With ``state`` (a :class:`StateStore`, a file path, or another :class:`SyncState`) only rows whose content changed
    since mParticle last accepted them are sent; ``name`` keys the state (default: the
    mapping's kind). When the mapping changed since the last run, ``on_mapping_change``
    decides: ``"fail"`` (default) raises :class:`StateError`, ``"resend"`` sends every
    row, ``"keep"`` sends only rows whose output changed. ``group_window``: as for :func:`map_rows`.

    ``plan`` sends a reviewed :class:`Plan` instead of reading ``source`` (pass ``None``
    as source). Setting ``stop`` ends the run after the requests already handed out;
    rows not sent are reported ``pending`` and sent by the next run.

    When the mapping names a data plan, ``data_plan_policy`` says what a violation does:
    ``"report"`` (default) sends the rows and lists the violations in
    ``report.violations``; ``"block"`` leaves out what mParticle would block before
    sending (rows whose event or batch is blocked are rejected with the violation as
    reason; a blocked attribute is left out and its row, accepted, lists the violation);
    ``"strict"`` raises :class:`DataPlanViolationError` on the first violation.

    Returns a :class:`SyncReport` for which ``rows_in == accepted + rejected + failed +
    pending`` holds. Raises :class:`ConfigurationError` on bad credentials (401/403).
    """
    if plan is not None:
        return send_plan(
            plan,
            client,
            state=state,
            on_mapping_change=on_mapping_change,
            stop=stop,
            progress=progress,
            clock=clock,
            now=now,
            max_plan_age=max_plan_age,
        )
    if source is None:
        raise ConfigurationError("sync needs rows to read (source) or a reviewed plan (plan=)")
    sync_name = name or _default_name(mapping)
    with held_state(state, sync_name) as store:
        return _sync_locked(
            source,
            mapping,
            client,
            store=store,
            sync_name=sync_name,
            now=now,
            on_mapping_change=on_mapping_change,
            stop=stop,
            progress=progress,
            historical_only=historical_only,
            chunk_size=chunk_size,
            clock=clock,
            data_plan_policy=data_plan_policy,
            group_window=group_window,
        )


def _sync_locked(
    source: Any,
    mapping: RowMapping,
    client: Sender,
    *,
    store: SyncState | None,
    sync_name: str,
    now: datetime | None,
    on_mapping_change: MappingChange,
    stop: threading.Event | None,
    progress: Callable[[Progress], None] | None,
    historical_only: bool,
    chunk_size: int,
    clock: Callable[[], float],
    data_plan_policy: DataPlanPolicy,
    group_window: int,
) -> SyncReport:
    pipeline = _Pipeline(
        mapping=mapping,
        name=sync_name,
        state=store,
        now=now if now is not None else utc_now(),
        # Packed with the client's settings: the outbox holds exactly what it sends.
        historical_after=client.historical_after,
        historical_min_age=client.historical_min_age,
        historical_only=historical_only,
        max_batches=client.max_batches,
        max_request_bytes=client.max_request_bytes,
        max_batch_bytes=client.max_batch_bytes,
        data_plan_policy=data_plan_policy,
        group_window=group_window,
        writes_state=True,
    )
    # The source and its columns are checked here, before the state records a run.
    requests = pipeline.requests(source, chunk_size)
    start = (
        store.begin_sync(
            sync_name,
            kind=mapping.kind.value,
            fingerprint=mapping.fingerprint(),
            on_mapping_change=on_mapping_change,
        )
        if store is not None
        else None
    )
    replayed: Counter[str] = Counter()
    if store is not None:
        replayed, unsettled_report = _replay_first(
            store, sync_name, mapping=mapping, client=client, stop=stop, start=start
        )
        if unsettled_report is not None:
            return unsettled_report
    pipeline.ids = IdSequence(scope=sync_name, next=start.next_seq) if start is not None else None
    delivery = _Delivery(
        name=sync_name,
        kind=mapping.kind.value,
        store=store,
        statuses=pipeline.statuses,
        entries=pipeline.differ.entries,
        stop=stop,
        progress=progress,
        clock=clock,
    )
    delivery.rows_read = lambda: pipeline.rows_in
    try:
        upload = client.send(delivery.feed(requests, pipeline.ids), on_outcome=delivery.on_outcome)
    finally:
        delivery.flush()
    pipeline.collect_mapping_rejects()
    report = _report(
        delivery=delivery,
        rows_in=pipeline.rows_in,
        pre_rejects=pipeline.problems,
        upload=upload,
        start=start,
        replayed=replayed,
    )
    return pipeline.finish(report, store)


def _replay_first(
    store: SyncState,
    name: str,
    *,
    mapping: RowMapping,
    client: Sender,
    stop: threading.Event | None,
    start: Any,
) -> tuple[Counter[str], SyncReport | None]:
    """Replay the outbox; the run's report when it stays unsettled (then no row is read)."""
    replayed, unsent = _replay(store, name, client, stop)
    unsettled = replayed["failed"] + replayed["pending"] + unsent
    if not unsettled:
        return replayed, None
    # New content for those rows must not overtake the old: map nothing yet.
    replayed["pending"] += unsent
    report = _unsettled_report(
        store, name, mapping=mapping, start=start, replayed=replayed, unsettled=unsettled
    )
    return replayed, report


def _unsettled_report(
    store: SyncState,
    name: str,
    *,
    mapping: RowMapping,
    start: Any,
    replayed: Counter[str],
    unsettled: int,
) -> SyncReport:
    """The report of a run whose replay left the outbox unsettled: no row was read."""
    delivery = _Delivery(
        name=name,
        kind=mapping.kind.value,
        store=store,
        statuses=_Statuses(),
        entries={},
        stop=None,
        progress=None,
        clock=time.monotonic,
    )
    delivery.stopped = (
        f"{unsettled} batch(es) an earlier run left in the outbox are still unsettled; "
        "no row was read. Run again: they are replayed first"
    )
    report = _report(
        delivery=delivery, rows_in=0, pre_rejects=[], upload=None, start=start, replayed=replayed
    )
    store.finish_sync(name, status="stopped")
    _log(report)
    return report


def _replay(
    store: SyncState, name: str, client: Sender, stop: threading.Event | None
) -> tuple[Counter[str], int]:
    counts: Counter[str] = Counter()

    def settle(outcome: BatchOutcome) -> None:
        counts[outcome.status.value] += 1
        store.settle(name, source_request_id=outcome.source_request_id, outcome=outcome.status)

    _, unsent = replay_outbox(store, name, client, on_outcome=settle, stop=stop)
    return counts, unsent
