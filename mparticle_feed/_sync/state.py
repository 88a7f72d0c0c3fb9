"""The incremental-state store (sync stage): what mParticle accepted, and the outbox.

One SQLite file (standard library only). For every sync name it keeps

* the mapping's fingerprint, so a changed mapping is noticed before anything is sent;
* per primary key, a hash of the content mParticle accepted last; for user-attribute
  syncs also one hash per attribute, so the next run can send only the attributes that
  changed and name the ones that disappeared in ``deleted_user_attributes``;
* the **outbox**: every request committed *before* it is sent — its exact body, endpoint,
  the ``source_request_id`` of each batch, the rows each batch carries and the state
  entries to record once it is accepted. An outcome is recorded only against an outbox
  batch; a resumed run replays what is left byte for byte before it maps any row. A
  settled request's body (it holds personal data) is deleted with its outcome;
* a per-sync sequence number that goes into every new batch's id (see
  :func:`~mparticle_feed._delivery.packing.derive_source_request_id`), and a version
  that every run bumps, so a plan made before a later run is recognised as superseded.

Every write is one SQLite transaction, so the file is always either before or after a
change. A file that is not a state file, truncated or corrupt raises :class:`StateError`
when opened: the store never silently starts again from zero. A state file written by
the previous release (schema 1) is migrated in place when opened for writing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from .._delivery.status import OutcomeStatus, StatusName
from .._errors import StateError
from .lock import hold_lock
from .records import (
    InFlightRequest,
    OutboxBatch,
    OutboxRequest,
    StateEntry,
    SyncStart,
    _dump_entries,
    _dump_rows,
    _load_entries,
    _load_rows,
    content_hash,
    mapping_changed,
)
from .state_entries import _LOOKUP_CHUNK, _UPSERT_ACCEPTED, _AcceptedEntries
from .statefile import _UPSERT_FROM_OUTBOX, StateFile, _cause

__all__ = [
    "MappingChange",
    "StateEntry",
    "InFlightRequest",
    "OutboxBatch",
    "OutboxRequest",
    "StateStore",
    "SyncStart",
    "content_hash",
]

logger = logging.getLogger(__name__)

#: What to do when a sync's mapping is not the one its state was written with.
#: ``"fail"`` raises :class:`StateError`; ``"resend"`` forgets the sync's state, so every
#: row is sent again; ``"keep"`` keeps it, so only rows whose output changed are sent.
MappingChange = Literal["fail", "resend", "keep"]


class StateStore(_AcceptedEntries):
    """The incremental state of any number of syncs, in one SQLite file.

    Open it with a path (created atomically when missing, readable by its owner only) or
    ``":memory:"``; use it as a context manager or call :meth:`close`. It is safe to
    share between the threads of one process (a lock serialises access). With
    ``read_only=True`` (what :func:`plan` uses) nothing is written, no lock is taken and
    the file may sit on a read-only file system. A run of a sync holds :meth:`run_lock`,
    so two processes never run the same sync against one file at the same time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool = False,
    ) -> None:
        self._path = str(path)
        self._clock = clock
        self._read_only = read_only
        self._lock = threading.RLock()
        opened = StateFile(self._path, read_only=read_only)
        self._conn = opened.conn
        self._schema = opened.schema
        # Without SQLite's JSON functions, accepted entries are parsed in Python instead.
        self._json = opened.json
        # A file opened read-only may predate the source column: it then holds no digests;
        # nor request bodies (each batch then holds its own).
        self._later_columns = opened.has_later_columns
        self._slices = opened.has_later_tables

    @property
    def path(self) -> str:
        """The state file's path."""
        return self._path

    def __repr__(self) -> str:
        return f"StateStore({self._path!r})"

    # --- transactions --------------------------------------------------------------------

    def _writable(self) -> None:
        if self._read_only:
            msg = f"state file {self._path} was opened read-only"
            raise StateError(msg)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._writable()
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                msg = f"cannot write state file {self._path}: {_cause(exc)}"
                raise StateError(msg) from exc
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled back already (a full disk does): only roll back
                # what is still open, so the cause is what the user sees.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    msg = f"cannot write state file {self._path}: {_cause(exc)}"
                    raise StateError(msg) from exc
                raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                msg = f"cannot read state file {self._path}: {exc}"
                raise StateError(msg) from exc

    # --- one run per sync ----------------------------------------------------------------

    @contextmanager
    def run_lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive lock of sync ``name`` on this file for a run.

        Raises :class:`StateLockedError`, naming the holder (pid, host, start time), when
        another run of the same sync holds it. The lock is the operating system's: a
        process that dies releases it, so the next run takes over safely. Other sync
        names on the same file are not blocked.
        """
        if self._path == ":memory:":
            yield
            return
        self._writable()
        with hold_lock(self._path, name):
            yield

    # --- syncs ---------------------------------------------------------------------------

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
        """Start a run of sync ``name``: check its mapping, mark it running, bump its version.

        Raises :class:`StateError` when the sync was last run with another mapping
        fingerprint or kind and ``on_mapping_change`` is ``"fail"``. ``plan`` is the
        id of a plan this run sends; its requests (``outbox``, with the plan's
        ``next_seq``) are committed to the outbox in the same transaction, so a send that
        dies at any point is resumed by sending the plan again. Unsettled outbox batches
        stay: the run replays them (see :meth:`outbox`).
        """
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT kind, fingerprint, last_status, version, next_seq, plan FROM syncs "
                "WHERE name = ?",
                (name,),
            ).fetchone()
            in_flight = self._in_flight(conn, name)
            changed = mapping_changed(
                name,
                None if row is None else (row[0], row[1]),
                kind=kind,
                fingerprint=fingerprint,
                on_mapping_change=on_mapping_change,
            )
            cleared = False
            if changed and on_mapping_change == "resend":
                conn.execute("DELETE FROM accepted WHERE name = ?", (name,))
                cleared = True
            now = float(self._clock())
            conn.execute(
                "INSERT INTO syncs (name, kind, fingerprint, last_started, last_status, version, "
                "plan, key_count) VALUES (?, ?, ?, ?, 'running', 1, ?, "
                "(SELECT count(*) FROM accepted WHERE name = ?)) ON CONFLICT (name) DO UPDATE SET "
                "kind = excluded.kind, fingerprint = excluded.fingerprint, "
                "last_started = excluded.last_started, last_status = 'running', "
                "version = syncs.version + 1, plan = excluded.plan",
                (name, kind, fingerprint, now, plan, name),
            )
            if outbox:
                self._outbox_insert(conn, name, outbox, next_seq)
            known = conn.execute(
                "SELECT count(*) FROM accepted WHERE name = ?", (name,)
            ).fetchone()[0]
        if in_flight:
            logger.warning(
                "sync %r: the previous run left %d batch(es) unsettled in the outbox; "
                "they are sent again byte for byte, with the same source_request_id",
                name,
                len(in_flight),
            )
        return SyncStart(
            name=name,
            first_run=row is None,
            mapping_changed=changed,
            state_cleared=cleared,
            previous_status=None if row is None else row[2],
            in_flight=in_flight,
            known_keys=int(known),
            version=0 if row is None else int(row[3]),
            next_seq=0 if row is None else int(row[4]),
            plan=None if row is None else row[5],
        )

    def finish_sync(self, name: str, *, status: Literal["finished", "stopped"]) -> None:
        """Record how a run of ``name`` ended."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE syncs SET last_finished = ?, last_status = ? WHERE name = ?",
                (float(self._clock()), status, name),
            )

    def fingerprint(self, name: str) -> str | None:
        """The mapping fingerprint sync ``name`` last ran with, or None if it never ran."""
        rows = self._read("SELECT fingerprint FROM syncs WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def last_mapping(self, name: str) -> tuple[str, str] | None:
        """The sync kind and mapping fingerprint ``name`` last ran with (None: never ran)."""
        rows = self._read("SELECT kind, fingerprint FROM syncs WHERE name = ?", (name,))
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    def version(self, name: str) -> tuple[int, int]:
        """Sync ``name``'s run version and next id sequence number (``(0, 0)`` if new)."""
        if self._schema == 1:
            return 0, 0
        rows = self._read("SELECT version, next_seq FROM syncs WHERE name = ?", (name,))
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def sync_names(self) -> list[str]:
        """Every sync name the store knows, sorted."""
        return [str(r[0]) for r in self._read("SELECT name FROM syncs ORDER BY name")]

    def forget(self, name: str) -> int:
        """Drop everything known about sync ``name``; return how many keys were forgotten."""
        with self._transaction() as conn:
            count = conn.execute(
                "SELECT count(*) FROM accepted WHERE name = ?", (name,)
            ).fetchone()[0]
            # A file opened for writing has every table (see StateFile).
            for table in ("accepted", "outbox_batches", "outbox", "syncs", "source_slices"):
                conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608
        return int(count)

    # --- rows ----------------------------------------------------------------------------

    # --- the outbox ----------------------------------------------------------------------

    def outbox_add(
        self,
        name: str,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        *,
        next_seq: int = 0,
        settled: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Commit requests ``(endpoint, batches)`` to the outbox before they are sent.

        One transaction for all of them. ``next_seq`` is the first id sequence number not
        used yet: it is stored in the same transaction, so no later batch of this sync can
        get an id used here. ``settled`` are outcomes received since the last write
        (as for :meth:`settle_many`), recorded in the same transaction: a run writes
        the state once per request, not twice.
        """
        with self._transaction() as conn:
            self._settle(conn, name, settled)
            self._outbox_insert(conn, name, requests, next_seq)

    def _outbox_insert(
        self,
        conn: sqlite3.Connection,
        name: str,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        next_seq: int,
    ) -> None:
        now = float(self._clock())
        found = conn.execute(
            "SELECT coalesce(max(request_no), 0) FROM outbox WHERE name = ?", (name,)
        ).fetchone()[0]
        number = int(found)
        for endpoint, batches in requests:
            number += 1
            # The request's bytes in one blob of the rowid table, each batch a slice of it:
            # SQLite writes and frees one large value far faster than a hundred small ones
            # in the WITHOUT ROWID batch table.
            body = b"[" + b",".join(batch.body for batch in batches) + b"]"
            conn.execute(
                "INSERT INTO outbox (name, request_no, endpoint, created_at, body) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, number, str(endpoint), now, body),
            )
            start = 1
            values = []
            for position, batch in enumerate(batches):
                end = start + len(batch.body)
                rows = _dump_rows(batch.rows)
                values.append(
                    (
                        name,
                        batch.source_request_id,
                        number,
                        position,
                        start,
                        end,
                        rows,
                        rows if batch.event_rows is batch.rows else _dump_rows(batch.event_rows),
                        _dump_entries(batch.entries),
                    )
                )
                start = end + 1
            conn.executemany(
                "INSERT INTO outbox_batches (name, source_request_id, request_no, position, "
                "body, body_start, body_end, rows, event_rows, entries) "
                "VALUES (?, ?, ?, ?, x'', ?, ?, ?, ?, ?)",
                values,
            )
        conn.execute(
            "UPDATE syncs SET next_seq = max(next_seq, ?) WHERE name = ?", (next_seq, name)
        )

    def current_plan(self, name: str) -> str | None:
        """The id of the plan the last run of ``name`` sent (None if it ran a sync)."""
        if self._schema == 1:
            return None
        rows = self._read("SELECT plan FROM syncs WHERE name = ?", (name,))
        return None if not rows or rows[0][0] is None else str(rows[0][0])

    def outbox(self, name: str) -> list[OutboxRequest]:
        """Sync ``name``'s unsettled outbox requests, oldest first, with their unsettled batches."""
        requests: dict[int, tuple[str, float, list[OutboxBatch]]] = {}
        bodies: dict[int, bytes | None] = {}
        later = self._later_columns
        body_column, slice_columns = (
            ("body", "body_start, body_end") if later else ("NULL", "NULL, NULL")
        )
        for number, endpoint, created, whole in self._read(
            f"SELECT request_no, endpoint, created_at, {body_column} FROM outbox "  # noqa: S608
            "WHERE name = ? ORDER BY request_no",
            (name,),
        ):
            requests[int(number)] = (str(endpoint), float(created), [])
            bodies[int(number)] = None if whole is None else bytes(whole)
        for number, rid, body, start, end, rows, event_rows, entries in self._read(
            "SELECT request_no, source_request_id, body, "  # noqa: S608 - column names only
            f"{slice_columns}, rows, event_rows, entries "
            "FROM outbox_batches WHERE name = ? ORDER BY request_no, position",
            (name,),
        ):
            holder = requests.get(int(number))
            if holder is None:
                msg = f"state file {self._path}: outbox batch {rid} has no request"
                raise StateError(msg)
            holder[2].append(
                OutboxBatch(
                    source_request_id=rid,
                    body=self._batch_body(rid, body, bodies[int(number)], start, end),
                    rows=_load_rows(rows),
                    event_rows=_load_rows(event_rows),
                    entries=_load_entries(entries),
                )
            )
        return [
            OutboxRequest(
                request_no=number, endpoint=endpoint, created_at=created, batches=tuple(batches)
            )
            for number, (endpoint, created, batches) in requests.items()
            if batches
        ]

    def _batch_body(
        self, rid: str, body: bytes, whole: bytes | None, start: int | None, end: int | None
    ) -> bytes:
        """A batch's bytes: its own (older outboxes), or its slice of the request's."""
        if start is None or end is None:
            return bytes(body)
        if whole is None or not 0 < start <= end < len(whole):
            msg = f"state file {self._path}: outbox batch {rid} lost its request's bytes"
            raise StateError(msg)
        return whole[start:end]

    def settle(
        self,
        name: str,
        *,
        source_request_id: str,
        outcome: OutcomeStatus | StatusName,
    ) -> bool:
        """Record an outbox batch's outcome; return False when it was not in the outbox.

        ``accepted`` stores the batch's state entries and removes it from the outbox,
        in one transaction, with its body once its request has no batch left; ``rejected``
        (mParticle refused it for good) removes it; ``failed`` and ``pending`` leave it,
        to be replayed byte for byte by the next run: whether it arrived is unknown.
        """
        if outcome not in ("accepted", "rejected"):
            return bool(
                self._read(
                    "SELECT 1 FROM outbox_batches WHERE name = ? AND source_request_id = ?",
                    (name, source_request_id),
                )
            )
        return self.settle_many(name, [(source_request_id, outcome)]) == 1

    def settle_many(self, name: str, outcomes: Sequence[tuple[str, str]]) -> int:
        """Record ``(source_request_id, outcome)`` pairs in one transaction (see :meth:`settle`).

        Returns how many batches left the outbox.
        """
        if not any(outcome in ("accepted", "rejected") for _, outcome in outcomes):
            return 0
        with self._transaction() as conn:
            return self._settle(conn, name, outcomes)

    def _settle(
        self, conn: sqlite3.Connection, name: str, outcomes: Sequence[tuple[str, str]]
    ) -> int:
        final = [(rid, outcome) for rid, outcome in outcomes if outcome in ("accepted", "rejected")]
        settled = 0
        for start in range(0, len(final), _LOOKUP_CHUNK):
            chunk = final[start : start + _LOOKUP_CHUNK]
            accepted = {rid for rid, outcome in chunk if outcome == "accepted"}
            marks = ",".join("?" * len(chunk))
            found = conn.execute(
                "SELECT source_request_id, request_no, entries FROM outbox_batches "  # noqa: S608
                f"WHERE name = ? AND source_request_id IN ({marks})",
                [name, *(rid for rid, _ in chunk)],
            ).fetchall()
            if accepted:
                self._store_entries(conn, name, found, accepted)
            conn.execute(
                f"DELETE FROM outbox_batches WHERE name = ? AND source_request_id IN ({marks})",  # noqa: S608
                [name, *(rid for rid, _ in chunk)],
            )
            numbers = sorted({int(number) for _, number, _ in found})
            conn.executemany(
                "DELETE FROM outbox WHERE name = ? AND request_no = ? AND NOT EXISTS "
                "(SELECT 1 FROM outbox_batches b WHERE b.name = ? AND b.request_no = ?)",
                [(name, number, name, number) for number in numbers],
            )
            settled += len(found)
        return settled

    def _store_entries(
        self,
        conn: sqlite3.Connection,
        name: str,
        found: list[tuple[str, int, str]],
        accepted: set[str],
    ) -> None:
        """Upsert the entries of the ``accepted`` batches among ``found`` into ``accepted``."""
        ids = [rid for rid, _, _ in found if rid in accepted]
        if not ids:
            return
        if self._json and not any(rid in accepted and "\\u0000" in text for rid, _, text in found):
            # Straight from the stored JSON, inside SQLite: no entry is parsed in Python.
            # (SQLite's JSON functions cut text at a NUL: such keys are parsed in Python.)
            marks = ",".join("?" * len(ids))
            conn.execute(
                _UPSERT_FROM_OUTBOX.format(marks=marks), [name, float(self._clock()), name, *ids]
            )
            return
        entries = [
            entry for rid, _, text in found if rid in accepted for entry in _load_entries(text)
        ]
        conn.executemany(_UPSERT_ACCEPTED, self._accepted_rows(name, entries))

    def _in_flight(self, conn: sqlite3.Connection, name: str) -> tuple[InFlightRequest, ...]:
        return tuple(
            InFlightRequest(
                source_request_id=r[0],
                endpoint=r[1],
                row_count=len(_load_rows(r[2])),
                started_at=r[3],
            )
            for r in conn.execute(
                "SELECT b.source_request_id, o.endpoint, b.rows, o.created_at "
                "FROM outbox_batches b JOIN outbox o "
                "ON o.name = b.name AND o.request_no = b.request_no "
                "WHERE b.name = ? ORDER BY b.request_no, b.position",
                (name,),
            )
        )

    def in_flight(self, name: str) -> list[InFlightRequest]:
        """Batches of ``name`` in the outbox whose outcome is not settled."""
        if self._schema == 1:
            return []
        with self._lock:
            try:
                return list(self._in_flight(self._conn, name))
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                msg = f"cannot read state file {self._path}: {exc}"
                raise StateError(msg) from exc

    # --- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
