"""Stage: sync. One partition of a distributed run, independent of the engine.

A Spark or Dask task receives a :class:`PartitionTask` (it pickles: the mapping, the client's
settings, ``now`` fixed on the driver) and its rows, already grouped by user and sorted by
(user, primary key). It runs the same stages as :func:`~mparticle_feed.sync` on them and
returns a :class:`PartitionReport`. The driver combines the partitions' reports into one
:class:`~mparticle_feed.SyncReport` (:func:`combine_reports`).

Why the order matters: consecutive rows of one user become one batch, and a batch's
``source_request_id`` derives from its content. Rows of a user all in one partition, in the
order (user, primary key), give the batches and ids one process gives for the same rows in
that order, so a task that is run again resends the same bodies under the same ids and
mParticle de-duplicates them.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from .._delivery.client import EventsClient
from .._delivery.limiter import DEFAULT_RATE, RateLimiter, TokenBucket
from .._delivery.limiter_service import LimiterService, RemoteLimiter
from .._delivery.routing import utc_now
from .._delivery.status import OutcomeStatus
from .._errors import ConfigurationError
from .._mapping.columns import check_columns
from .._mapping.provenance import RowProblem
from .._mapping.sources import Column, Computed, ListOf, Source, Struct
from .._mapping.spec import RowMapping
from .protocol import SyncState
from .report import SyncReport, problem_record
from .run import sync
from .send import Sender
from .tabletask import TableJob

__all__ = [
    "PartitionReport",
    "PartitionTask",
    "combine_reports",
    "order_columns",
    "arrow_source",
    "shared_budget",
    "sync_partition",
]

logger = logging.getLogger(__name__)

#: Columns of the per-partition counts table, in order (engines build their frames from it).
PARTITION_COLUMNS: tuple[str, ...] = (
    "partition",
    "attempt",
    "rows_in",
    "accepted",
    "sent",
    "unchanged",
    "rejected",
    "failed",
    "pending",
    "batches_accepted",
    "requests_sent",
    "elapsed_seconds",
)

#: Columns of the per-row problems table, in order.
PROBLEM_COLUMNS: tuple[str, ...] = (
    "partition",
    "row_number",
    "primary_key",
    "outcome",
    "stage",
    "field",
    "reason",
    "status",
    "source_request_id",
)


def _source_columns(source: Source) -> list[str] | None:
    """The columns a source reads; None when code computes it (no column to group by)."""
    if isinstance(source, Column):
        return [source.name]
    if isinstance(source, Struct):
        parts = [_source_columns(item) for _, item in source.fields]
    elif isinstance(source, ListOf):
        parts = [_source_columns(item) for item in source.items]
    elif isinstance(source, Computed):
        return None
    else:
        return []  # a constant is the same for every row: it tells no users apart
    if any(part is None for part in parts):
        return None
    return [name for part in parts for name in part or ()]


def order_columns(
    mapping: RowMapping, *, by: Sequence[str] | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(user_columns, sort_columns)`` for a distributed run of ``mapping``.

    Rows are partitioned by ``user_columns`` (the columns of the mapping's identities, or
    ``by``) so each user's rows meet in one task, and sorted within the partition by
    ``sort_columns`` (the user columns, then the primary key): a total order when the primary
    key is unique, so every attempt of a task sees its rows in the same order. Raises
    :class:`ConfigurationError` when an identity is computed by code and ``by`` is not given.
    """
    if by is not None:
        users = tuple(dict.fromkeys(by))
        if not users:
            msg = "by must name at least one column"
            raise ConfigurationError(msg)
    else:
        sources: list[tuple[str, Source]] = [
            *mapping.user_identities,
            *mapping.device_identities,
            *([("mpid", mapping.mpid)] if mapping.mpid is not None else []),
        ]
        names: list[str] = []
        for field, source in sources:
            columns = _source_columns(source)
            if columns is None:
                msg = (
                    f"identity {field!r} is computed by code, so rows cannot be grouped by user "
                    "from the mapping alone; pass by=[the columns that name a user]"
                )
                raise ConfigurationError(msg)
            names.extend(columns)
        users = tuple(dict.fromkeys(names))
        if not users:
            msg = "the mapping's identities read no column; pass by=[the columns that name a user]"
            raise ConfigurationError(msg)
    key = mapping.key_column
    ordering = users + ((key,) if key is not None and key not in users else ())
    return users, ordering


