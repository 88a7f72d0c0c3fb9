"""Primary keys seen in one run (sync stage), kept on disk so memory does not grow with rows."""

from __future__ import annotations

import sqlite3

__all__ = ["SeenKeys"]


class SeenKeys:
    """Primary keys seen in this run and the row each was first seen at, in a temporary
    SQLite file (deleted on close), so memory does not grow with the number of rows."""

    def __init__(self) -> None:
        # "" opens a private on-disk database that SQLite deletes when it is closed.
        self.conn = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=OFF")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID")
        self.conn.execute("BEGIN")

    def first_seen(self, key: str, row: int) -> int | None:
        """The row ``key`` was first seen at, or None (then ``row`` is recorded)."""
        before = self.conn.total_changes
        self.conn.execute("INSERT OR IGNORE INTO seen (key, row) VALUES (?, ?)", (key, row))
        if self.conn.total_changes != before:
            return None  # the usual case, in one statement
        found = self.conn.execute("SELECT row FROM seen WHERE key = ?", (key,)).fetchone()
        return int(found[0])

    def close(self) -> None:
        self.conn.close()
