"""Stage: engines. Sync a Spark DataFrame where it lives: ``mparticle_feed.spark.sync``.

Needs the ``spark`` extra (``pip install 'mparticle-feed[spark]'``); importing this module
imports pyspark, the package root does not.

The DataFrame is repartitioned by the mapping's identity columns (each user's rows in one
task), sorted within partitions by (user, primary key), and handed to the tasks as Arrow
record batches (``mapInArrow``): no conversion through pandas, so integers stay integers
and timestamps keep their time zone. Every task builds its own client from the pickled
settings and runs :func:`~mparticle_feed.sync_partition`; ``now`` is fixed on the driver.
The events and ids equal those of one process syncing the same rows in that order.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import functions as F  # noqa: N812 - pyspark's own convention
from pyspark.sql import types as T  # noqa: N812

from ._mapping.spec import RowMapping
from ._sync.partition import (
    PARTITION_COLUMNS,
    PROBLEM_COLUMNS,
    DistributedReport,
    PartitionReport,
    PartitionTask,
    arrow_source,
    check_run,
    combine_reports,
    shared_budget,
    utc,
)
from ._sync.send import Sender
from ._sync.state import MappingChange
from ._sync.tablerun import run_with_table_state
from ._sync.tablestate import TableState
from ._sync.tabletask import STATE_ATTRIBUTES, STATE_HASH, STATE_KEY, TableJob

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

__all__ = ["sync"]

_RESULT_SCHEMA = pa.schema([("partition", pa.int64()), ("report", pa.binary())])

_PARTITION_SCHEMA = T.StructType(
    [
        T.StructField(
            name,
            T.DoubleType() if name == "elapsed_seconds" else T.LongType(),
            nullable=False,
        )
        for name in PARTITION_COLUMNS
    ]
)
_PROBLEM_SCHEMA = T.StructType(
    [
        T.StructField(
            name,
            T.LongType() if name in ("partition", "row_number", "status") else T.StringType(),
            nullable=name not in ("partition", "row_number", "outcome", "stage", "reason"),
        )
        for name in PROBLEM_COLUMNS
    ]
)


def _task_function(task: PartitionTask) -> Any:
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        context = TaskContext.get()
        partition = context.partitionId() if context is not None else 0
        attempt = context.attemptNumber() if context is not None else 0
        part = task(arrow_source(batches), partition=partition, attempt=attempt)
        # The report travels back whole (rows' problems included); only the driver reads it.
        yield pa.RecordBatch.from_pylist(
            [{"partition": partition, "report": pickle.dumps(part)}], schema=_RESULT_SCHEMA
        )

    return run


def sync(
    df: DataFrame,
    mapping: RowMapping,
    client: Sender,
    *,
    partitions: int | None = None,
    by: Sequence[str] | None = None,
    name: str | None = None,
    now: datetime | None = None,
    historical_only: bool = False,
    chunk_size: int = 1000,
    budget: Literal["shared", "split"] = "shared",
    limiter_host: str = "127.0.0.1",
    state: TableState | None = None,
    on_mapping_change: MappingChange = "fail",
) -> DistributedReport:
    """Sync ``df``'s rows with ``mapping``, each Spark task delivering its own partition.

    ``client`` is an :class:`~mparticle_feed.EventsClient` (its settings are shipped to the
    tasks, each opening its own connections) or another picklable sender. ``partitions`` is
    the number of tasks (default: Spark's choice, ``spark.sql.shuffle.partitions`` which
    adaptive execution may coalesce); ``by`` names the
    columns that identify a user when the mapping's identities are computed by code.
    ``now`` (default: the driver's current UTC time) is the instant every task measures
    events' ages from.

    The tasks share one rate budget, the client's ``rate_limit``: with ``budget="shared"``
    (the default) a limiter service on the driver, reached at ``limiter_host`` (loopback by
    default; the driver's address when executors run elsewhere) and guarded by a token of
    the run's own, meters every task and passes a 429 seen by one task on to all; a task
    that cannot reach it, or every task with ``budget="split"``, paces at an equal static
    share (the rate over the number of partitions).

    Returns a :class:`~mparticle_feed.DistributedReport`: the combined
    :class:`~mparticle_feed.SyncReport` (``raise_for_failures()`` fails a job loudly) and
    two Spark DataFrames, ``partitions`` (counts per task) and ``problems`` (each rejected
    or failed row with stage, field and reason). A task that fails is retried by Spark;
    its retry resends the same bodies under the same ids (mParticle de-duplicates them),
    and only the successful attempt's report counts.

    With ``state`` (a :class:`~mparticle_feed.TableState`) only rows whose content changed
    since mParticle accepted them are sent: ``df`` is joined with the committed entries on
    the primary key (cast to text), each task logs its outbox beside the table before it
    sends, and the driver commits the accepted entries after the job, under the sync's
    lock. ``name`` keys the state (default: the mapping's kind); ``on_mapping_change`` is
    as for :func:`~mparticle_feed.sync`. A job that fails commits nothing: the next run
    sends what it left unsettled again (same bytes, same ids) and records what was
    accepted before it reads a row.
    """
    users, ordering = check_run(
        mapping, list(df.columns), by=by, partitions=partitions, budget=budget
    )
    fixed_now = utc(now)
    run_job = functools.partial(
        _job,
        mapping=mapping,
        client=client,
        users=users,
        ordering=ordering,
        fixed_now=fixed_now,
        partitions=partitions,
        historical_only=historical_only,
        chunk_size=chunk_size,
        budget=budget,
        limiter_host=limiter_host,
    )
    return run_with_table_state(
        df,
        run_job,
        _with_state,
        state=state,
        name=name,
        mapping=mapping,
        client=client,
        on_mapping_change=on_mapping_change,
    )


def _with_state(df: DataFrame, key: str, job: TableJob) -> DataFrame:
    """``df`` left-joined with the committed entries on the primary key (as text)."""
    if job.entries is None:
        return df
    # A local path with its scheme: Spark resolves a bare path against the cluster's default
    # file system (dbfs:/ on Databricks, hdfs:/ on EMR), not the driver's disk.
    location = job.entries if "://" in job.entries else "file://" + job.entries
    entries = df.sparkSession.read.parquet(location).select(
        F.col("key").alias(STATE_KEY),
        F.col("hash").alias(STATE_HASH),
        F.col("attributes").alias(STATE_ATTRIBUTES),
    )
    return df.join(entries, df[key].cast("string") == entries[STATE_KEY], "left")


def _job(
    df: DataFrame,
    *,
    mapping: RowMapping,
    client: Sender,
    users: tuple[str, ...],
    ordering: tuple[str, ...],
    fixed_now: datetime,
    name: str | None,
    job: TableJob | None,
    partitions: int | None,
    historical_only: bool,
    chunk_size: int,
    budget: str,
    limiter_host: str,
) -> DistributedReport:
    user_columns = [F.col(c) for c in users]
    # Without a number Spark chooses (Spark Connect has no df.rdd to count partitions with).
    grouped = (
        df.repartition(partitions, *user_columns)
        if partitions is not None
        else df.repartition(*user_columns)
    )
    ordered = grouped.sortWithinPartitions(*[F.col(c).asc_nulls_first() for c in ordering])
    tasks = partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions") or 200)
    with shared_budget(
        client, tasks=tasks, host=limiter_host, shared=budget == "shared"
    ) as limiter:
        task = PartitionTask(
            mapping=mapping,
            client=client,
            now=fixed_now,
            name=name,
            historical_only=historical_only,
            chunk_size=chunk_size,
            limiter=limiter,
            state=job,
        )
        rows = ordered.mapInArrow(_task_function(task), "partition long, report binary").collect()
    parts: list[PartitionReport] = [pickle.loads(row["report"]) for row in rows]  # noqa: S301 - written by our own tasks
    return _report(df.sparkSession, parts, fixed_now)


def _report(session: Any, parts: list[PartitionReport], now: datetime) -> DistributedReport:
    ordered = sorted(parts, key=lambda part: part.partition)
    partitions_frame = session.createDataFrame(
        [tuple(part.counts_record()[c] for c in PARTITION_COLUMNS) for part in ordered],
        schema=_PARTITION_SCHEMA,
    )
    problems_frame = session.createDataFrame(
        [
            tuple(record[c] for c in PROBLEM_COLUMNS)
            for part in ordered
            for record in part.problem_records()
        ],
        schema=_PROBLEM_SCHEMA,
    )
    return DistributedReport(
        report=combine_reports(ordered),
        now=now,
        partitions=partitions_frame,
        problems=problems_frame,
        parts=tuple(ordered),
    )
