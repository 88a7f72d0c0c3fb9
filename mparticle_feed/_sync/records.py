"""What the state store hands out and takes in (sync stage): entries, outbox records, run starts.

Plain frozen records, plus the JSON forms the outbox stores them in.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from .._errors import ConfigurationError, StateError

__all__ = [
    "InFlightRequest",
    "OutboxBatch",
    "OutboxRequest",
    "StateEntry",
    "SyncStart",
    "content_hash",
    "mapping_changed",
]


def mapping_changed(
    name: str,
    previous: tuple[str, str] | None,
    *,
    kind: str,
    fingerprint: str,
    on_mapping_change: str,
) -> bool:
    """Whether sync ``name`` last ran (``previous``: kind, fingerprint) with another mapping.

    The one rule for a run and a plan: a different kind counts as a different mapping. With
    ``on_mapping_change="fail"`` a change raises :class:`StateError`.
    """
    if on_mapping_change not in ("fail", "resend", "keep"):
        msg = f"on_mapping_change must be 'fail', 'resend' or 'keep', not {on_mapping_change!r}"
        raise ConfigurationError(msg)
    if previous is None or previous == (kind, fingerprint):
        return False
    if on_mapping_change == "fail":
        old_kind, old_fingerprint = previous
        msg = (
            f"sync {name!r} was last run with a different mapping "
            f"(kind {old_kind}, fingerprint {old_fingerprint[:12]}; now kind {kind}, "
            f"fingerprint {fingerprint[:12]}). Choose what to resend: "
            "on_mapping_change='resend' sends every row again, 'keep' sends only rows "
            "whose output changed (CLI: --on-mapping-change)."
        )
        raise StateError(msg)
    return True


def content_hash(value: Any) -> str:
    """A stable hash of a JSON-compatible value (keys sorted), as 32 hex characters."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # orjson refuses integers beyond 64 bits and lone surrogates; the standard
        # library writes both (surrogates escaped).
        data = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
    return _digest(data)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@attrs.frozen(kw_only=True)
class StateEntry:
    """What mParticle last accepted for one primary key of one sync.

    ``attributes`` maps each user attribute name to the hash of its accepted value
    (user-attribute syncs only; ``None`` for event syncs). ``source`` is the digest of the
    source row (and mapping) that gave it: a later run skips the row, unmapped, while its
    digest is the same. ``None`` when the row could not be digested, or the state keeps
    none; such a row is mapped and compared by ``hash``.
    """

    key: str
    hash: str
    attributes: Mapping[str, str] | None = None
    source: str | None = None


@attrs.frozen(kw_only=True)
class InFlightRequest:
    """A batch in the outbox whose outcome is not settled yet (one record per batch)."""

    source_request_id: str
    endpoint: str
    row_count: int
    started_at: float


@attrs.frozen(kw_only=True)
class OutboxBatch:
    """One batch of an outbox request: its id, exact bytes, rows and entries to record.

    ``rows`` and ``event_rows`` are ``(row_number, primary_key)`` pairs of the run that
    wrote the batch; ``entries`` are stored in the state when the batch is accepted.
    """

    source_request_id: str
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    rows: tuple[tuple[int, str | None], ...]
    event_rows: tuple[tuple[int, str | None], ...]
    entries: tuple[StateEntry, ...] = ()


@attrs.frozen(kw_only=True)
class OutboxRequest:
    """An unsettled request of the outbox: where it goes and its unsettled batches."""

    request_no: int
    endpoint: str
    created_at: float
    batches: tuple[OutboxBatch, ...]

    @property
    def body(self) -> bytes:
        """The exact body to send: the JSON array of the batches' bytes."""
        return b"[" + b",".join(batch.body for batch in self.batches) + b"]"


@attrs.frozen(kw_only=True)
class SyncStart:
    """What :meth:`StateStore.begin_sync` found about a sync's earlier runs.

    ``version`` is the sync's run version before this run (a plan made at another
    version is superseded); ``next_seq`` is the first id sequence number this run may
    use; ``plan`` the SHA-256 of the plan file the previous run sent, if it sent one.
    """

    name: str
    first_run: bool
    mapping_changed: bool
    state_cleared: bool
    previous_status: str | None
    in_flight: tuple[InFlightRequest, ...]
    known_keys: int
    version: int = 0
    next_seq: int = 0
    plan: str | None = None

    @property
    def resumed(self) -> bool:
        """True when the previous run did not finish (it crashed or was stopped)."""
        return self.previous_status in ("running", "stopped")


def _json_text(value: Any, *, sort_keys: bool = False) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0).decode()
    except TypeError:
        # Keys may hold lone surrogates (rejected upstream, but never a reason to crash
        # here): the standard library escapes them. Both texts read back alike.
        return json.dumps(value, sort_keys=sort_keys)


def _dump_rows(rows: Iterable[tuple[int, str | None]]) -> str:
    # A tuple of pairs is written as a list of lists, with no copy.
    return _json_text(rows if isinstance(rows, tuple) else [list(pair) for pair in rows])


def _load_rows(text: str) -> tuple[tuple[int, str | None], ...]:
    try:
        value = json.loads(text)
        return tuple((int(number), None if key is None else str(key)) for number, key in value)
    except (ValueError, TypeError) as exc:
        msg = f"an outbox batch holds unreadable rows: {exc}"
        raise StateError(msg) from exc


def _dump_entries(entries: Iterable[StateEntry]) -> str:
    return _json_text([_entry_list(e) for e in entries], sort_keys=True)


def _entry_list(entry: StateEntry) -> list[Any]:
    """``[key, hash, attributes]``, and the source digest when there is one."""
    attributes = None if entry.attributes is None else dict(entry.attributes)
    if entry.source is None:
        return [entry.key, entry.hash, attributes]
    return [entry.key, entry.hash, attributes, entry.source]


def _load_entries(text: str) -> tuple[StateEntry, ...]:
    try:
        value = json.loads(text)
        return tuple(_entry_from_list(item) for item in value)
    except (ValueError, TypeError) as exc:
        msg = f"an outbox batch holds unreadable state entries: {exc}"
        raise StateError(msg) from exc


def _entry_from_list(item: Any) -> StateEntry:
    key, digest, attributes, *rest = item
    if len(rest) > 1:
        raise ValueError(f"an entry has {len(item)} items, expected 3 or 4")
    source = str(rest[0]) if rest and rest[0] is not None else None
    return StateEntry(key=str(key), hash=str(digest), attributes=attributes, source=source)
