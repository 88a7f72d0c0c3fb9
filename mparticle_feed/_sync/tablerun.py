"""A distributed sync's run against a :class:`TableState`, on the driver (sync stage).

Before the job: take the sync's lock, check the mapping, replay what an earlier job left
unsettled (same bytes, same ids) and commit it, so the job joins its input with current
entries. After the job: fold the tasks' outbox logs into the table, atomically. A job that
fails commits nothing; its logs stay, and the next run replays and records them first.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import attrs

from .._errors import ConfigurationError, StateError
from .._mapping.spec import RowMapping
from .partition import DistributedReport
from .records import SyncStart
from .report import SyncReport
from .run import _replay
from .send import Sender
from .state import MappingChange
from .tablestate import TableState
from .tabletask import TableJob

__all__ = ["TableRun", "run_with_table_state", "table_run"]

Frame = TypeVar("Frame")


@attrs.define
class TableRun:
    """The driver's side of a job: the picklable :class:`TableJob` for the tasks, and what
    the run found before it."""

    job: TableJob
    start: SyncStart
    replayed: Counter[str]

    def report(self, report: SyncReport) -> SyncReport:
        """``report`` (the tasks' combined report) with what the replay before the job did."""
        return attrs.evolve(
            report,
            resumed=report.resumed or self.start.resumed,
            resent_in_flight=report.resent_in_flight + len(self.start.in_flight),
            replayed=dict(self.replayed),
        )


@contextmanager
def table_run(
    state: TableState,
    *,
    name: str,
    mapping: RowMapping,
    client: Sender,
    on_mapping_change: MappingChange,
) -> Iterator[tuple[TableRun, set[str]]]:
    """Hold sync ``name``'s run: yields the run and a set to put the logs of the tasks
    whose reports the engine returned in; commits when the block ends without error."""
    if mapping.key_column is None:
        msg = "a table state needs the mapping's primary_key (the column it joins on)"
        raise ConfigurationError(msg)
    with state.run_lock(name):
        start = state.begin_sync(
            name,
            kind=mapping.kind.value,
            fingerprint=mapping.fingerprint(),
            on_mapping_change=on_mapping_change,
        )
        replayed, _ = _replay(state, name, client, None)
        left = state.commit(name).unsettled
        if left:
            state.finish_sync(name, status="stopped")
            count = sum(len(request.batches) for request in left)
            msg = (
                f"sync {name!r}: {count} batch(es) an earlier job left unsettled are still "
                "unsettled after sending them again; no row was read. Run again: they are "
                "replayed first"
            )
            raise StateError(msg)
        version, next_seq = state.version(name)
        run = TableRun(
            job=TableJob(
                name=name,
                folder=state.job_folder(name),
                entries=state.entries_path(name),
                version=version,
                next_seq=next_seq,
            ),
            start=start,
            replayed=replayed,
        )
        succeeded: set[str] = set()
        try:
            yield run, succeeded
            state.commit(name, status="finished", superseded=_superseded(run.job, succeeded))
        finally:
            state._end_run(name)


def _superseded(job: TableJob, succeeded: set[str]) -> list[str]:
    """The job's task logs whose reports the engine did not return: failed (or losing
    speculative) attempts of tasks another attempt completed."""
    folder = job.folder
    logs = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    return [
        os.path.join(folder, log)
        for log in logs
        if log.endswith(".jsonl")
        and log != "driver.jsonl"
        and os.path.join(folder, log) not in succeeded
    ]


def run_with_table_state(
    frame: Frame,
    run_job: Callable[..., DistributedReport],
    with_state: Callable[[Frame, str, TableJob], Frame],
    *,
    state: TableState | None,
    name: str | None,
    mapping: RowMapping,
    client: Sender,
    on_mapping_change: MappingChange,
) -> DistributedReport:
    """An engine's job over ``frame``: without a state as it is; with one inside
    :func:`table_run`, each row joined to its committed entry by ``with_state``.

    ``run_job(frame, name=..., job=...)`` runs the engine's tasks; the logs of the tasks
    it reports are the ones committed.
    """
    if state is None:
        return run_job(frame, name=name, job=None)
    sync_name = name or mapping.kind.value
    with table_run(
        state, name=sync_name, mapping=mapping, client=client, on_mapping_change=on_mapping_change
    ) as (run, succeeded):
        joined = with_state(frame, str(mapping.key_column), run.job)
        result = run_job(joined, name=sync_name, job=run.job)
        succeeded.update(part.state_log for part in result.parts if part.state_log)
    return attrs.evolve(result, report=run.report(result.report))