def check_run(
    mapping: RowMapping,
    columns: Sequence[str],
    *,
    by: Sequence[str] | None,
    partitions: int | None,
    budget: str = "shared",
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """An engine's checks before its job; ``(user_columns, sort_columns)`` as
    :func:`order_columns` gives them. Raises :class:`MappingError` when the mapping reads a
    column ``columns`` lacks, :class:`ConfigurationError` for the other problems."""
    if budget not in ("shared", "split"):
        msg = f"budget must be 'shared' or 'split', got {budget!r}"
        raise ConfigurationError(msg)
    if partitions is not None and partitions < 1:
        msg = f"partitions must be at least 1, got {partitions}"
        raise ConfigurationError(msg)
    # The mapping's own columns first: one error on the driver, not one per task and row.
    check_columns(mapping._compiled, list(columns))
    users, ordering = order_columns(mapping, by=by)
    missing = [column for column in ordering if column not in columns]
    if missing:
        msg = (
            f"the DataFrame has no column {', '.join(map(repr, missing))} "
            "(needed to group rows by user)"
        )
        raise ConfigurationError(msg)
    return users, ordering


def arrow_source(batches: Iterable[Any]) -> Any:
    """A task's record batches as one ``pyarrow.RecordBatchReader``, streamed.

    A sync given it maps with the Arrow engine (byte-identical to the row path). Arrow keeps
    every value's type: nullable integers stay integers and timestamps keep their time
    zone, which conversions through pandas do not guarantee. No batch (an empty partition)
    gives an empty list of rows.
    """
    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        return []
    import pyarrow as pa

    return pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], iterator))


@attrs.frozen(kw_only=True)
class PartitionReport:
    """What one task did with one partition: the partition's own :class:`SyncReport`.

    ``report``'s row numbers count from 1 within the partition, in the sorted order.
    """

    partition: int
    attempt: int = 0
    report: SyncReport
    #: The task's outbox log when it ran against a table state (the driver commits it).
    state_log: str | None = None

    def counts_record(self) -> dict[str, Any]:
        """One row of the per-partition counts table (:data:`PARTITION_COLUMNS`)."""
        report = self.report
        return {
            "partition": self.partition,
            "attempt": self.attempt,
            "rows_in": report.rows_in,
            "accepted": report.accepted,
            "sent": report.sent,
            "unchanged": report.unchanged,
            "rejected": report.rejected,
            "failed": report.failed,
            "pending": report.pending,
            "batches_accepted": int(report.batches.get("accepted", 0)),
            "requests_sent": report.requests_sent,
            "elapsed_seconds": report.elapsed_seconds,
        }

    def problem_records(self) -> list[dict[str, Any]]:
        """The partition's rejected and failed rows (:data:`PROBLEM_COLUMNS`)."""
        records = []
        for outcome, problems in (
            (OutcomeStatus.REJECTED, self.report.rejects),
            (OutcomeStatus.FAILED, self.report.failures),
        ):
            for problem in problems:
                record = problem_record(problem, outcome)
                records.append(
                    {
                        "partition": self.partition,
                        **{
                            column: record.get(column)
                            for column in PROBLEM_COLUMNS
                            if column != "partition"
                        },
                    }
                )
        return records


def sync_partition(
    rows: Iterable[Mapping[str, Any]],
    mapping: RowMapping,
    client: Sender,
    *,
    now: datetime,
    partition: int = 0,
    attempt: int = 0,
    name: str | None = None,
    historical_only: bool = False,
    chunk_size: int = 1000,
    state: SyncState | None = None,
) -> PartitionReport:
    """Sync one partition's rows; the engine-independent body of a Spark or Dask task.

    ``rows`` must hold all rows of each of its users, sorted by (user, primary key)
    (:func:`order_columns`). ``now`` is required: every task measures events' ages from the
    same instant, fixed on the driver, so routing (live or historical) and therefore the
    batches do not depend on when a task ran. ``client`` is used as given; a task that
    received a pickled :class:`~mparticle_feed.EventsClient` owns that copy. ``state``
    (a task's view of a table state) makes the run incremental.
    """
    if now.tzinfo is None:
        msg = "now must be timezone-aware (UTC), fixed once on the driver"
        raise ConfigurationError(msg)
    report = sync(
        rows,
        mapping,
        client,
        name=name,
        now=now,
        historical_only=historical_only,
        chunk_size=chunk_size,
        state=state,
    )
    return PartitionReport(partition=partition, attempt=attempt, report=report)


