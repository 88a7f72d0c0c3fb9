"""plan() and sync(): rows → map → keep what changed → route → pack → deliver → state.

Everything streams: rows are read in chunks, each batch is compared with the state as it
is mapped, and a request is handed to the client as soon as it is packed. Per input row
the run keeps one byte (its outcome so far), so memory grows by a byte a row, not by the
rows' content.

Incremental state (:class:`~mparticle_feed._sync.state.StateStore`) holds, per primary key,
a hash of what mParticle accepted last. A row whose mapped content has the same hash is
*unchanged*: not sent, counted as accepted. A user-attribute row sends only the attributes
whose value changed, and ``deleted_user_attributes`` for those that disappeared. The hash
is stored only when mParticle answered 202 for the batch holding the row; a crash before
that resends the row next time with the same ``source_request_id`` (ids derive from the
content), which mParticle deduplicates.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

import attrs

from .._delivery.packing import Request, pack
from .._delivery.routing import (
    DEFAULT_HISTORICAL_AFTER,
    DEFAULT_HISTORICAL_MIN_AGE,
    part_rows,
    route,
    utc_now,
)
from .._errors import ConfigurationError, StateError
from .._mapping.dataplan_step import DataPlanPolicy, RowViolation
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch
from .._mapping.run import map_rows
from .._mapping.sources import SyncKind
from .._mapping.spec import RowMapping
from .._source.rows import RowSource
from .._wire.codec import to_dict
from .report import SyncReport
from .state import MappingChange, StateEntry, StateStore, content_hash

__all__ = ["plan", "sync"]

from .planfile import Plan
from .send import (
    Progress,
    Sender,
    StateArg,
    _Delivery,
    _log,
    _open_state,
    _report,
    _Statuses,
    send_plan,
)
from .status import _REJECTED, _UNCHANGED

logger = logging.getLogger(__name__)


class _Differ:
    """Compares mapped batches with the state and keeps only what mParticle lacks."""

    def __init__(
        self,
        kind: str,
        state: StateStore | None,
        name: str,
        statuses: _Statuses,
    ) -> None:
        self.kind = kind
        self.state = state
        self.name = name
        self.statuses = statuses
        #: row number → the entry to store once the row is accepted.
        self.entries: dict[int, StateEntry] = {}
        self.unchanged = 0

    def __call__(self, batches: Iterable[SourcedBatch]) -> Iterator[SourcedBatch]:
        for sourced in batches:
            if self.state is None:
                yield sourced
                continue
            kept = (
                self._user_attributes(sourced)
                if self.kind == SyncKind.USER_ATTRIBUTES.value
                else self._events(sourced)
            )
            if kept is not None:
                yield kept

    def _skip(self, rows: Iterable[RowRef]) -> None:
        for row in rows:
            self.statuses.mark(row, _UNCHANGED)
            self.unchanged += 1

    def _events(self, sourced: SourcedBatch) -> SourcedBatch | None:
        assert self.state is not None
        batch = sourced.batch
        events = batch.events or ()
        document = to_dict(batch)
        event_documents = document.pop("events", None) or []
        document.pop("source_request_id", None)
        user_hash = content_hash(document)
        keys = [row.primary_key for row in sourced.event_rows]
        known = self.state.get_many(self.name, [k for k in keys if k is not None])
        kept: list[int] = []
        for index, (event_document, row) in enumerate(
            zip(event_documents, sourced.event_rows, strict=True)
        ):
            digest = content_hash([user_hash, event_document])
            key = row.primary_key
            previous = known.get(key) if key is not None else None
            if previous is not None and previous.hash == digest:
                continue
            kept.append(index)
            if key is not None:
                self.entries[row.row_number] = StateEntry(key=key, hash=digest)
        if len(kept) == len(events):
            return sourced
        kept_rows = tuple(sourced.event_rows[i] for i in kept)
        kept_set = set(kept)
        skipped = [sourced.event_rows[i] for i in range(len(events)) if i not in kept_set]
        if not kept:
            # Rows that gave only user fields travel with the events; none are left.
            self._skip(dict.fromkeys([*skipped, *sourced.rows]))
            return None
        self._skip(skipped)
        return SourcedBatch(
            batch=attrs.evolve(batch, events=tuple(events[i] for i in kept)),
            event_rows=kept_rows,
            rows=part_rows(sourced, kept_rows),
        )

    def _user_attributes(self, sourced: SourcedBatch) -> SourcedBatch | None:
        assert self.state is not None
        batch = sourced.batch
        keyed = [row for row in sourced.rows if row.primary_key is not None]
        if not keyed:
            return sourced  # nothing to key the state on: always sent
        key = str(keyed[0].primary_key)
        document = to_dict(batch)
        current: dict[str, Any] = document.get("user_attributes") or {}
        user = {
            name: value
            for name, value in document.items()
            if name not in ("user_attributes", "deleted_user_attributes", "source_request_id")
        }
        user_hash = content_hash(user)
        attribute_hashes = {name: content_hash(value) for name, value in current.items()}
        digest = content_hash([user_hash, attribute_hashes])
        previous = self.state.get(self.name, key)
        entry = StateEntry(key=key, hash=digest, attributes=attribute_hashes)
        if previous is not None and previous.hash == digest:
            self._skip(sourced.rows)
            return None
        for row in sourced.rows:
            self.entries[row.row_number] = entry
        if previous is None or previous.attributes is None:
            return sourced
        before = dict(previous.attributes)
        same_user = content_hash([user_hash, before]) == previous.hash
        if same_user:
            changed = {
                name: batch.user_attributes[name]  # type: ignore[index]
                for name, value_hash in attribute_hashes.items()
                if before.get(name) != value_hash
            }
        else:
            # Identities changed: send every attribute, as for a new user.
            changed = dict(batch.user_attributes or {})
        deleted = sorted((set(before) - set(current)) | set(batch.deleted_user_attributes or ()))
        return SourcedBatch(
            batch=attrs.evolve(
                batch,
                user_attributes=changed or None,
                deleted_user_attributes=tuple(deleted) or None,
            ),
            event_rows=sourced.event_rows,
            rows=sourced.rows,
        )


@attrs.define
class _Pipeline:
    """The pre-delivery half shared by plan() and sync()."""

    mapping: RowMapping
    name: str
    state: StateStore | None
    now: datetime
    historical_after: timedelta
    historical_min_age: timedelta
    historical_only: bool
    max_batches: int
    max_request_bytes: int
    max_batch_bytes: int
    data_plan_policy: DataPlanPolicy = "report"
    statuses: _Statuses = attrs.field(factory=_Statuses)
    problems: list[RowProblem] = attrs.field(factory=list)
    mapping_run: Any = None
    differ: _Differ = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.differ = _Differ(self.mapping.kind.value, self.state, self.name, self.statuses)

    def requests(self, source: RowSource, chunk_size: int) -> Iterator[Request]:
        """Start mapping now (the source and its columns are checked here), then stream."""
        # map_rows reads the source itself, so an Arrow source reaches the Arrow engine.
        self.mapping_run = map_rows(
            source,
            self.mapping,
            data_plan_policy=self.data_plan_policy,
            chunk_size=chunk_size,
        )
        return self._requests()

    def _requests(self) -> Iterator[Request]:
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
        ):
            if isinstance(item, RowProblem):
                self.reject(item)
            else:
                yield item

    def reject(self, problem: RowProblem) -> None:
        self.problems.append(problem)
        self.statuses.mark(problem.row, _REJECTED)
        self.differ.entries.pop(problem.row.row_number, None)

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
) -> Plan:
    """The exact requests :func:`sync` would send for these rows, without sending.

    ``source`` is a DB-API cursor (read with ``fetchmany``) or any iterable of dict rows.
    With ``state``, rows mParticle already holds are left out, as sync would. The state
    is only read. A plan holds every request body in memory: use it for review, and
    :func:`sync` for large runs. ``data_plan_policy`` is as for :func:`sync`; with
    ``"block"`` the plan shows exactly what mParticle would drop.
    """
    if isinstance(state, (str, os.PathLike)) and not os.path.exists(state):
        # plan only reads: a missing state file means every row is sent. An empty store
        # (not none) still yields the entries to record, should the plan be sent with it.
        state = ":memory:"
    store, owned = _open_state(state)
    try:
        sync_name = name or _default_name(mapping)
        if store is not None:
            _check_mapping(store, sync_name, mapping, on_mapping_change)
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
        )
        requests = tuple(pipeline.requests(source, chunk_size))
        pipeline.collect_mapping_rejects()
        differ = pipeline.differ
        return Plan(
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
        )
    finally:
        if owned and store is not None:
            store.close()


def _check_mapping(
    store: StateStore, name: str, mapping: RowMapping, on_mapping_change: MappingChange
) -> None:
    """For plan(): refuse a changed mapping the way sync would, without writing."""
    previous = store.fingerprint(name)
    if previous is not None and previous != mapping.fingerprint() and on_mapping_change == "fail":
        msg = (
            f"sync {name!r} was last run with a different mapping; choose what to resend "
            "with on_mapping_change='resend' (every row) or 'keep' (only rows whose output changed)"
        )
        raise StateError(msg)


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
) -> SyncReport:
    """Map ``source``'s rows with ``mapping`` and deliver them with ``client``, streaming.

    ``source`` is a DB-API cursor or any iterable of dict rows. ``client`` is an
    :class:`~mparticle_feed.EventsClient` (its routing and size settings apply).
    With ``state`` (a :class:`StateStore` or a file path) only rows whose content changed
    since mParticle last accepted them are sent; ``name`` keys the state (default: the
    mapping's kind). When the mapping changed since the last run, ``on_mapping_change``
    decides: ``"fail"`` (default) raises :class:`StateError`, ``"resend"`` sends every
    row, ``"keep"`` sends only rows whose output changed.

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
        report = send_plan(
            plan,
            client,
            state=state,
            on_mapping_change=on_mapping_change,
            stop=stop,
            progress=progress,
            clock=clock,
        )
        # A reviewed plan carries its data-plan violations into the report.
        return attrs.evolve(report, violations=plan.violations) if plan.violations else report
    if source is None:
        raise ConfigurationError("sync needs rows to read (source) or a reviewed plan (plan=)")
    store, owned = _open_state(state)
    try:
        sync_name = name or _default_name(mapping)
        pipeline = _Pipeline(
            mapping=mapping,
            name=sync_name,
            state=store,
            now=now if now is not None else utc_now(),
            # Packed here with the client's own settings, so the state can mark exactly the
            # batches the client will send.
            historical_after=client.historical_after,
            historical_min_age=client.historical_min_age,
            historical_only=historical_only,
            max_batches=client.max_batches,
            max_request_bytes=client.max_request_bytes,
            max_batch_bytes=client.max_batch_bytes,
            data_plan_policy=data_plan_policy,
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
        upload = client.send(delivery.feed(requests), on_outcome=delivery.on_outcome)
        pipeline.collect_mapping_rejects()
        report = _report(
            delivery=delivery,
            rows_in=pipeline.rows_in,
            pre_rejects=pipeline.problems,
            upload=upload,
            start=start,
        )
        if pipeline.violations:
            report = attrs.evolve(report, violations=pipeline.violations)
        if store is not None:
            store.finish_sync(sync_name, status="stopped" if report.pending else "finished")
        _log(report)
        return report
    finally:
        if owned and store is not None:
            store.close()
