"""Stage: engines. Sync a Dask DataFrame where it lives: ``mparticle_feed.dask.sync``.

Needs the ``dask`` extra (``pip install 'mparticle-feed[dask]'``); importing this module
imports dask, the package root does not.

The DataFrame is shuffled by the mapping's identity columns (each user's rows in one
partition); each task sorts its partition by (user, primary key), turns it into Arrow record
batches and runs :func:`~mparticle_feed.sync_partition` with its own client. Give the
DataFrame Arrow dtypes (``dd.read_parquet(..., dtype_backend="pyarrow")``, or
``convert_dtypes(dtype_backend="pyarrow")``): numpy dtypes have already turned nullable
integers into floats (``5`` into ``5.0``, which changes the bytes sent), which no later step
can undo.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import dask
import pandas as pd
import pyarrow as pa

from ._errors import ConfigurationError
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
    import dask.dataframe as dd

__all__ = ["sync"]


def _run_partition(
    frame: pd.DataFrame, task: PartitionTask, ordering: list[str], partition: int
) -> PartitionReport:
    ordered = frame.sort_values(ordering, kind="stable", na_position="first")
    table = pa.Table.from_pandas(ordered, preserve_index=False)
    return task(arrow_source(table.to_batches(max_chunksize=task.chunk_size)), partition=partition)


def sync(
    ddf: dd.DataFrame,
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
    retries: int = 0,
    state: TableState | None = None,
    on_mapping_change: MappingChange = "fail",
) -> DistributedReport:
    """Sync ``ddf``'s rows with ``mapping``, each Dask task delivering its own partition.

    ``client`` is an :class:`~mparticle_feed.EventsClient` (its settings travel to the
    tasks, each opening its own connections) or another picklable sender. ``partitions`` is
    the number of partitions after the shuffle (default: ``ddf``'s); ``by`` names the columns
    that identify a user when the mapping's identities are computed by code. ``now``
    (default: the current UTC time here) is the instant every task measures events' ages
    from. ``retries`` is how often a distributed scheduler runs a failed task again; a rerun
    resends the same bodies under the same ids, which mParticle de-duplicates.

    The tasks share one rate budget, the client's ``rate_limit``: with ``budget="shared"``
    (the default) a limiter service here, reached at ``limiter_host`` (loopback by default;
    this machine's address when workers run elsewhere) and guarded by a token of the run's
    own, meters every task and passes a 429 seen by one task on to all; a task that cannot
    reach it, or every task with ``budget="split"``, paces at an equal static share (the
    rate over the number of partitions).

    Runs on the active scheduler (a ``distributed.Client`` when one is open) and returns a
    :class:`~mparticle_feed.DistributedReport` whose ``partitions`` and ``problems`` are
    pandas DataFrames.

    With ``state`` (a :class:`~mparticle_feed.TableState`) only rows whose content changed
    since mParticle accepted them are sent: ``ddf`` is merged with the committed entries on
    the primary key (as text), each task logs its outbox beside the table before it sends,
    and the accepted entries are committed here after the job, under the sync's lock.
    ``name`` keys the state (default: the mapping's kind); ``on_mapping_change`` is as for
    :func:`~mparticle_feed.sync`. A job that fails commits nothing: the next run sends what
    it left unsettled again (same bytes, same ids) and records what was accepted first.
    """
    if retries < 0:
        msg = f"retries must be 0 or more, got {retries}"
        raise ConfigurationError(msg)
    users, ordering = check_run(
        mapping, list(ddf.columns), by=by, partitions=partitions, budget=budget
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
        retries=retries,
    )
    return run_with_table_state(
        ddf,
        run_job,
        _with_state,
        state=state,
        name=name,
        mapping=mapping,
        client=client,
        on_mapping_change=on_mapping_change,
    )


_JOIN = "__mparticle_feed_join_key"


def _with_state(ddf: dd.DataFrame, key: str, job: TableJob) -> dd.DataFrame:
    """``ddf`` left-merged with the committed entries on the primary key (as text)."""
    if job.entries is None:
        return ddf
    import dask.dataframe as dd

    entries = dd.read_parquet(job.entries, dtype_backend="pyarrow").rename(
        columns={"key": STATE_KEY, "hash": STATE_HASH, "attributes": STATE_ATTRIBUTES}
    )
    keyed = ddf.assign(**{_JOIN: ddf[key].astype("string[pyarrow]")})
    joined = keyed.merge(entries, how="left", left_on=_JOIN, right_on=STATE_KEY)
    return joined.drop(columns=[_JOIN])


def _job(
    ddf: dd.DataFrame,
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
    retries: int,
) -> DistributedReport:
    shuffled = ddf.shuffle(on=list(users), npartitions=partitions)
    run = dask.delayed(_run_partition, pure=False)
    pieces = shuffled.to_delayed()
    options: dict[str, Any] = {"retries": retries} if retries else {}
    with shared_budget(
        client, tasks=len(pieces), host=limiter_host, shared=budget == "shared"
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
        tasks = [run(piece, task, list(ordering), n) for n, piece in enumerate(pieces)]
        parts: list[PartitionReport] = list(dask.compute(*tasks, **options))
    report = combine_reports(parts)
    partitions_frame = pd.DataFrame(
        [part.counts_record() for part in parts], columns=list(PARTITION_COLUMNS)
    )
    problems_frame = pd.DataFrame(
        [record for part in parts for record in part.problem_records()],
        columns=list(PROBLEM_COLUMNS),
    )
    return DistributedReport(
        report=report,
        now=fixed_now,
        partitions=partitions_frame,
        problems=problems_frame,
        parts=tuple(parts),
    )