@attrs.frozen(kw_only=True)
class PartitionTask:
    """Everything a task needs, picklable: ship it to the workers, call it on each partition.

    ``client`` is an :class:`~mparticle_feed.EventsClient` (pickled by its settings: each
    call opens its own connections and closes them when done) or any picklable
    :class:`Sender`. ``limiter``, when given, makes (once per call) the limiter that paces
    the task's copy of the client instead of its own ``rate_limit``; it must pickle
    (:func:`shared_budget` gives one). ``state``, when given, is the job of a
    :class:`~mparticle_feed.TableState`: the rows carry their committed entries (the
    engine joined them) and the task logs its outbox beside the table.
    """

    mapping: RowMapping
    client: Sender = attrs.field(repr=False)
    now: datetime
    name: str | None = None
    historical_only: bool = False
    chunk_size: int = 1000
    limiter: Callable[[], RateLimiter] | None = attrs.field(default=None, repr=False)
    state: TableJob | None = None

    def __call__(
        self, rows: Iterable[Mapping[str, Any]], *, partition: int, attempt: int = 0
    ) -> PartitionReport:
        # A limiter per call: its connections are this call's to close, even where an
        # engine hands one deserialised task to several threads.
        limiter = self.limiter() if self.limiter is not None else None
        own = None
        if isinstance(self.client, EventsClient):
            own = (
                self.client._copy(rate_limit=limiter)
                if limiter is not None
                else self.client._copy()
            )
        task_state = None if self.state is None else self.state.task_state(partition, attempt)
        try:
            report = sync_partition(
                rows if task_state is None else task_state.rows(rows),
                self.mapping,
                own if own is not None else self.client,
                now=self.now,
                partition=partition,
                attempt=attempt,
                name=self.name,
                historical_only=self.historical_only,
                chunk_size=self.chunk_size,
                state=task_state,
            )
            if task_state is None:
                return report
            return attrs.evolve(report, state_log=task_state.log_path)
        finally:
            if task_state is not None:
                task_state.close()
            if own is not None:
                own.close()
            if isinstance(limiter, RemoteLimiter):
                limiter.close()


@contextlib.contextmanager
def shared_budget(
    client: Sender, *, tasks: int, host: str = "127.0.0.1", shared: bool = True
) -> Iterator[Callable[[], RateLimiter] | None]:
    """What makes the limiter of each task of a distributed run: one budget for the cluster.

    With an :class:`~mparticle_feed.EventsClient` that paces (its ``rate_limit``), this
    serves the client's limiter from here (a :class:`LimiterService` on ``host``, with a
    token of its own for the run) and yields a picklable factory of :class:`RemoteLimiter`
    handles to it, for :class:`PartitionTask`'s ``limiter``: a 429 seen by one task pauses
    them all. A task that cannot reach the service, or every task when ``shared`` is False,
    paces with a static share of the budget instead: the rate divided by ``tasks`` (the
    tasks that may run at once). Yields None for a client that does not pace.
    """
    if tasks < 1:
        msg = f"tasks must be at least 1, got {tasks}"
        raise ConfigurationError(msg)
    limiter = client.rate_limiter if isinstance(client, EventsClient) else None
    if limiter is None:
        yield None
        return
    # A limiter of the user's own kind may have no ``rate``: split the default then.
    share = functools.partial(TokenBucket, float(getattr(limiter, "rate", DEFAULT_RATE)) / tasks)
    if not shared:
        yield share
        return
    with LimiterService(limiter, host=host) as service:
        yield functools.partial(copy.copy, service.handle(share))


def _renumber(problem: RowProblem, offset: int) -> RowProblem:
    return attrs.evolve(
        problem, row=attrs.evolve(problem.row, row_number=problem.row.row_number + offset)
    )


