"""A table state inside a Spark or Dask task (sync stage): :class:`TableJob`.

The driver joins the input with the committed entries on the primary key before the
shuffle, so every row arrives with its previous entry in three extra columns
(:data:`STATE_COLUMNS`). A task's state (:class:`TaskState`) takes the entries from those
columns as the rows stream past (the mapping never sees the columns), writes its outbox to
a log file of its own in the job's folder, durably, before each request is sent, and
records outcomes there. It never writes the table: the driver folds the job's logs in after
the job (:meth:`TableState.commit`).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import attrs

from .._delivery.status import OutcomeStatus, StatusName
from .records import InFlightRequest, OutboxBatch, OutboxRequest, StateEntry, SyncStart
from .state import MappingChange
from .tablefiles import load_entry
from .tablelog import OutboxLog, compact

__all__ = ["STATE_COLUMNS", "TableJob", "TaskState"]

#: The columns the driver's join adds: the committed key, hash and attributes (JSON text).
STATE_KEY = "__mparticle_feed_state_key"
STATE_HASH = "__mparticle_feed_state_hash"
STATE_ATTRIBUTES = "__mparticle_feed_state_attributes"
STATE_COLUMNS = (STATE_KEY, STATE_HASH, STATE_ATTRIBUTES)


@attrs.frozen(kw_only=True)
class TableJob:
    """What a task needs of a table state (it pickles): the sync, its job folder, the ids.

    ``entries`` is the committed entries' Parquet file the engine joins with (None on a
    first run); ``next_seq`` the first id sequence number of the job.
    """

    name: str
    folder: str
    entries: str | None
    version: int
    next_seq: int

    def task_state(self, partition: int, attempt: int) -> TaskState:
        """A task's state, logging to a file of its own (attempts never share one)."""
        log = os.path.join(self.folder, f"p{partition:05d}-a{attempt}-{uuid.uuid4().hex[:8]}.jsonl")
        return TaskState(self, log)


class TaskState:
    """The state one task of a distributed sync uses (a :class:`SyncState`)."""

    def __init__(self, job: TableJob, log_path: str) -> None:
        self.job = job
        self.log_path = log_path
        self._known: dict[str, StateEntry] = {}
        self._log: OutboxLog | None = None
        self._open: set[str] = set()

    def rows(self, source: Any) -> Any:
        """``source`` (a task's record batches, or ``[]``) without the state columns,
        their entries kept for :meth:`get_many` as the batches stream past."""
        if isinstance(source, list):
            return source
        import pyarrow as pa

        schema = source.schema
        keep = [i for i, name in enumerate(schema.names) if name not in STATE_COLUMNS]
        stripped = pa.schema([schema.field(i) for i in keep])

        def batches() -> Iterator[Any]:
            for batch in source:
                if STATE_KEY in schema.names:
                    self._take(batch)
                yield pa.RecordBatch.from_arrays([batch.column(i) for i in keep], schema=stripped)

        return pa.RecordBatchReader.from_batches(stripped, batches())

    def _take(self, batch: Any) -> None:
        keys = batch.column(STATE_KEY).to_pylist()
        hashes = batch.column(STATE_HASH).to_pylist()
        attributes = batch.column(STATE_ATTRIBUTES).to_pylist()
        for key, digest, attrs_text in zip(keys, hashes, attributes, strict=True):
            if key is not None and digest is not None:
                self._known[key] = load_entry(key, digest, attrs_text)

    # --- the protocol --------------------------------------------------------------------

    def run_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The driver holds the sync's lock for the whole job."""
        return contextlib.nullcontext()

    def begin_sync(
        self,
        name: str,
        *,
        kind: str,
        fingerprint: str,
        on_mapping_change: MappingChange = "fail",
        plan: str | None = None,
        outbox: Sequence[tuple[str, Sequence[OutboxBatch]]] = (),
        next_seq: int = 0,
    ) -> SyncStart:
        """The job's start, as the driver found it (it checked the mapping)."""
        return SyncStart(
            name=name,
            first_run=False,
            mapping_changed=False,
            state_cleared=False,
            previous_status=None,
            in_flight=(),
            known_keys=0,
            version=self.job.version,
            next_seq=self.job.next_seq,
        )

    def finish_sync(self, name: str, *, status: Literal["finished", "stopped"]) -> None:
        """Close the log and compact it: the driver commits after the job."""
        self.close()
        if os.path.exists(self.log_path):
            compact(self.log_path)

    def fingerprint(self, name: str) -> str | None:
        """Not known in a task (the driver checked it)."""
        return None

    def last_mapping(self, name: str) -> tuple[str, str] | None:
        """Not known in a task (the driver checked it)."""
        return None

    def version(self, name: str) -> tuple[int, int]:
        """The job's version and first id sequence number."""
        return self.job.version, self.job.next_seq

    def current_plan(self, name: str) -> str | None:
        """Always None: tasks send no plans."""
        return None

    def get_many(self, name: str, keys: Iterable[str]) -> dict[str, StateEntry]:
        """Committed entries of those keys, from the rows' joined columns.

        Each is handed out once (the differ asks once per key), so a task holds the entries
        of the rows between reading and diffing, not of its whole partition; a key asked
        again would read as new and be sent again, never lost."""
        known = self._known
        return {key: known.pop(key) for key in keys if key in known}

    def outbox_add(
        self,
        name: str,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        *,
        next_seq: int = 0,
        settled: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write the requests to the task's log, durably, before they are sent."""
        if self._log is None:
            os.makedirs(os.path.dirname(self.log_path), mode=0o700, exist_ok=True)
            self._log = OutboxLog(self.log_path, clock=time.time)
        self._log.add(requests, next_seq=next_seq, settled=settled, track=self._open)

    def outbox(self, name: str) -> list[OutboxRequest]:
        """Nothing: the driver replayed what earlier jobs left before this one started."""
        return []

    def settle(
        self,
        name: str,
        *,
        source_request_id: str,
        outcome: OutcomeStatus | StatusName,
    ) -> bool:
        """Record one batch's outcome in the log; False when it is not open."""
        if outcome not in ("accepted", "rejected"):
            return source_request_id in self._open
        return self.settle_many(name, [(source_request_id, outcome)]) == 1

    def settle_many(self, name: str, outcomes: Sequence[tuple[str, str]]) -> int:
        """Record outcomes in the log; how many batches were settled."""
        if self._log is None:
            return 0
        return self._log.settle(outcomes, known=self._open)

    def in_flight(self, name: str) -> list[InFlightRequest]:
        """Nothing from earlier jobs (the driver replayed them)."""
        return []

    def close(self) -> None:
        """Close the log (idempotent)."""
        if self._log is not None:
            self._log.close()
