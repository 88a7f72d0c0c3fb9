"""The incremental-state store: what mParticle last accepted, per sync and primary key.

One SQLite file (standard library only). For every sync name it keeps

* the mapping's fingerprint, so a changed mapping is noticed before anything is sent;
* per primary key, a hash of the content mParticle accepted last; for user-attribute
  syncs also one hash per attribute, so the next run can send only the attributes that
  changed and name the ones that disappeared in ``deleted_user_attributes``;
* the requests in flight, so a run that died part-way is reported on resume.

Only hashes are stored, never values: the file holds no personal data beyond keys.

Every write is one SQLite transaction, so the file is always either before or after a
change. A file that is not a state file, truncated or corrupt raises :class:`StateError`
when opened: the store never silently starts again from zero.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import attrs
import orjson

from .._errors import ConfigurationError, StateError

__all__ = [
    "MappingChange",
    "StateEntry",
    "InFlightRequest",
    "StateStore",
    "SyncStart",
    "content_hash",
]

logger = logging.getLogger(__name__)

_UPSERT_ACCEPTED = (
    "INSERT INTO accepted (name, key, hash, attributes, accepted_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, key) DO UPDATE SET "
    "hash = excluded.hash, attributes = excluded.attributes, "
    "accepted_at = excluded.accepted_at"
)

#: What to do when a sync's mapping is not the one its state was written with.
#: ``"fail"`` raises :class:`StateError`; ``"resend"`` forgets the sync's state, so every
#: row is sent again; ``"keep"`` keeps it, so only rows whose output changed are sent.
MappingChange = Literal["fail", "resend", "keep"]

SCHEMA_VERSION = 1
_SQLITE_HEADER = b"SQLite format 3\x00"
_APPLICATION = "mparticle_feed state"
# SQLite caps bound parameters per statement; stay well below the oldest default (999).
_LOOKUP_CHUNK = 500

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE syncs (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    last_started REAL,
    last_finished REAL,
    last_status TEXT
);
CREATE TABLE accepted (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    hash TEXT NOT NULL,
    attributes TEXT,
    accepted_at REAL NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE TABLE in_flight (
    name TEXT NOT NULL,
    source_request_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    started_at REAL NOT NULL,
    PRIMARY KEY (name, source_request_id)
) WITHOUT ROWID;
"""


def content_hash(value: Any) -> str:
    """A stable hash of a JSON-compatible value (keys sorted), as 32 hex characters."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # orjson refuses integers beyond 64 bits; the standard library writes them.
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@attrs.frozen(kw_only=True)
class StateEntry:
    """What mParticle last accepted for one primary key of one sync.

    ``attributes`` maps each user attribute name to the hash of its accepted value
    (user-attribute syncs only; ``None`` for event syncs).
    """

    key: str
    hash: str
    attributes: Mapping[str, str] | None = None


@attrs.frozen(kw_only=True)
class InFlightRequest:
    """A batch that was handed to the client but whose outcome was never recorded.

    (Named for the request that carried it; one record per batch.)
    """

    source_request_id: str
    endpoint: str
    row_count: int
    started_at: float


@attrs.frozen(kw_only=True)
class SyncStart:
    """What :meth:`StateStore.begin_sync` found about a sync's earlier runs."""

    name: str
    first_run: bool
    mapping_changed: bool
    state_cleared: bool
    previous_status: str | None
    in_flight: tuple[InFlightRequest, ...]
    known_keys: int

    @property
    def resumed(self) -> bool:
        """True when the previous run did not finish (it crashed or was stopped)."""
        return self.previous_status in ("running", "stopped")


