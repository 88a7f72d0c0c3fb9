"""The files of a table state (sync stage): atomic writes and the entries' Parquet file.

Every file is written under a new name, synced, then renamed into place, so a reader sees
the old file or the new one, never part of one. The entries file has three string
columns, ``key``, ``hash`` and ``attributes`` (a user-attribute sync's per-attribute
hashes as JSON text; null for event syncs), one row per key, sorted by key.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from .._errors import StateError
from .records import StateEntry

__all__ = ["ENTRY_COLUMNS", "count_entries", "load_entry", "merge_entries", "write_atomic"]

ENTRY_COLUMNS = ("key", "hash", "attributes")


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # not every file system syncs a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd``: one ``os.write`` may write less (a cap, NFS, FUSE)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(path: str, data: bytes) -> None:
    """``data`` into ``path`` whole or not at all: a new file, synced, renamed over."""
    temporary = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise StateError(msg) from exc
    _fsync_dir(os.path.dirname(path))


def _entries_table(entries: Iterable[StateEntry]) -> Any:
    import pyarrow as pa

    keys, hashes, attributes = [], [], []
    for entry in entries:
        keys.append(entry.key)
        hashes.append(entry.hash)
        attributes.append(
            None
            if entry.attributes is None
            else orjson.dumps(dict(entry.attributes), option=orjson.OPT_SORT_KEYS).decode()
        )
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "hash": pa.array(hashes, pa.string()),
            "attributes": pa.array(attributes, pa.string()),
        }
    )


def load_entry(key: str, digest: str, attributes: str | None) -> StateEntry:
    """An entry as the entries file holds it."""
    loaded = None if attributes is None else orjson.loads(attributes)
    return StateEntry(key=key, hash=digest, attributes=loaded)


def merge_entries(folder: str, current: str | None, accepted: Sequence[StateEntry]) -> str | None:
    """The new entries file's name: the committed entries with ``accepted`` over them."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not accepted:
        return current
    latest: dict[str, StateEntry] = {}
    for entry in accepted:
        latest[entry.key] = entry
    new = _entries_table(latest.values())
    if current is not None:
        old = pq.read_table(os.path.join(folder, current))
        kept = old.filter(pc.invert(pc.is_in(old.column("key"), value_set=new.column("key"))))
        new = pa.concat_tables([kept.select(list(ENTRY_COLUMNS)), new])
    new = new.sort_by("key")
    file_name = f"entries-{uuid.uuid4().hex}.parquet"
    path = os.path.join(folder, file_name)
    temporary = f"{path}.tmp"
    try:
        pq.write_table(new, temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        msg = f"cannot write {path}: {exc.strerror or exc}"
        raise StateError(msg) from exc
    return file_name


def count_entries(folder: str, entries_file: str | None) -> int:
    """How many keys an entries file holds (from its footer)."""
    if entries_file is None:
        return 0
    import pyarrow.parquet as pq

    return int(pq.read_metadata(os.path.join(folder, entries_file)).num_rows)
