"""The accepted entries of a state file (sync stage): look-ups and writes, for StateStore.

Per sync and primary key, the hash of what mParticle accepted last, per-attribute hashes for
user-attribute syncs, and the digest of the source row it was mapped from.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson

from .._errors import StateError
from .records import StateEntry

__all__: list[str] = []

_UPSERT_ACCEPTED = (
    "INSERT INTO accepted (name, key, hash, attributes, accepted_at, source) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, key) DO UPDATE SET "
    "hash = excluded.hash, attributes = excluded.attributes, "
    "accepted_at = excluded.accepted_at, source = excluded.source"
)

# SQLite caps bound parameters per statement; stay well below the oldest default (999).
_LOOKUP_CHUNK = 500


class _AcceptedEntries:
    """The ``accepted`` table's half of :class:`~mparticle_feed.StateStore`."""

    #: Whether the file has the columns added within schema 2 (source digests, whole
    #: request bodies); a file opened read-only from before them has not.
    _later_columns: bool = True
    #: Whether the file has the tables added within schema 2 (``source_slices``), as above.
    _slices: bool = True

    if TYPE_CHECKING:  # StateStore's
        _clock: Callable[[], float]

        def _read(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

        def _transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    @property
    def _source(self) -> str:
        """The column holding source digests, or ``NULL`` where there is none."""
        return "source" if self._later_columns else "NULL"

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
                f"SELECT key, hash, attributes, {self._source} FROM accepted "  # noqa: S608
                f"WHERE name = ? AND key IN ({marks})",
                [name, *chunk],
            )
            for key, digest, attributes, source in rows:
                found[key] = StateEntry(
                    key=key, hash=digest, attributes=_load_attributes(attributes), source=source
                )
        return found

    def sources(self, name: str, keys: Sequence[str]) -> dict[str, str | None]:
        """The keys of ``keys`` that have an entry, each with its source digest (or None).

        Cheaper than :meth:`get_many` (no entry is built): what a run asks before mapping.
        """
        found: dict[str, str | None] = {}
        for start in range(0, len(keys), _LOOKUP_CHUNK):
            chunk = keys[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                self._read(
                    f"SELECT key, {self._source} FROM accepted "  # noqa: S608
                    f"WHERE name = ? AND key IN ({marks})",
                    [name, *chunk],
                )
            )
        return found

    def record_sources(self, name: str, entries: Iterable[StateEntry]) -> int:
        """Store the source digests of rows found unchanged by their mapped content.

        Only where the stored hash is still the entry's, in one transaction; returns how
        many were stored. A run calls this for rows it mapped and found unchanged, so the
        next run skips them unmapped.
        """
        values = [
            (entry.source, name, entry.key, entry.hash)
            for entry in entries
            if entry.source is not None
        ]
        if not values or self._source == "NULL":
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                "UPDATE accepted SET source = ? WHERE name = ? AND key = ? AND hash = ?", values
            )
            return conn.total_changes - before

    def source_slice(self, name: str, digest: str) -> str | None:
        """What :meth:`record_slices` stored for the slice of rows with this content digest."""
        if not self._slices:
            return None
        rows = self._read(
            "SELECT rows FROM source_slices WHERE name = ? AND slice = ?", (name, digest)
        )
        return str(rows[0][0]) if rows else None

    def source_span(self, name: str, first: str, last: str, count: int) -> str | None:
        """The source digests of the entries of ``name`` from key ``first`` to key
        ``last``, in key order, as one text, if exactly ``count`` of them have one; else
        None. One range scan (of at most ``count + 1`` entries): cheaper than looking keys
        up one by one."""
        if self._source == "NULL":
            return None
        rows = self._read(
            "SELECT count(source), group_concat(source, '') FROM ("
            "SELECT source FROM accepted WHERE name = ? AND key >= ? AND key <= ? "
            "ORDER BY key LIMIT ?)",
            (name, first, last, count + 1),
        )
        if not rows or rows[0][0] != count or rows[0][1] is None:
            return None
        return str(rows[0][1])

    def record_slices(
        self, name: str, slices: Sequence[tuple[str, str]], *, forget_older: bool = False
    ) -> None:
        """Store slices ``(content digest, digest of their rows' source digests)`` seen by
        the current run of ``name``, in one transaction; with ``forget_older`` (every row
        was read), drop those this run did not see (their rows changed, or moved)."""
        with self._transaction() as conn:  # writable: the table is there (see StateFile)
            found = conn.execute("SELECT version FROM syncs WHERE name = ?", (name,)).fetchone()
            if found is None:
                return
            version = int(found[0])
            conn.executemany(
                "INSERT INTO source_slices (name, slice, rows, version) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name, slice) DO UPDATE SET "
                "rows = excluded.rows, version = excluded.version",
                [(name, digest, rows, version) for digest, rows in slices],
            )
            if forget_older:
                conn.execute(
                    "DELETE FROM source_slices WHERE name = ? AND version < ?", (name, version)
                )

    def entries(self, name: str) -> Iterator[StateEntry]:
        """Every accepted entry of sync ``name``, in key order (for conversions)."""
        for key, digest, attributes, source in self._read(
            f"SELECT key, hash, attributes, {self._source} FROM accepted "  # noqa: S608
            "WHERE name = ? ORDER BY key",
            (name,),
        ):
            yield StateEntry(
                key=key, hash=digest, attributes=_load_attributes(attributes), source=source
            )

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
    ) -> list[tuple[str, str, str, str | None, float, str | None]]:
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
                entry.source,
            )
            for entry in entries
        ]


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
