"""Opening a state file (sync stage): create it whole, verify it, migrate it, or refuse it.

The schema, its migration from schema 1 (the previous release), and every check made when a
state file is opened live here; :class:`~mparticle_feed._sync.state.StateStore` reads and
writes an opened file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import tempfile
from pathlib import Path

from .._errors import ConfigurationError, StateError

__all__ = ["SCHEMA_VERSION", "StateFile"]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
_SQLITE_HEADER = b"SQLite format 3\x00"
_APPLICATION = "mparticle_feed state"

_SCHEMA_V1_TABLES = {"meta", "syncs", "accepted", "in_flight"}
_SCHEMA_V2_TABLES = {"meta", "syncs", "accepted", "outbox", "outbox_batches"}

# Schema 2 over schema 1: the outbox replaces in_flight; syncs count their keys (checked
# on open, so a damaged index cannot pass for a smaller state) and carry the id sequence,
# the run version and the plan being sent.
_MIGRATE_V1 = """
ALTER TABLE syncs ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE syncs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE syncs ADD COLUMN plan TEXT;
ALTER TABLE syncs ADD COLUMN key_count INTEGER NOT NULL DEFAULT 0;
CREATE TABLE outbox (
    name TEXT NOT NULL,
    request_no INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, request_no)
);
CREATE TABLE outbox_batches (
    name TEXT NOT NULL,
    source_request_id TEXT NOT NULL,
    request_no INTEGER NOT NULL,
    position INTEGER NOT NULL,
    body BLOB NOT NULL,
    rows TEXT NOT NULL,
    event_rows TEXT NOT NULL,
    entries TEXT NOT NULL,
    PRIMARY KEY (name, source_request_id)
) WITHOUT ROWID;
CREATE INDEX outbox_batches_request ON outbox_batches (name, request_no);
CREATE TRIGGER accepted_insert AFTER INSERT ON accepted BEGIN
    UPDATE syncs SET key_count = key_count + 1 WHERE name = new.name;
END;
CREATE TRIGGER accepted_delete AFTER DELETE ON accepted BEGIN
    UPDATE syncs SET key_count = key_count - 1 WHERE name = old.name;
END;
"""

# Columns added within schema 2 (before its release), to files made before them, when
# opened for writing: source digests, and request bodies kept whole (batches as slices).
_LATER_COLUMNS = (
    ("accepted", "source", "TEXT"),
    ("outbox", "body", "BLOB"),
    ("outbox_batches", "body_start", "INTEGER"),
    ("outbox_batches", "body_end", "INTEGER"),
)

# Tables added within schema 2 (before its release), to files made before them, when opened
# for writing. ``source_slices``: per sync, the digest of a slice of Arrow rows' content and
# the digest of their source digests, with the run version that last saw it (a cache: see
# ``KnownRows.known_slice``).
_LATER_TABLES = {
    "source_slices": (
        "CREATE TABLE source_slices ("
        "name TEXT NOT NULL, slice TEXT NOT NULL, rows TEXT NOT NULL, "
        "version INTEGER NOT NULL, PRIMARY KEY (name, slice)) WITHOUT ROWID"
    ),
}

# The same upsert for every entry of some outbox batches, read from their stored JSON
# (``[[key, hash, attributes or null(, source)], ...]``, written by ``_dump_entries``). ``{marks}``:
# one ``?`` per source_request_id.
_UPSERT_FROM_OUTBOX = (
    "INSERT INTO accepted (name, key, hash, attributes, accepted_at, source) "
    "SELECT ?, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'), "
    "json_extract(e.value, '$[2]'), ?, json_extract(e.value, '$[3]') "
    "FROM outbox_batches AS b, json_each(b.entries) AS e "
    "WHERE b.name = ? AND b.source_request_id IN ({marks}) "
    "ON CONFLICT (name, key) DO UPDATE SET "
    "hash = excluded.hash, attributes = excluded.attributes, "
    "accepted_at = excluded.accepted_at, source = excluded.source"
)

_SCHEMA_V1 = """
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


def _statements(script: str) -> list[str]:
    """A schema script's statements (trigger bodies hold ';', so split on 'END;' too)."""
    out: list[str] = []
    current = ""
    for part in script.split(";"):
        current += part
        if not current.strip():
            current = ""
            continue
        if "CREATE TRIGGER" in current and not current.rstrip().endswith("END"):
            current += ";"
            continue
        out.append(current.strip())
        current = ""
    return out


