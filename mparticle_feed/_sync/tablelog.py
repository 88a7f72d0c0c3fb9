"""Outbox logs of a table state (sync stage): one append-only file per task, beside the table.

A task of a distributed sync cannot write the table (the driver commits it after the job),
so it keeps its outbox in a file of its own: JSON lines, each write flushed to disk
(``fsync``) before the call returns, so a request is durable before it is sent. Three kinds
of line:

* ``{"t": "request", ...}``: a request about to be sent (endpoint, and per batch its id,
  exact body, rows and the state entries to record once it is accepted);
* ``{"t": "settle", "id": ..., "o": ...}``: a batch's outcome;
* ``{"t": "seq", "next": ...}``: the first id sequence number not used yet;
* ``{"t": "entries", ...}``: entries of accepted batches, written when a finished task's
  log is compacted (:func:`compact`: the bodies of settled batches are dropped).

:func:`read_logs` folds any number of logs into what they add up to: the entries of every
accepted batch, the batches still unsettled (to replay), and the next sequence number. A
last line cut short by a crash is ignored: its request was never sent (the write comes
first).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import orjson

from .._errors import StateError
from .records import OutboxBatch, OutboxRequest, StateEntry
from .tablefiles import write_all, write_atomic

__all__ = ["LogSummary", "OutboxLog", "compact", "read_logs"]

_FINAL = ("accepted", "rejected")


def _entry_json(entry: StateEntry) -> list[Any]:
    attributes = None if entry.attributes is None else dict(entry.attributes)
    return [entry.key, entry.hash, attributes]


def _batch_json(batch: OutboxBatch) -> dict[str, Any]:
    return {
        "id": batch.source_request_id,
        "body": batch.body.decode("utf-8"),
        "rows": [list(row) for row in batch.rows],
        "event_rows": [list(row) for row in batch.event_rows],
        "entries": [_entry_json(entry) for entry in batch.entries],
    }


def request_line(endpoint: str, batches: Sequence[OutboxBatch], created: float) -> bytes:
    """One request of the outbox as a log line."""
    record = {
        "t": "request",
        "endpoint": str(endpoint),
        "created": created,
        "batches": [_batch_json(batch) for batch in batches],
    }
    return orjson.dumps(record) + b"\n"


class OutboxLog:
    """One task's outbox log, opened for appending (created readable by its owner only).

    Safe to share between threads: the client reports outcomes from its workers.
    """

    def __init__(self, path: str, *, clock: Any) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            msg = f"cannot create the outbox log {path}: {exc.strerror or exc}"
            raise StateError(msg) from exc

    def _write(self, data: bytes) -> None:
        # One line is never split between writers: each write holds the lock.
        try:
            write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            msg = f"cannot write the outbox log {self.path}: {exc.strerror or exc}"
            raise StateError(msg) from exc

    def add(
        self,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        *,
        next_seq: int,
        settled: Sequence[tuple[str, str]] = (),
        track: set[str],
    ) -> None:
        """Write outcomes received so far, then the requests, in one durable write;
        ``track`` (the ids still open) loses the settled ids and gains the new ones."""
        lines = [self._settle_lines(settled)]
        created = float(self._clock())
        items = list(requests)
        for endpoint, batches in items:
            lines.append(request_line(endpoint, batches, created))
        lines.append(orjson.dumps({"t": "seq", "next": int(next_seq)}) + b"\n")
        with self._lock:
            self._write(b"".join(lines))
            track.difference_update(rid for rid, o in settled if o in _FINAL)
            track.update(b.source_request_id for _, batches in items for b in batches)

    def _settle_lines(self, outcomes: Sequence[tuple[str, str]]) -> bytes:
        lines = []
        for rid, outcome in outcomes:
            if outcome in _FINAL:
                lines.append(orjson.dumps({"t": "settle", "id": rid, "o": outcome}) + b"\n")
        return b"".join(lines)

    def settle(self, outcomes: Sequence[tuple[str, str]], *, known: set[str]) -> int:
        """Record final outcomes (``accepted``/``rejected``) of ids in ``known``; how many."""
        with self._lock:
            final = [(rid, o) for rid, o in outcomes if o in _FINAL and rid in known]
            if final:
                self._write(self._settle_lines(final))
                known.difference_update(rid for rid, _ in final)
            return len(final)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


@attrs.frozen(kw_only=True)
class LogSummary:
    """What a set of outbox logs adds up to."""

    #: Entries of accepted batches, oldest first: a later entry of a key wins.
    accepted: tuple[StateEntry, ...]
    #: Requests with batches still unsettled, oldest first, each batch once.
    unsettled: tuple[OutboxRequest, ...]
    next_seq: int


def _records(path: str, kinds: tuple[bytes, ...] | None = None) -> Iterator[dict[str, Any]]:
    """The records of a log, streamed; with ``kinds``, only lines of those kinds are
    parsed (every line starts with its kind: the writer puts ``t`` first)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; a missing log is empty
    except FileNotFoundError:
        return
    except OSError as exc:
        msg = f"cannot read the outbox log {path}: {exc.strerror or exc}"
        raise StateError(msg) from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if kinds is not None and not line.startswith(kinds) and line.endswith(b"\n"):
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.endswith(b"\n"):
                    return  # the last line, cut short by a crash while writing: never sent
                msg = f"outbox log {path} line {number} is not readable: {exc}"
                raise StateError(msg) from exc


