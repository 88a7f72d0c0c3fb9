"""Primary keys seen in one run (sync stage), in memory up to a bound, then on disk.

A run asks once per row whether its key was seen before. Up to ``memory_keys`` keys are
held in a dict (no I/O per row); past that they are moved to a temporary SQLite file in one
statement, so memory stays bounded however many rows a run reads. Keys on disk sit behind
a fixed-size bit filter, so a new key (the usual case) is answered from memory and only a
key the filter may have seen is looked up on disk.
"""

from __future__ import annotations

import sqlite3

from .._mapping.unchanged import check_each

__all__ = ["SeenKeys"]

#: Keys held in memory before they move to disk (a few MB of typical keys).
_MEMORY_KEYS = 50_000
#: Bits of the filter in front of the keys on disk (a power of two: 8 MB, allocated at the
#: first move). With 1 million keys on disk about 1 new key in 1,000 costs a lookup, with
#: 10 million about 1 in 15.
_FILTER_BITS = 1 << 26


class SeenKeys:
    """Primary keys seen in this run and the row each was first seen at.

    Memory is bounded: past ``memory_keys`` keys they move to a temporary SQLite file
    (deleted on close) behind a filter of ``filter_bits`` bits.
    """

    def __init__(self, *, memory_keys: int = _MEMORY_KEYS, filter_bits: int = _FILTER_BITS) -> None:
        if memory_keys < 1 or filter_bits < 8 or filter_bits & (filter_bits - 1):
            msg = "memory_keys must be positive and filter_bits a power of two of at least 8"
            raise ValueError(msg)
        self._memory_keys = memory_keys
        self._filter_bits = filter_bits
        self._recent: dict[str, int] = {}
        self._conn: sqlite3.Connection | None = None
        self._filter = bytearray()
        self.spilled = 0

    def first_seen(self, key: str, row: int) -> int | None:
        """The row ``key`` was first seen at, or None (then ``row`` is recorded)."""
        recent = self._recent
        found = recent.get(key)
        if found is not None:
            return found
        if self._conn is not None and self._maybe_on_disk(key):
            stored = self._conn.execute("SELECT row FROM seen WHERE key = ?", (key,)).fetchone()
            if stored is not None:
                return int(stored[0])
        recent[key] = row
        if len(recent) >= self._memory_keys:
            self._spill()
        return None

    def first_seen_run(self, keys: list[str], first: int) -> dict[int, int]:
        """:meth:`first_seen` for ``keys[i]`` at row ``first + i``, in order: the positions
        of the keys seen before, each with the row it was first seen at."""
        recent = self._recent
        # The usual case, a run of new keys, checked and recorded without a Python loop.
        if (
            len(recent) + len(keys) < self._memory_keys
            and recent.keys().isdisjoint(keys)
            and len(set(keys)) == len(keys)
            and (self._conn is None or not any(map(self._maybe_on_disk, keys)))
        ):
            recent.update(zip(keys, range(first, first + len(keys)), strict=True))
            return {}
        return check_each(self.first_seen, keys, first)

    def _positions(self, key: str) -> tuple[int, int]:
        # str's hash is fixed for the life of the process, which is all the filter needs.
        value = hash(key)
        mask = self._filter_bits - 1
        return value & mask, (value >> 32) & mask

    def _maybe_on_disk(self, key: str) -> bool:
        bits = self._filter
        first, second = self._positions(key)
        return bool(
            bits[first >> 3] & (1 << (first & 7)) and bits[second >> 3] & (1 << (second & 7))
        )

    def _spill(self) -> None:
        """Move the keys held in memory to disk, in one statement."""
        if self._conn is None:
            # "" opens a private on-disk database that SQLite deletes when it is closed.
            conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID")
            self._conn = conn
            self._filter = bytearray(self._filter_bits >> 3)
        bits = self._filter
        for key in self._recent:
            for position in self._positions(key):
                bits[position >> 3] |= 1 << (position & 7)
        # Every key in memory was new (looked up first), so a plain insert cannot collide.
        self._conn.execute("BEGIN")
        self._conn.executemany("INSERT INTO seen (key, row) VALUES (?, ?)", self._recent.items())
        self._conn.execute("COMMIT")
        self.spilled += len(self._recent)
        self._recent = {}

    def close(self) -> None:
        self._recent = {}
        self._filter = bytearray()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