def _cause(exc: BaseException) -> str:
    """What a failed write means for the user, named (not SQLite's last word)."""
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in text:
        return "the disk is full"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"the state file or its folder is read-only ({exc.strerror})"
    if "readonly" in text or "read-only" in text:
        return f"the state file or its folder is read-only ({text})"
    return text


class StateFile:
    """An opened state file: ``conn`` (autocommit; transactions are explicit), ``schema``
    and ``json`` (whether SQLite has its JSON functions).

    A missing file is created atomically (built aside, then linked into place), readable
    by its owner only; a schema-1 file is migrated unless ``read_only``; a file that is not
    a state file, truncated or corrupt raises :class:`StateError`.
    """

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        self._read_only = read_only
        self.schema = SCHEMA_VERSION
        self.conn = self._open(path)
        self.json = _has_json(self.conn)
        #: Whether the columns of :data:`_LATER_COLUMNS` are there (a file opened read-only
        #: may predate them).
        self.has_later_columns = not _missing_columns(self.conn)
        #: Whether the tables of :data:`_LATER_TABLES` are there (as above).
        self.has_later_tables = not _missing_tables(self.conn)

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
        if self._read_only:
            return self._open_read_only(path)
        existed = self._check_header(path)
        if not existed and path != ":memory:":
            self._create_file(path)
            existed = True
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            msg = f"cannot open state file {path}: {_cause(exc)}"
            raise StateError(msg) from exc
        try:
            if existed:
                self._verify(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a process crash; a power cut may lose the last
            # commits: outbox requests then lost were never sent, settled ones are resent
            # with the same source_request_id (deduplicated).
            conn.execute("PRAGMA synchronous=NORMAL")
            if not existed:
                self._create(conn)
            elif self.schema == 1:
                self._migrate(conn, path)
            _add_later_columns(conn)
            self._check_counts(conn, path)
        except StateError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "corrupt" not in str(exc):
                msg = f"cannot open state file {path}: {_cause(exc)}"
            else:
                msg = f"state file {path} is corrupt: {exc}"
            raise StateError(msg) from exc
        return conn

    def _open_read_only(self, path: str) -> sqlite3.Connection:
        if path == ":memory:":
            msg = "a read-only state store needs a file"
            raise ConfigurationError(msg)
        if not self._check_header(path):
            msg = f"state file {path} does not exist"
            raise StateError(msg)
        uri = Path(path).resolve().as_uri()
        conn: sqlite3.Connection | None = None
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            # A WAL file needs its -shm beside it; on a read-only folder only an immutable
            # open works (nothing else may be writing there anyway).
            try:
                conn = sqlite3.connect(
                    uri + query, uri=True, isolation_level=None, check_same_thread=False
                )
                self._verify(conn, path)
                break
            except StateError:
                if conn is not None:
                    conn.close()
                raise
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                conn = None
                if "corrupt" in str(exc) or "malformed" in str(exc):
                    msg = f"state file {path} is corrupt: {exc}"
                    raise StateError(msg) from exc
                last = exc
        if conn is None:
            msg = f"cannot open state file {path} for reading: {_cause(last)}"
            raise StateError(msg) from last
        try:
            self._check_counts(conn, path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_file(self, path: str) -> None:
        """Create the state file whole, or not at all: build it aside, then link it in.

        Two processes racing to create it both succeed: one links its file, the other
        finds the file there and opens it.
        """
        folder = Path(path).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(
                prefix=f".{Path(path).name}.", suffix=".new", dir=folder
            )  # mode 0600: the file holds primary keys (often e-mail addresses)
        except OSError as exc:
            msg = f"cannot create state file {path}: {_cause(exc)}"
            raise StateError(msg) from exc
        os.close(handle)
        try:
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                self._create(conn)
            finally:
                conn.close()
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass  # another process created it first: use theirs
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # No hard links here: an exclusive create still never clobbers a file.
                with contextlib.suppress(FileExistsError):
                    with open(path, "xb") as target, open(temporary, "rb") as source:
                        target.write(source.read())
                    os.chmod(path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot create state file {path}: {_cause(exc)}"
            raise StateError(msg) from exc
        finally:
            for leftover in (temporary, f"{temporary}-wal", f"{temporary}-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def _verify(self, conn: sqlite3.Connection, path: str) -> None:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
            tables = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.OperationalError as exc:
            if "unable to open" in str(exc) or "readonly" in str(exc):
                raise
            msg = f"state file {path} is corrupt or truncated: {exc}"
            raise StateError(msg) from exc
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            # Damaged text (quick_check's own report included) may not even decode.
            msg = f"state file {path} is corrupt or truncated: {exc}"
            raise StateError(msg) from exc
        if problems != ["ok"]:
            shown = "; ".join(problems[:3])
            msg = f"state file {path} is corrupt or truncated: {shown}"
            raise StateError(msg)
        if not (tables >= _SCHEMA_V1_TABLES or tables >= _SCHEMA_V2_TABLES):
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
        version = meta.get("schema_version")
        if version == "1" and tables >= _SCHEMA_V1_TABLES:
            self.schema = 1
        elif version != str(SCHEMA_VERSION) or not tables >= _SCHEMA_V2_TABLES:
            msg = (
                f"state file {path} has schema version {version!r}; "
                f"this version of mparticle_feed reads versions 1 and {SCHEMA_VERSION}"
            )
            raise StateError(msg)

    def _check_counts(self, conn: sqlite3.Connection, path: str) -> None:
        """Every sync still finds as many keys as it stored.

        quick_check does not see a damaged key in an index page: the search for a sync's
        keys is then misdirected and finds only some of them, which would pass for a
        smaller state and resend the rest. Each sync keeps its key count beside it.
        """
        if self.schema == 1:
            return
        try:
            stored = conn.execute("SELECT name, key_count FROM syncs").fetchall()
            for name, expected in stored:
                found = conn.execute(
                    "SELECT count(*) FROM accepted WHERE name = ?", (name,)
                ).fetchone()[0]
                if found != expected:
                    msg = (
                        f"state file {path} is corrupt: sync {name!r} should hold {expected} "
                        f"keys but {found} can be found"
                    )
                    raise StateError(msg)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            msg = f"state file {path} is corrupt or truncated: {exc}"
            raise StateError(msg) from exc

    @staticmethod
    def _create(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in [
                *_statements(_SCHEMA_V1),
                *_statements(_MIGRATE_V1),
                "DROP TABLE in_flight",
            ]:
                conn.execute(statement)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("application", _APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        _add_later_columns(conn)

    def _migrate(self, conn: sqlite3.Connection, path: str) -> None:
        """Schema 1 (the previous release) to 2, in one transaction; accepted keys stay."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            in_flight = conn.execute("SELECT count(*) FROM in_flight").fetchone()[0]
            for statement in _statements(_MIGRATE_V1):
                conn.execute(statement)
            conn.execute(
                "UPDATE syncs SET key_count = "
                "(SELECT count(*) FROM accepted WHERE accepted.name = syncs.name)"
            )
            conn.execute("DROP TABLE in_flight")
            conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.schema = SCHEMA_VERSION
        if in_flight:
            # Schema 1 kept no bodies: those rows are sent again by the next mapping.
            logger.warning(
                "state file %s: migrated from schema 1; %d batch(es) it had in flight are "
                "sent again as new content",
                path,
                in_flight,
            )
        else:
            logger.info("state file %s: migrated from schema 1 to %d", path, SCHEMA_VERSION)


def _missing_columns(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    missing = []
    for table, column, kind in _LATER_COLUMNS:
        names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if names and column not in names:
            missing.append((table, column, kind))
    return missing


def _missing_tables(conn: sqlite3.Connection) -> list[str]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    return [table for table in _LATER_TABLES if table not in tables]


def _add_later_columns(conn: sqlite3.Connection) -> None:
    """Add the later columns and tables a file lacks, in one transaction."""
    missing = _missing_columns(conn)
    tables = _missing_tables(conn)
    if not missing and not tables:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in missing:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        for table in tables:
            conn.execute(_LATER_TABLES[table])
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _has_json(conn: sqlite3.Connection) -> bool:
    """Whether SQLite has its JSON functions (built in since 3.38, in most earlier builds)."""
    try:
        conn.execute("SELECT json_extract(value, '$[0]') FROM json_each('[[1]]')").fetchall()
    except sqlite3.Error:
        return False
    return True
