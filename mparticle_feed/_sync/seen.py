"""Primary keys seen in one run (sync stage), in memory up to a bound, then on disk.

A run asks once per row whether its key was seen before. Up to ``memory_keys`` keys are
held in a dict (no I/O per row); past that they are moved to a temporary SQLite file in one
statement, so memory stays bounded however many rows a run reads. Keys on disk sit behind
a fixed-size bit filter, so a new key (the usual case) is answered from memory and only a
key the filter may have seen is looked up on disk; a run of keys is looked up in one query.

Keys that arrive in ascending order (a query ordered by its key) skip the filter and the
index: moved keys all above those already on disk are stored as one sorted block (one row),
which only widens a span of keys, and a new key above the span cannot be on disk. A key
inside the span is looked up in its block; once such lookups add up to a share of the
span's keys, the blocks are moved into the index and the filter.
"""

from __future__ import annotations

import sqlite3
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from itertools import islice
from operator import itemgetter

import orjson

from .._mapping.unchanged import check_each

__all__ = ["SeenKeys"]

#: Keys held in memory before they move to disk (a few MB of typical keys).
_MEMORY_KEYS = 50_000
#: Bits of the filter in front of the keys on disk (a power of two: 8 MB, allocated when
#: first needed). One bit a key: with 1 million keys on disk about 1 new key in 68 costs a
#: lookup (batched for a run of keys), with 10 million about 1 in 7; a second bit costs more
#: CPU than the lookups it saves, as measured up to 3 million keys. Positions come from
#: str's hash, fixed for the life of the process, which is all the filter needs.
_FILTER_BITS = 1 << 26
#: Keys written as JSON at a time (see _as_json).
_JSON_PART_KEYS = 10_000
#: A span's keys are read back into the filter once lookups inside it reach this share of
#: them (reading a key back costs a fraction of looking one up).
_SPAN_LOOKUP_SHARE = 1 / 4
#: Keys a lookup query binds at most (SQLite before 3.32 allows 999 parameters).
_LOOKUP_KEYS = 500
#: What a key read from a block counts for, in lookups (a block is read whole, but reading
#: a key costs far less than a lookup, or than moving it into the index).
_BLOCK_KEY_SHARE = 1 / 8


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
        # Whether a key has a filter bit; the filter is allocated then (8 MB by default).
        self._filtered = False
        # Keys on disk without a filter bit lie within the span (least, greatest key), see
        # _spill; its keys, and lookups within it since it began. The span is its blocks'
        # first least and last greatest key, kept apart for the check made once per row.
        self._span: tuple[str, str] | None = None
        self._span_keys = 0
        self._span_lookups = 0.0
        # The span's blocks (rows of the ``blocks`` table): each one's least and greatest key,
        # in order; they do not overlap.
        self._blocks: list[tuple[str, str]] = []
        self._greatest = ""  # the greatest key on disk
        # Whether SQLite reads the keys to move as one JSON text (json_each); None: not yet
        # asked (at the first move).
        self._json_insert: bool | None = None
        self.spilled = 0

    def first_seen(self, key: str, row: int) -> int | None:
        """The row ``key`` was first seen at, or None (then ``row`` is recorded)."""
        recent = self._recent
        found = recent.get(key)
        if found is not None:
            return found
        if self._conn is not None:
            # The filter's test, inline: this runs once per row.
            maybe = 0
            if self._filtered:
                position = hash(key) & (self._filter_bits - 1)
                maybe = self._filter[position >> 3] >> (position & 7) & 1
            span = self._span
            if maybe or (span is not None and span[0] <= key <= span[1]):
                stored = self._on_disk(self._conn, [key]).get(key)
                if stored is not None:
                    return stored
        recent[key] = row
        if len(recent) >= self._memory_keys:
            self._spill()
        return None

    def first_seen_run(self, keys: list[str], first: int) -> dict[int, int]:
        """:meth:`first_seen` for ``keys[i]`` at row ``first + i``, in order: the positions
        of the keys seen before, each with the row it was first seen at."""
        count = len(keys)
        if self._recent and len(self._recent) + count >= self._memory_keys > count:
            # Moved now rather than midway, the run's keys are checked together below.
            self._spill()
        recent = self._recent
        # The usual case, a run of distinct keys none of which is in memory: checked against
        # the disk in one query at most, and recorded without a Python loop.
        if (
            len(recent) + count < self._memory_keys
            and recent.keys().isdisjoint(keys)
            and len(set(keys)) == count
        ):
            conn = self._conn
            on_disk = self._on_disk(conn, keys) if conn is not None else {}
            if not on_disk:
                recent.update(zip(keys, range(first, first + count), strict=True))
                return {}
            seen_at: dict[int, int] = {}
            for position, key in enumerate(keys):
                stored = on_disk.get(key)
                if stored is None:
                    recent[key] = first + position
                else:
                    seen_at[position] = stored
            return seen_at
        return check_each(self.first_seen, keys, first)

    def _on_disk(self, conn: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        """The keys among ``keys`` (distinct) that are on disk, each with its row."""
        maybe = []
        if self._filtered:
            bits = self._filter
            mask = self._filter_bits - 1
            for key in keys:
                position = hash(key) & mask
                if bits[position >> 3] >> (position & 7) & 1:
                    maybe.append(key)
        found: dict[str, int] = {}
        for start in range(0, len(maybe), _LOOKUP_KEYS):
            chunk = maybe[start : start + _LOOKUP_KEYS]
            marks = ", ".join("?" * len(chunk))  # placeholders only: the keys are bound
            query = f"SELECT key, row FROM seen WHERE key IN ({marks})"  # noqa: S608
            found.update(conn.execute(query, chunk))
        span = self._span
        if span is not None and keys and min(keys) <= span[1] and max(keys) >= span[0]:
            least, greatest = span
            found.update(self._in_blocks(conn, [key for key in keys if least <= key <= greatest]))
        return found

    def _in_blocks(self, conn: sqlite3.Connection, keys: list[str]) -> dict[str, int]:
        """The keys among ``keys`` (inside the span) that a block holds, with their rows;
        the lookups are counted, and past a share of the span's keys the blocks move."""
        wanted: dict[int, list[str]] = {}
        blocks = self._blocks
        for key in keys:
            index = bisect_right(blocks, key, key=itemgetter(0)) - 1
            if index >= 0 and key <= blocks[index][1]:
                wanted.setdefault(index, []).append(key)
        found: dict[str, int] = {}
        read = 0
        for index, looked_for in wanted.items():
            stored, rows = self._block(conn, blocks[index][0])
            read += len(stored)
            for key in looked_for:
                at = bisect_left(stored, key)
                if at < len(stored) and stored[at] == key:
                    found[key] = rows[at]
        self._span_lookups += len(keys) + read * _BLOCK_KEY_SHARE
        if self._span_lookups >= self._span_keys * _SPAN_LOOKUP_SHARE:
            self._move_blocks(conn)
        return found

    @staticmethod
    def _block(conn: sqlite3.Connection, least: str) -> tuple[list[str], array[int]]:
        text, packed = conn.execute(
            "SELECT keys, rows FROM blocks WHERE least = ?", (least,)
        ).fetchone()
        rows = array("q")
        rows.frombytes(packed)
        return orjson.loads(text), rows

    def _move_blocks(self, conn: sqlite3.Connection) -> None:
        """Move the span's keys from their blocks into the index, behind the filter."""
        for least, _ in self._blocks:
            stored, rows = self._block(conn, least)
            self._set_bits(stored)
            self._insert(conn, dict(zip(stored, rows, strict=True)))
        conn.execute("DELETE FROM blocks")
        self._blocks = []
        self._span = None

    def _spill(self) -> None:
        """Move the keys held in memory to disk, in one statement."""
        conn = self._conn
        if conn is None:
            # "" opens a private on-disk database that SQLite deletes when it is closed.
            conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID")
            conn.execute(
                "CREATE TABLE blocks (least TEXT PRIMARY KEY, keys BLOB NOT NULL, "
                "rows BLOB NOT NULL) WITHOUT ROWID"
            )
            if self._json_insert is None:
                try:
                    conn.execute("SELECT count(*) FROM json_each('{}')")
                except sqlite3.OperationalError:  # built without JSON functions
                    self._json_insert = False
                else:
                    self._json_insert = True
            self._conn = conn
        recent = self._recent
        least, greatest = min(recent), max(recent)
        block = None
        if least > self._greatest or not self.spilled:
            ordered = sorted(recent)
            try:
                block = orjson.dumps(ordered)
            except orjson.JSONEncodeError:  # a lone surrogate: the insert per key says so
                block = None
        if block is not None:
            # All above the keys on disk: one block, which widens the span; no filter bits.
            rows = array("q", map(recent.__getitem__, ordered))
            conn.execute("INSERT INTO blocks VALUES (?, ?, ?)", (least, block, rows.tobytes()))
            self._blocks.append((least, greatest))
            if self._span is None:
                self._span = (least, greatest)
                self._span_keys, self._span_lookups = 0, 0.0
            else:
                self._span = (self._span[0], greatest)
            self._span_keys += len(recent)
        else:
            self._set_bits(recent)
            self._insert(conn, recent)
        self._greatest = max(self._greatest, greatest)
        self.spilled += len(recent)
        self._recent = {}

    def _insert(self, conn: sqlite3.Connection, keys: dict[str, int]) -> None:
        """Add keys and their rows to the index, in one statement (each key is new)."""
        as_json = self._as_json(keys) if self._json_insert else None
        conn.execute("BEGIN")
        if as_json is None:
            conn.executemany("INSERT INTO seen (key, row) VALUES (?, ?)", sorted(keys.items()))
        else:
            # One statement binding one text: a third of the CPU of an insert per key. In key
            # order, each page of the B-tree is visited once.
            conn.execute(
                "INSERT INTO seen (key, row) SELECT key, value FROM json_each(?) ORDER BY key",
                (as_json,),
            )
        conn.execute("COMMIT")

    def _set_bits(self, keys: Iterable[str]) -> None:
        if not self._filtered:
            self._filter = bytearray(self._filter_bits >> 3)
            self._filtered = True
        bits = self._filter
        mask = self._filter_bits - 1
        for value in map(hash, keys):
            position = value & mask
            bits[position >> 3] |= 1 << (position & 7)

    @staticmethod
    def _as_json(keys: dict[str, int]) -> str | None:
        """The keys and rows as one JSON object, or None when SQLite would not read every
        key back exactly: its JSON functions end a text at an escaped NUL."""
        items = iter(keys.items())
        parts: list[str] = []
        # Part by part: orjson reserves several times a text's size while writing it.
        while part := dict(islice(items, _JSON_PART_KEYS)):
            try:
                text = orjson.dumps(part)
            except orjson.JSONEncodeError:  # a lone surrogate: the insert per key says so
                return None
            if b"\\u0000" in text:  # so does a key holding a backslash then "u0000": no harm
                return None
            parts.append(text[1:-1].decode())
        return "{" + ",".join(parts) + "}"

    def close(self) -> None:
        self._recent = {}
        self._filter = bytearray()
        self._filtered = False
        self._span = None
        self._blocks = []
        if self._conn is not None:
            self._conn.close()
            self._conn = None