def _kind(name: str) -> bytes:
    return b'{"t":"' + name.encode() + b'"'


_SETTLE, _SEQ, _REQUEST, _ENTRIES = (_kind(k) for k in ("settle", "seq", "request", "entries"))


def _batch(record: dict[str, Any]) -> OutboxBatch:
    return OutboxBatch(
        source_request_id=str(record["id"]),
        body=str(record["body"]).encode("utf-8"),
        rows=tuple((int(n), None if k is None else str(k)) for n, k in record["rows"]),
        event_rows=tuple((int(n), None if k is None else str(k)) for n, k in record["event_rows"]),
        entries=_entries(record["entries"]),
    )


def _entries(values: Any) -> tuple[StateEntry, ...]:
    return tuple(StateEntry(key=str(k), hash=str(h), attributes=a) for k, h, a in values)


def read_logs(paths: Iterable[str], *, replay: Iterable[str] | None = None) -> LogSummary:
    """Fold outbox logs, in the order given, into a :class:`LogSummary`.

    An outcome settles a batch id in whichever log it was written (a retried task resends
    the same ids). Only batches of logs in ``replay`` (default: all) are kept unsettled;
    the others' unsettled batches were sent again by a later attempt. Reads each log
    twice, streaming: outcomes first, then requests, keeping only what the summary holds.
    """
    ordered = list(paths)
    keep = set(ordered if replay is None else replay)
    outcomes: dict[str, str] = {}
    next_seq = 0
    accepted: list[StateEntry] = []
    unsettled: list[OutboxRequest] = []
    seen: set[str] = set()
    try:
        for path in ordered:
            for record in _records(path, (_SETTLE, _SEQ)):
                if record.get("t") == "settle":
                    outcomes[str(record["id"])] = str(record["o"])
                elif record.get("t") == "seq":
                    next_seq = max(next_seq, int(record["next"]))
        for path in ordered:
            for record in _records(path, (_REQUEST, _ENTRIES)):
                if record.get("t") == "entries":
                    accepted.extend(_entries(record["entries"]))
                elif record.get("t") == "request":
                    left = _fold(record, outcomes, seen, accepted, replay=path in keep)
                    if left:
                        unsettled.append(
                            OutboxRequest(
                                request_no=len(unsettled) + 1,
                                endpoint=str(record["endpoint"]),
                                created_at=float(record["created"]),
                                batches=tuple(left),
                            )
                        )
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"an outbox log holds a record of the wrong shape: {exc}"
        raise StateError(msg) from exc
    return LogSummary(accepted=tuple(accepted), unsettled=tuple(unsettled), next_seq=next_seq)


def _fold(
    record: dict[str, Any],
    outcomes: dict[str, str],
    seen: set[str],
    accepted: list[StateEntry],
    *,
    replay: bool,
) -> list[OutboxBatch]:
    """One request line: its accepted batches' entries into ``accepted``; its batches
    still unsettled (each id once) returned, when its log is replayed."""
    left = []
    for item in record["batches"]:
        rid = str(item["id"])
        if rid in seen:
            continue
        outcome = outcomes.get(rid)
        if outcome is None and not replay:
            # A superseded attempt's open batch: the kept attempt that resent it holds it.
            continue
        seen.add(rid)
        if outcome == "accepted":
            accepted.extend(_entries(item["entries"]))
        elif outcome is None and replay:
            left.append(_batch(item))
    return left


def compact(path: str) -> None:
    """Rewrite a finished task's log to what a commit needs: its outcomes, the entries of
    its accepted batches and its unsettled requests (bodies of settled batches go).
    Atomic: a crash leaves the old log or the new one."""
    summary = read_logs([path])
    outcomes = [r for r in _records(path, (_SETTLE,)) if r.get("t") == "settle"]
    lines = [orjson.dumps(record) + b"\n" for record in outcomes]
    entries = [_entry_json(entry) for entry in summary.accepted]
    for start in range(0, len(entries), 10_000):
        lines.append(orjson.dumps({"t": "entries", "entries": entries[start : start + 10_000]}))
        lines.append(b"\n")
    lines.extend(request_line(r.endpoint, r.batches, r.created_at) for r in summary.unsettled)
    lines.append(orjson.dumps({"t": "seq", "next": summary.next_seq}) + b"\n")
    write_atomic(path, b"".join(lines))
