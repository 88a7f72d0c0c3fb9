"""Incremental state as Parquet files under a directory (sync stage): :class:`TableState`.

The form of the state a Spark or Dask job reads as a table and joins with its input on the
primary key. Layout, one folder per sync name (``<slug>-<hash of the name>``)::

    <root>/<sync>/manifest.json          what is current: written to a new file, then renamed
    <root>/<sync>/entries-<uuid>.parquet key, hash, attributes (JSON text) per accepted key
    <root>/<sync>/outbox-<uuid>.jsonl    batches a committed run left unsettled
    <root>/<sync>/jobs/<job>/*.jsonl     the outbox logs of a run's driver and tasks
    <root>/<sync>/manifest.json.<h>.lock the sync's lock (held for a whole run)

A run holds the sync's lock from start to commit. It writes outbox logs (:mod:`.tablelog`)
while it sends; the commit folds them into a new entries file and a new manifest, renamed
over the old one: a reader sees the state before or after a run, never half of one. A run
that died before its commit left its logs in ``jobs/``: the next run replays their
unsettled batches (same bytes, same ids) and records their accepted entries before it
maps any row.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import attrs
import orjson

from .._delivery.status import OutcomeStatus, StatusName
from .._errors import ConfigurationError, StateError
from .lock import hold_lock
from .records import (
    InFlightRequest,
    OutboxBatch,
    OutboxRequest,
    StateEntry,
    SyncStart,
    mapping_changed,
)
from .state import MappingChange
from .tablefiles import ENTRY_COLUMNS, count_entries, load_entry, merge_entries, write_atomic
from .tablelog import LogSummary, OutboxLog, read_logs, request_line

__all__ = ["TableState"]

logger = logging.getLogger(__name__)

_FORMAT = "mparticle-feed-table-state"


def _sync_folder(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:40] or "sync"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{slug}-{digest}"


def _started(
    name: str, manifest: dict[str, Any] | None, *, kind: str, fingerprint: str
) -> dict[str, Any]:
    """The manifest of a run under way: the last one's, marked running, one run more."""
    old = manifest or {}
    return {
        "format": _FORMAT,
        "name": name,
        "kind": kind,
        "fingerprint": fingerprint,
        "runs": int(old.get("runs", 0)) + 1,
        "next_seq": int(old.get("next_seq", 0)),
        "entries": old.get("entries"),
        "count": int(old.get("count", 0)),
        "outbox": list(old.get("outbox", [])),
        "consumed_jobs": [],
        "last_status": "running",
    }


@attrs.define
class _Run:
    """A run of one sync under way in this process."""

    job: str
    cleared: bool
    pending_jobs: list[str]
    log: OutboxLog | None = None
    open_ids: set[str] = attrs.field(factory=set)
    known: dict[str, StateEntry] | None = None


