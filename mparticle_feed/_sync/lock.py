"""One run per sync (sync stage): an exclusive lock per (state file, sync name).

The lock is the operating system's (``flock``; ``msvcrt.locking`` on Windows) on a small
file beside the state file, so a process that dies releases it and the next run takes over.
The lock file names its holder (pid, host, start time) for the error a second run gets.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .._errors import StateError, StateLockedError
from .statefile import _cause

__all__ = ["hold_lock", "lock_path"]


def lock_path(state_path: str, name: str) -> str:
    """The lock file of sync ``name`` on the state file ``state_path``."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{state_path}.{digest}.lock"


@contextmanager
def hold_lock(state_path: str, name: str) -> Iterator[None]:
    """Hold sync ``name``'s lock on ``state_path``, or raise :class:`StateLockedError`."""
    path = lock_path(state_path, name)
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        msg = f"cannot create the lock file {path}: {_cause(exc)}"
        raise StateError(msg) from exc
    try:
        if not _try_lock(handle):
            msg = (
                f"sync {name!r} is already running on state file {state_path} "
                f"({_read_holder(handle)}); wait for it to finish"
            )
            raise StateLockedError(msg)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sync": name,
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(record, ensure_ascii=True).encode() + b"\n", 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, 0)
    finally:
        os.close(handle)  # releases the lock


def _try_lock(handle: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(handle: int) -> str:
    try:
        data = os.pread(handle, 4096, 0)
        holder = json.loads(data or b"{}")
    except (OSError, ValueError):
        holder = {}
    if not isinstance(holder, dict) or "pid" not in holder:
        return "holder unknown: it is starting"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