class StateStore:
    """The incremental state of any number of syncs, in one SQLite file.

    Open it with a path (created when missing) or ``":memory:"``; use it as a context
    manager or call :meth:`close`. It is safe to share between the threads of one
    process (a lock serialises access). Two processes must not run the same sync name
    against one file at the same time.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        self._conn = self._open(self._path)

    @property
    def path(self) -> str:
        """The state file's path."""
        return self._path

    def __repr__(self) -> str:
        return f"StateStore({self._path!r})"

    # --- opening -------------------------------------------------------------------------

    @staticmethod
    def _check_header(path: str) -> bool:
        """True when the file exists and holds data; raise if it is not SQLite at all."""
        if path == ":memory:" or not os.path.exists(path):
            return False
        size = os.path.getsize(path)
        if size == 0:
            msg = (
                f"state file {path} is empty (truncated?); refusing to start again from zero. "
                "Delete it to resend every row."
            )
            raise StateError(msg)
        with open(path, "rb") as handle:
            header = handle.read(len(_SQLITE_HEADER))
        if header != _SQLITE_HEADER:
            msg = f"{path} is not an mparticle_feed state file (not an SQLite database)"
            raise StateError(msg)
        return True

    def _open(self, path: str) -> sqlite3.Connection:
        existed = self._check_header(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            msg = f"cannot open state file {path}: {exc}"
            raise StateError(msg) from exc
        try:
            if existed:
                self._verify(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power cut may lose the last
            # commits, which then resend with the same source_request_id (deduplicated).
            conn.execute("PRAGMA synchronous=NORMAL")
            if not existed:
                self._create(conn)
        except StateError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            msg = f"state file {path} is corrupt: {exc}"
            raise StateError(msg) from exc
        return conn

    @staticmethod
    def _verify(conn: sqlite3.Connection, path: str) -> None:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # Damaged text (quick_check's own report included) may not even decode.
            msg = f"state file {path} is corrupt or truncated: {exc}"
            raise StateError(msg) from exc
        if problems != ["ok"]:
            shown = "; ".join(problems[:3])
            msg = f"state file {path} is corrupt or truncated: {shown}"
            raise StateError(msg)
        if not {"meta", "syncs", "accepted", "in_flight"} <= tables:
            msg = f"{path} is an SQLite file but not an mparticle_feed state file"
            raise StateError(msg)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            msg = f"state file {path} is corrupt or truncated: {exc}"
            raise StateError(msg) from exc
        if meta.get("application") != _APPLICATION:
            msg = f"{path} is an SQLite file but not an mparticle_feed state file"
            raise StateError(msg)
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            msg = (
                f"state file {path} has schema version {meta.get('schema_version')!r}; "
                f"this version of mparticle_feed reads version {SCHEMA_VERSION}"
            )
            raise StateError(msg)

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("application", _APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- transactions --------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                msg = f"cannot write state file {self._path}: {exc}"
                raise StateError(msg) from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK")
                msg = f"cannot write state file {self._path}: {exc}"
                raise StateError(msg) from exc

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                msg = f"cannot read state file {self._path}: {exc}"
                raise StateError(msg) from exc

    # --- syncs ---------------------------------------------------------------------------

    def begin_sync(
        self,
        name: str,
        *,
        kind: str,
        fingerprint: str,
        on_mapping_change: MappingChange = "fail",
    ) -> SyncStart:
        """Start a run of sync ``name``: check its mapping and mark it running.

        Raises :class:`StateError` when the sync was last run with another mapping
        fingerprint or kind and ``on_mapping_change`` is ``"fail"``.
        """
        if on_mapping_change not in ("fail", "resend", "keep"):
            msg = f"on_mapping_change must be 'fail', 'resend' or 'keep', not {on_mapping_change!r}"
            raise ConfigurationError(msg)
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT kind, fingerprint, last_status FROM syncs WHERE name = ?", (name,)
            ).fetchone()
            in_flight = tuple(
                InFlightRequest(
                    source_request_id=r[0], endpoint=r[1], row_count=r[2], started_at=r[3]
                )
                for r in conn.execute(
                    "SELECT source_request_id, endpoint, row_count, started_at FROM in_flight "
                    "WHERE name = ? ORDER BY started_at",
                    (name,),
                )
            )
            changed = row is not None and (row[0] != kind or row[1] != fingerprint)
            cleared = False
            if changed and on_mapping_change == "fail":
                msg = (
                    f"sync {name!r} was last run with a different mapping "
                    f"(kind {row[0]}, fingerprint {row[1][:12]}; now kind {kind}, "
                    f"fingerprint {fingerprint[:12]}). Choose what to resend: "
                    "on_mapping_change='resend' sends every row again, 'keep' sends only rows "
                    "whose output changed (CLI: --on-mapping-change)."
                )
                raise StateError(msg)
            if changed and on_mapping_change == "resend":
                conn.execute("DELETE FROM accepted WHERE name = ?", (name,))
                cleared = True
            now = float(self._clock())
            conn.execute(
                "INSERT INTO syncs (name, kind, fingerprint, last_started, last_status) "
                "VALUES (?, ?, ?, ?, 'running') ON CONFLICT (name) DO UPDATE SET "
                "kind = excluded.kind, fingerprint = excluded.fingerprint, "
                "last_started = excluded.last_started, last_status = 'running'",
                (name, kind, fingerprint, now),
            )
            conn.execute("DELETE FROM in_flight WHERE name = ?", (name,))
            known = conn.execute(
                "SELECT count(*) FROM accepted WHERE name = ?", (name,)
            ).fetchone()[0]
        if in_flight:
            logger.warning(
                "sync %r: the previous run stopped with %d batch(es) in flight; "
                "their rows are resent with the same source_request_id",
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
        )

    def finish_sync(self, name: str, *, status: Literal["finished", "stopped"]) -> None:
        """Record how a run of ``name`` ended."""
        with self._transaction() as conn:
            conn.execute(
                "UPDATE syncs SET last_finished = ?, last_status = ? WHERE name = ?",
                (float(self._clock()), status, name),
            )
            if status == "finished":
                conn.execute("DELETE FROM in_flight WHERE name = ?", (name,))

    def fingerprint(self, name: str) -> str | None:
        """The mapping fingerprint sync ``name`` last ran with, or None if it never ran."""
        rows = self._read("SELECT fingerprint FROM syncs WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def sync_names(self) -> list[str]:
        """Every sync name the store knows, sorted."""
        return [str(r[0]) for r in self._read("SELECT name FROM syncs ORDER BY name")]

    def forget(self, name: str) -> int:
        """Drop everything known about sync ``name``; return how many keys were forgotten."""
        with self._transaction() as conn:
            count = conn.execute(
                "SELECT count(*) FROM accepted WHERE name = ?", (name,)
            ).fetchone()[0]
            for table in ("accepted", "in_flight", "syncs"):
                conn.execute(f"DELETE FROM {table} WHERE name = ?", (name,))  # noqa: S608
        return int(count)

    # --- rows ----------------------------------------------------------------------------

    def count(self, name: str) -> int:
        """How many primary keys of sync ``name`` have an accepted hash."""
        return int(self._read("SELECT count(*) FROM accepted WHERE name = ?", (name,))[0][0])

    def get(self, name: str, key: str) -> StateEntry | None:
        """The last accepted entry for ``key`` in sync ``name``, or None."""
        return self.get_many(name, [key]).get(key)

    def get_many(self, name: str, keys: Iterable[str]) -> dict[str, StateEntry]:
        """Entries for those ``keys`` that have one (one query per 500 keys)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, StateEntry] = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT key, hash, attributes FROM accepted WHERE name = ? AND key IN ({marks})",  # noqa: S608
                [name, *chunk],
            )
            for key, digest, attributes in rows:
                found[key] = StateEntry(
                    key=key, hash=digest, attributes=_load_attributes(attributes)
                )
        return found

    def record_accepted(self, name: str, entries: Iterable[StateEntry]) -> int:
        """Store what mParticle accepted, in one transaction; return how many entries."""
        values = self._accepted_rows(name, entries)
        if not values:
            return 0
        with self._transaction() as conn:
            conn.executemany(_UPSERT_ACCEPTED, values)
        return len(values)

    def _accepted_rows(
        self, name: str, entries: Iterable[StateEntry]
    ) -> list[tuple[str, str, str, str | None, float]]:
        now = float(self._clock())
        return [
            (
                name,
                entry.key,
                entry.hash,
                None
                if entry.attributes is None
                else orjson.dumps(dict(entry.attributes), option=orjson.OPT_SORT_KEYS).decode(),
                now,
            )
            for entry in entries
        ]

    # --- requests in flight --------------------------------------------------------------

    def mark_in_flight(self, name: str, batches: Iterable[tuple[str, str, int]]) -> None:
        """Note, in one transaction, batches about to be sent: ``(source_request_id, endpoint, rows)``."""
        now = float(self._clock())
        values = [(name, rid, str(endpoint), rows, now) for rid, endpoint, rows in batches]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO in_flight "
                "(name, source_request_id, endpoint, row_count, started_at) VALUES (?, ?, ?, ?, ?)",
                values,
            )

    def settle(
        self, name: str, *, source_request_id: str, accepted: Iterable[StateEntry] = ()
    ) -> None:
        """Record a request's outcome: store its accepted entries and clear it from flight.

        Both happen in one transaction, so a crash leaves either the request in flight
        (and its rows unaccepted) or both done.
        """
        values = self._accepted_rows(name, accepted)
        with self._transaction() as conn:
            if values:
                conn.executemany(_UPSERT_ACCEPTED, values)
            conn.execute(
                "DELETE FROM in_flight WHERE name = ? AND source_request_id = ?",
                (name, source_request_id),
            )

    def in_flight(self, name: str) -> list[InFlightRequest]:
        """Requests of ``name`` marked in flight and not settled."""
        return [
            InFlightRequest(source_request_id=r[0], endpoint=r[1], row_count=r[2], started_at=r[3])
            for r in self._read(
                "SELECT source_request_id, endpoint, row_count, started_at FROM in_flight "
                "WHERE name = ? ORDER BY started_at",
                (name,),
            )
        ]

    # --- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _load_attributes(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        msg = f"state entry holds unreadable attribute hashes: {exc}"
        raise StateError(msg) from exc
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        msg = "state entry holds attribute hashes of the wrong shape"
        raise StateError(msg)
    return value