def combine_reports(parts: Iterable[PartitionReport]) -> SyncReport:
    """One :class:`SyncReport` for a whole distributed run.

    Counts add up. Row numbers in ``rejects`` and ``failures`` become positions in the whole
    run: partition by partition (in partition order), each in its sorted order, so row 1 of
    partition 1 follows the last row of partition 0. Raises :class:`ConfigurationError` when
    a partition appears twice (a retried task's report must replace the failed attempt's,
    which the engine does) or the parts are of different syncs.
    """
    ordered = sorted(parts, key=lambda part: part.partition)
    seen = [part.partition for part in ordered]
    if len(set(seen)) != len(seen):
        duplicated = sorted(p for p, n in Counter(seen).items() if n > 1)
        msg = f"partitions {duplicated} reported more than once"
        raise ConfigurationError(msg)
    if not ordered:
        msg = "no partition reports to combine"
        raise ConfigurationError(msg)
    first = ordered[0].report
    if any((part.report.name, part.report.kind) != (first.name, first.kind) for part in ordered):
        msg = "the partition reports are of different syncs"
        raise ConfigurationError(msg)
    by_endpoint: dict[str, Counter[str]] = {}
    batches: Counter[str] = Counter()
    retries: Counter[str] = Counter()
    headers: dict[str, tuple[str, ...]] = {}
    rejects: list[RowProblem] = []
    failures: list[RowProblem] = []
    offset = 0
    for part in ordered:
        report = part.report
        for endpoint, counts in report.by_endpoint.items():
            by_endpoint.setdefault(endpoint, Counter()).update(counts)
        batches.update(report.batches)
        retries.update(report.retries)
        for header, values in report.rate_limit_headers.items():
            headers[header] = tuple(dict.fromkeys((*headers.get(header, ()), *values)))
        rejects.extend(_renumber(problem, offset) for problem in report.rejects)
        failures.extend(_renumber(problem, offset) for problem in report.failures)
        offset += report.rows_in
    stopped = [part.report.stopped for part in ordered if part.report.stopped]
    reports = [part.report for part in ordered]
    return SyncReport(
        name=first.name,
        kind=first.kind,
        rows_in=sum(r.rows_in for r in reports),
        sent=sum(r.sent for r in reports),
        unchanged=sum(r.unchanged for r in reports),
        rejected=sum(r.rejected for r in reports),
        failed=sum(r.failed for r in reports),
        pending=sum(r.pending for r in reports),
        by_endpoint={endpoint: dict(counts) for endpoint, counts in by_endpoint.items()},
        batches=dict(batches),
        requests_sent=sum(r.requests_sent for r in reports),
        retries=dict(retries),
        rate_limit_wait_seconds=sum(r.rate_limit_wait_seconds for r in reports),
        rate_limit_headers=headers,
        # Tasks overlap in time: the longest task bounds the run better than their sum.
        elapsed_seconds=max(r.elapsed_seconds for r in reports),
        stopped=stopped[0] if stopped else None,
        resumed=any(r.resumed for r in reports),
        resent_in_flight=sum(r.resent_in_flight for r in reports),
        mapping_changed=any(r.mapping_changed for r in reports),
        rejects=tuple(rejects),
        failures=tuple(failures),
    )


@attrs.frozen(kw_only=True)
class DistributedReport:
    """A distributed sync's outcome: the combined report and two tables in the engine's form.

    ``partitions`` has one row per partition (:data:`PARTITION_COLUMNS`); ``problems`` one
    row per rejected or failed row (:data:`PROBLEM_COLUMNS`: partition, row number within
    the partition, primary key, outcome, stage, field, reason, HTTP status, batch id). For
    Spark they are Spark DataFrames, for Dask pandas DataFrames.
    """

    report: SyncReport
    #: The instant every task measured events' ages from; pass it again to rerun the job.
    now: datetime
    partitions: Any = attrs.field(repr=False)
    problems: Any = attrs.field(repr=False)
    parts: tuple[PartitionReport, ...] = attrs.field(repr=False)

    def raise_for_failures(self, *, allow_rejected: bool = False) -> None:
        """:meth:`SyncReport.raise_for_failures` of the combined report."""
        self.report.raise_for_failures(allow_rejected=allow_rejected)

    def summary(self) -> str:
        """The combined report's summary, with the number of partitions."""
        return f"{self.report.summary()}\n  over {len(self.parts)} partitions"

    @property
    def ok(self) -> bool:
        """True when every row of every partition was accepted."""
        return self.report.ok


def utc(now: datetime | None) -> datetime:
    """``now`` checked, or the current UTC time: fixed once on the driver."""
    if now is None:
        return utc_now()
    if now.tzinfo is None:
        msg = "now must be timezone-aware"
        raise ConfigurationError(msg)
    return now
