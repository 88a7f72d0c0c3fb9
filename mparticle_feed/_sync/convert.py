"""Moving a sync's state between its two forms (sync stage): SQLite file ⇄ Parquet table.

What moves, per sync name: the mapping's kind and fingerprint, the next id sequence number
and every accepted entry (key, hash, per-attribute hashes). What does not: run history
(versions, timestamps) and plans. A sync whose outbox holds unsettled batches is refused:
run it once (it replays them) and convert then. The destination must not know the sync.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from .._errors import StateError
from .state import StateStore
from .tablefiles import merge_entries, write_atomic
from .tablestate import TableState, _started

__all__ = ["sqlite_to_table", "table_to_sqlite"]


def _names(given: Sequence[str] | None, known: list[str]) -> list[str]:
    if given is None:
        return known
    missing = [name for name in given if name not in known]
    if missing:
        msg = f"the source state knows no sync {', '.join(map(repr, missing))}"
        raise StateError(msg)
    return list(dict.fromkeys(given))


def _last_mapping(source: StateStore | TableState, name: str) -> tuple[str, str]:
    last = source.last_mapping(name)
    if last is None:  # a sync removed while converting
        msg = f"{source.path} no longer holds sync {name!r}"
        raise StateError(msg)
    return last


def _refuse_unsettled(name: str, unsettled: Iterable[object]) -> None:
    count = len(list(unsettled))
    if count:
        msg = (
            f"sync {name!r} has {count} unsettled outbox batch(es); run it once (they are "
            "sent again and settled) before converting its state"
        )
        raise StateError(msg)


def sqlite_to_table(
    store: StateStore | str | os.PathLike[str],
    table: TableState | str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
) -> dict[str, int]:
    """Copy syncs (default: all) from a SQLite state to a table state.

    Returns the number of entries copied per sync name.
    """
    source = store if isinstance(store, StateStore) else StateStore(store, read_only=True)
    target = table if isinstance(table, TableState) else TableState(table)
    copied: dict[str, int] = {}
    try:
        for name in _names(names, source.sync_names()):
            _refuse_unsettled(name, source.in_flight(name))
            if target.fingerprint(name) is not None:
                msg = f"the table state {target.path} already holds sync {name!r}"
                raise StateError(msg)
            kind, fingerprint = _last_mapping(source, name)
            entries = list(source.entries(name))
            with target.run_lock(name):
                folder = target.folder(name)
                manifest = _started(name, None, kind=kind, fingerprint=fingerprint)
                manifest.update(
                    runs=0,
                    next_seq=source.version(name)[1],
                    entries=merge_entries(folder, None, entries),
                    count=len(entries),
                    last_status="converted",
                )
                write_atomic(os.path.join(folder, "manifest.json"), _dump(manifest))
            copied[name] = len(entries)
    finally:
        if source is not store:
            source.close()
    return copied


def _dump(manifest: dict[str, object]) -> bytes:
    import orjson

    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2)


def table_to_sqlite(
    table: TableState | str | os.PathLike[str],
    store: StateStore | str | os.PathLike[str],
    *,
    names: Sequence[str] | None = None,
) -> dict[str, int]:
    """Copy syncs (default: all) from a table state to a SQLite state (created if missing).

    Returns the number of entries copied per sync name.
    """
    source = table if isinstance(table, TableState) else TableState(table)
    target = store if isinstance(store, StateStore) else StateStore(store)
    copied: dict[str, int] = {}
    try:
        for name in _names(names, source.sync_names()):
            with source.run_lock(name):
                _refuse_unsettled(name, source.in_flight(name))
            if target.fingerprint(name) is not None:
                msg = f"the state file {target.path} already holds sync {name!r}"
                raise StateError(msg)
            kind, fingerprint = _last_mapping(source, name)
            with target.run_lock(name):
                target.begin_sync(name, kind=kind, fingerprint=fingerprint)
                target.outbox_add(name, [], next_seq=source.version(name)[1])
                count = target.record_accepted(name, source.entries(name))
                target.finish_sync(name, status="finished")
            copied[name] = count
    finally:
        if target is not store:
            target.close()
    return copied