class TableState:
    """The incremental state of any number of syncs as Parquet files under ``path``.

    Pass it as ``state`` to :func:`mparticle_feed.spark.sync` or
    :func:`mparticle_feed.dask.sync` (the engine joins the input with the entries on the
    primary key), or to :func:`~mparticle_feed.sync` in one process (the entries are read
    into memory). It keeps the promises of :class:`~mparticle_feed.StateStore`: requests are
    durable before they are sent, outcomes are recorded against them, a run that died is
    replayed by the next before it maps a row, and two runs of one sync never overlap (an
    operating-system lock per sync, released when its holder dies). The folder must be a
    file system every task can write (a shared mount on a cluster; local on one machine).
    Needs pyarrow. Plans (:func:`~mparticle_feed.plan`) are sent with a ``StateStore``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._root = os.path.abspath(os.fspath(path))
        self._clock = clock
        self._lock = threading.RLock()
        self._runs: dict[str, _Run] = {}
        try:
            os.makedirs(self._root, mode=0o700, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the table state folder {self._root}: {exc.strerror or exc}"
            raise StateError(msg) from exc

    @property
    def path(self) -> str:
        """The state's folder."""
        return self._root

    def __repr__(self) -> str:
        return f"TableState({self._root!r})"

    # --- the manifest --------------------------------------------------------------------

    def folder(self, name: str) -> str:
        """The folder of sync ``name`` (created when first written)."""
        return os.path.join(self._root, _sync_folder(name))

    def _manifest_path(self, name: str) -> str:
        return os.path.join(self.folder(name), "manifest.json")

    def _manifest(self, name: str) -> dict[str, Any] | None:
        path = self._manifest_path(name)
        try:
            with open(path, "rb") as handle:
                data = orjson.loads(handle.read())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            msg = f"table state manifest {path} is not readable: {exc}"
            raise StateError(msg) from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("name") != name:
            msg = f"{path} is not the manifest of sync {name!r} in a table state"
            raise StateError(msg)
        return data

    def _save(self, name: str, manifest: dict[str, Any]) -> None:
        os.makedirs(self.folder(name), mode=0o700, exist_ok=True)
        write_atomic(self._manifest_path(name), orjson.dumps(manifest, option=orjson.OPT_INDENT_2))

    def sync_names(self) -> list[str]:
        """Every sync name the state knows, sorted."""
        names = []
        for entry in sorted(os.listdir(self._root)):
            path = os.path.join(self._root, entry, "manifest.json")
            if os.path.isfile(path):
                with open(path, "rb") as handle:
                    names.append(str(orjson.loads(handle.read()).get("name")))
        return sorted(names)

    def fingerprint(self, name: str) -> str | None:
        """The mapping fingerprint sync ``name`` last ran with, or None if it never ran."""
        manifest = self._manifest(name)
        return None if manifest is None else str(manifest["fingerprint"])

    def last_mapping(self, name: str) -> tuple[str, str] | None:
        """The sync kind and mapping fingerprint ``name`` last ran with (None: never ran)."""
        manifest = self._manifest(name)
        return None if manifest is None else (str(manifest["kind"]), str(manifest["fingerprint"]))

    def kind(self, name: str) -> str | None:
        """The kind of sync ``name`` (``custom_event``, ...), or None if it never ran."""
        manifest = self._manifest(name)
        return None if manifest is None else str(manifest["kind"])

    def version(self, name: str) -> tuple[int, int]:
        """Sync ``name``'s run version and next id sequence number (``(0, 0)`` if new)."""
        manifest = self._manifest(name)
        return (0, 0) if manifest is None else (int(manifest["runs"]), int(manifest["next_seq"]))

    def current_plan(self, name: str) -> str | None:
        """Always None: a table state does not send plans."""
        return None

    def entries_path(self, name: str) -> str | None:
        """The Parquet file of sync ``name``'s committed entries (None when it has none)."""
        manifest = self._manifest(name)
        if manifest is None or manifest.get("entries") is None:
            return None
        return os.path.join(self.folder(name), str(manifest["entries"]))

    def count(self, name: str) -> int:
        """How many primary keys of sync ``name`` have a committed entry."""
        manifest = self._manifest(name)
        return 0 if manifest is None else int(manifest["count"])

    def entries(self, name: str) -> Iterator[StateEntry]:
        """Every committed entry of sync ``name``, in key order."""
        path = self.entries_path(name)
        if path is None:
            return
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=list(ENTRY_COLUMNS))
        columns = [table.column(c).to_pylist() for c in ENTRY_COLUMNS]
        for key, digest, attributes in zip(*columns, strict=True):
            yield load_entry(key, digest, attributes)

    # --- one run per sync ----------------------------------------------------------------

    @contextmanager
    def run_lock(self, name: str) -> Iterator[None]:
        """Hold sync ``name``'s lock for a run (:class:`StateLockedError` when held)."""
        os.makedirs(self.folder(name), mode=0o700, exist_ok=True)
        with hold_lock(self._manifest_path(name), name):
            yield

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
        """Start a run of ``name`` (hold :meth:`run_lock`): check the mapping, find what
        earlier runs left unsettled. Raises :class:`StateError` as
        :meth:`StateStore.begin_sync` does."""
        if plan is not None or outbox:
            msg = "a TableState does not send plans; send them with a StateStore"
            raise ConfigurationError(msg)
        manifest = self._manifest(name)
        changed = mapping_changed(
            name,
            None if manifest is None else (str(manifest["kind"]), str(manifest["fingerprint"])),
            kind=kind,
            fingerprint=fingerprint,
            on_mapping_change=on_mapping_change,
        )
        self._clean(name, manifest)
        run = _Run(
            job=uuid.uuid4().hex,
            cleared=changed and on_mapping_change == "resend",
            pending_jobs=self._job_folders(name),
        )
        previous = None if manifest is None else str(manifest.get("last_status"))
        fresh = _started(name, manifest, kind=kind, fingerprint=fingerprint)
        fresh["last_started"] = float(self._clock())
        if run.cleared:
            fresh.update(entries=None, count=0)
        self._save(name, fresh)
        if run.cleared and manifest is not None and manifest.get("entries") is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.folder(name), str(manifest["entries"])))
        with self._lock:
            self._runs[name] = run
        in_flight = self.in_flight(name)
        if in_flight:
            logger.warning(
                "sync %r: an earlier run left %d batch(es) unsettled; they are sent again byte "
                "for byte, with the same source_request_id",
                name,
                len(in_flight),
            )
        return SyncStart(
            name=name,
            first_run=manifest is None,
            mapping_changed=changed,
            state_cleared=run.cleared,
            previous_status=previous,
            in_flight=tuple(in_flight),
            known_keys=int(fresh["count"]),
            version=0 if manifest is None else int(manifest["runs"]),
            next_seq=int(fresh["next_seq"]),
        )

    def _job_folders(self, name: str) -> list[str]:
        jobs = os.path.join(self.folder(name), "jobs")
        if not os.path.isdir(jobs):
            return []
        return sorted(
            (os.path.join(jobs, job) for job in os.listdir(jobs)),
            key=lambda path: (os.stat(path).st_mtime_ns, path),
        )

    def _clean(self, name: str, manifest: dict[str, Any] | None) -> None:
        """Remove the logs a commit folded in but could not delete (it died just after)."""
        if manifest is None:
            return
        for job in manifest.get("consumed_jobs", []):
            shutil.rmtree(os.path.join(self.folder(name), "jobs", str(job)), ignore_errors=True)

    def _run(self, name: str) -> _Run:
        with self._lock:
            run = self._runs.get(name)
        if run is None:
            msg = f"sync {name!r} has no run under way on {self!r} (call begin_sync first)"
            raise StateError(msg)
        return run

    def _logs(self, name: str, run: _Run | None) -> list[str]:
        """Every outbox log a commit of ``name`` folds in, oldest first."""
        manifest = self._manifest(name) or {}
        folder = self.folder(name)
        paths = [os.path.join(folder, str(p)) for p in manifest.get("outbox", [])]
        if run is None:  # no run under way here: every job folder a commit did not fold in
            done = {str(job) for job in manifest.get("consumed_jobs", [])}
            jobs = [j for j in self._job_folders(name) if os.path.basename(j) not in done]
        else:
            jobs = [*run.pending_jobs, os.path.join(folder, "jobs", run.job)]
        for job in jobs:
            if os.path.isdir(job):
                files = sorted(os.listdir(job), key=lambda f: (f != "driver.jsonl", f))
                paths.extend(os.path.join(job, f) for f in files if f.endswith(".jsonl"))
        return paths

    def job_folder(self, name: str) -> str:
        """The folder the current run's task logs go to."""
        return os.path.join(self.folder(name), "jobs", self._run(name).job)

    # --- rows ----------------------------------------------------------------------------

    def get_many(self, name: str, keys: Iterable[str]) -> dict[str, StateEntry]:
        """Entries for those ``keys`` that have one: committed, or accepted since."""
        run = self._runs.get(name)
        known = None if run is None else run.known
        if known is None:
            # A key occurs once per run (duplicates are rejected while mapping), so what the
            # run settles after this first lookup cannot change a later one.
            known = {e.key: e for e in self.entries(name)}
            for entry in read_logs(self._logs(name, run)).accepted:
                known[entry.key] = entry
            if run is not None:
                run.known = known
        return {key: known[key] for key in keys if key in known}

    # --- the outbox ----------------------------------------------------------------------

    def _driver_log(self, name: str) -> OutboxLog:
        run = self._run(name)
        if run.log is None:
            folder = self.job_folder(name)
            os.makedirs(folder, mode=0o700, exist_ok=True)
            run.log = OutboxLog(os.path.join(folder, "driver.jsonl"), clock=self._clock)
        return run.log

    def outbox_add(
        self,
        name: str,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        *,
        next_seq: int = 0,
        settled: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Write requests to this run's outbox log, durably, before they are sent."""
        run = self._run(name)
        self._driver_log(name).add(requests, next_seq=next_seq, settled=settled, track=run.open_ids)

    def outbox(self, name: str) -> list[OutboxRequest]:
        """Requests earlier runs (and this one) left unsettled, oldest first."""
        run = self._runs.get(name)
        unsettled = list(read_logs(self._logs(name, run)).unsettled)
        if run is not None:
            run.open_ids.update(b.source_request_id for r in unsettled for b in r.batches)
        return unsettled

    def in_flight(self, name: str) -> list[InFlightRequest]:
        """Batches of ``name`` whose outcome is not settled."""
        return [
            InFlightRequest(
                source_request_id=batch.source_request_id,
                endpoint=request.endpoint,
                row_count=len(batch.rows),
                started_at=request.created_at,
            )
            for request in self.outbox(name)
            for batch in request.batches
        ]

    def settle(
        self,
        name: str,
        *,
        source_request_id: str,
        outcome: OutcomeStatus | StatusName,
    ) -> bool:
        """Record an outbox batch's outcome; False when it was not in the outbox."""
        run = self._run(name)
        if outcome not in ("accepted", "rejected"):
            return source_request_id in run.open_ids
        return self.settle_many(name, [(source_request_id, outcome)]) == 1

    def settle_many(self, name: str, outcomes: Sequence[tuple[str, str]]) -> int:
        """Record ``(source_request_id, outcome)`` pairs; how many batches were settled."""
        run = self._run(name)
        return self._driver_log(name).settle(outcomes, known=run.open_ids)

    # --- the commit ----------------------------------------------------------------------

    def finish_sync(self, name: str, *, status: Literal["finished", "stopped"]) -> None:
        """Commit the run: fold its outbox logs into a new entries file and manifest."""
        self.commit(name, status=status)
        self._end_run(name)

    def _end_run(self, name: str) -> None:
        with self._lock:
            run = self._runs.pop(name, None)
        if run is not None and run.log is not None:
            run.log.close()

    def commit(
        self,
        name: str,
        *,
        status: str = "running",
        superseded: Iterable[str] = (),
    ) -> LogSummary:
        """Fold every outbox log of the run so far into the table, atomically.

        The entries of accepted batches replace those of their keys; batches still
        unsettled move to an outbox file the next run replays, except those of the logs in
        ``superseded`` (failed attempts of tasks that a later attempt ran again). A new
        entries file is written, then the manifest is renamed over the old one; only then
        are the folded logs and the old files deleted. Returns what the logs added up to.
        """
        run = self._run(name)
        if run.log is not None:
            run.log.close()
            run.log = None
        manifest = self._manifest(name)
        if manifest is None:
            msg = f"sync {name!r} has no manifest in {self!r}"
            raise StateError(msg)
        dropped = {os.path.abspath(p) for p in superseded}
        logs = self._logs(name, run)
        keep = [p for p in logs if os.path.abspath(p) not in dropped]
        # A failed attempt's entries first: the attempt that succeeded has the last word.
        summary = read_logs([p for p in logs if p not in keep] + keep, replay=keep)
        folder = self.folder(name)
        old_files = [manifest.get("entries"), *manifest.get("outbox", [])]
        current = manifest.get("entries")
        entries_file = merge_entries(
            folder, None if current is None else str(current), summary.accepted
        )
        outbox_files = []
        if summary.unsettled:
            outbox_name = f"outbox-{uuid.uuid4().hex}.jsonl"
            write_atomic(
                os.path.join(folder, outbox_name),
                b"".join(
                    request_line(r.endpoint, r.batches, r.created_at) for r in summary.unsettled
                ),
            )
            outbox_files.append(outbox_name)
        consumed = [os.path.basename(job) for job in [*run.pending_jobs, self.job_folder(name)]]
        manifest.update(
            entries=entries_file,
            count=count_entries(folder, entries_file),
            outbox=outbox_files,
            next_seq=max(int(manifest["next_seq"]), summary.next_seq),
            consumed_jobs=consumed,
            last_status=status,
            last_finished=float(self._clock()),
        )
        self._save(name, manifest)
        for stale in old_files:
            if stale is not None and stale not in (entries_file, *outbox_files):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, str(stale)))
        self._clean(name, manifest)
        run.pending_jobs = []
        run.cleared = False
        run.known = None
        run.job = uuid.uuid4().hex
        return summary

    def close(self) -> None:
        """Close the outbox logs of runs under way (idempotent)."""
        with self._lock:
            for run in self._runs.values():
                if run.log is not None:
                    run.log.close()
                    run.log = None

    def __enter__(self) -> TableState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
