"""Keeping what mParticle lacks (sync stage): mapped batches compared with the state.

An event row is kept when its event or its user fields hash differently from what was last
accepted; a user-attribute row sends only the attributes that changed and names those that
disappeared in ``deleted_user_attributes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import attrs
import orjson

from .._mapping.provenance import RowRef, SourcedBatch, events_part
from .._mapping.sources import SyncKind
from .._mapping.written import WrittenBatch, event_data
from .._wire.codec import _json_default, to_dict
from .._wire.models import Batch
from .protocol import SyncState
from .records import _digest
from .send import _Statuses
from .state import StateEntry, content_hash
from .status import _UNCHANGED

__all__: list[str] = []

#: Keys looked up in the state at once (one query), and the most batches held meanwhile.
_LOOKUP_KEYS = 500
_LOOKAHEAD_BATCHES = 100
#: Slices of rows seen (see KnownRows.known_slice) held before they are stored at once.
_SLICES_HELD = 500


class _Differ:
    """Compares mapped batches with the state and keeps only what mParticle lacks."""

    def __init__(
        self,
        kind: str,
        state: SyncState | None,
        name: str,
        statuses: _Statuses,
        *,
        refresh: bool = False,
    ) -> None:
        self.kind = kind
        self.state = state
        self.name = name
        self.statuses = statuses
        #: row number → the entry to store once the row is accepted.
        self.entries: dict[int, StateEntry] = {}
        self.unchanged = 0
        #: row number → the source digest of a row handed to mapping (see KnownRows).
        self.sources: dict[int, str] = {}
        #: key → the entry (None: none) found before mapping, for the comparison.
        self._prefetched: dict[str, StateEntry | None] = {}
        #: Entries found unchanged whose source digest is new, stored at each lookup
        #: (a sync's, when its state can: ``record_sources``); a plan only reads.
        self._refresh: list[StateEntry] | None = (
            [] if refresh and hasattr(state, "record_sources") else None
        )
        #: Slices seen this run, stored in groups (a sync's, when its state can).
        self._slices: list[tuple[str, str]] | None = (
            [] if refresh and hasattr(state, "record_slices") else None
        )

    # --- KnownRows: what mapping asks before it maps a row -----------------------------

    @property
    def knows_sources(self) -> bool:
        """Whether the state keeps source digests (it offers ``sources``): rows may be skipped."""
        return self.state is not None and callable(getattr(self.state, "sources", None))

    def stored_sources(self, keys: Sequence[str]) -> dict[str, str]:
        """The source digests stored for ``keys``; their entries are kept for the comparison."""
        if not keys:
            return {}
        prefetched = self._prefetched
        # Only whether a key has an entry, and its digest: a key without one needs no
        # second look-up; the entries of the (few) changed rows are read when compared.
        digests: dict[str, str | None] = self.state.sources(self.name, keys)  # type: ignore[union-attr]
        for key in keys:
            if key not in digests:
                prefetched[key] = None
        return {key: value for key, value in digests.items() if value is not None}

    def skipped(self, numbers: Sequence[int], keys: list[str]) -> None:
        # Nothing of these keys was prefetched: only keys without an entry are, and a row
        # is skipped for its entry (a key's later rows are turned away as repeats).
        self.statuses.mark_numbers(numbers, _UNCHANGED)
        self.unchanged += len(numbers)

    def kept(self, row_number: int, digest: str) -> None:
        self.sources[row_number] = digest

    def known_slice(self, digest: str) -> str | None:
        lookup = getattr(self.state, "source_slice", None)
        return lookup(self.name, digest) if lookup is not None else None

    def stored_span(self, first: str, last: str, count: int) -> str | None:
        lookup = getattr(self.state, "source_span", None)
        return lookup(self.name, first, last, count) if lookup is not None else None

    def saw_slice(self, digest: str, rows: str) -> None:
        if self._slices is not None:
            self._slices.append((digest, rows))
            if len(self._slices) >= _SLICES_HELD:
                self._store_slices(every_row_read=False)

    def _store_slices(self, *, every_row_read: bool) -> None:
        """Store the slices seen; once every row was read, forget those not seen this run."""
        if self._slices is not None and (self._slices or every_row_read):
            self.state.record_slices(  # type: ignore[union-attr]
                self.name, self._slices, forget_older=every_row_read
            )
            self._slices = []

    def forget(self, row: RowRef) -> None:
        """A rejected row: nothing of it is stored."""
        self.entries.pop(row.row_number, None)
        self.sources.pop(row.row_number, None)
        if row.primary_key is not None:
            self._prefetched.pop(row.primary_key, None)

    def _lookup(self, keys: list[str]) -> dict[str, StateEntry]:
        """The stored entries of ``keys``: those found before mapping, the rest queried."""
        assert self.state is not None
        known: dict[str, StateEntry] = {}
        missing: list[str] = []
        prefetched = self._prefetched
        for key in keys:
            if key in prefetched:
                entry = prefetched.pop(key)
                if entry is not None:
                    known[key] = entry
            else:
                missing.append(key)
        if missing:
            known.update(self.state.get_many(self.name, missing))
        return known

    def _store_refreshed(self) -> None:
        if self._refresh:
            self.state.record_sources(self.name, self._refresh)  # type: ignore[union-attr]
            self._refresh = []

    def __call__(self, batches: Iterable[SourcedBatch]) -> Iterator[SourcedBatch]:
        if self.state is None:
            yield from batches
            return
        # Batches wait until they hold a lookup's worth of keys: one state query per chunk
        # of rows, not one per batch. A key occurs once per run (duplicates are rejected
        # while mapping), so what this run settles meanwhile cannot change a lookup.
        pending: list[SourcedBatch] = []
        keys: list[str] = []
        for sourced in batches:
            pending.append(sourced)
            keys.extend(self._keys(sourced))
            if len(keys) >= _LOOKUP_KEYS or len(pending) >= _LOOKAHEAD_BATCHES:
                yield from self._compare(pending, keys)
                pending, keys = [], []
        if pending:
            yield from self._compare(pending, keys)
        self._store_slices(every_row_read=True)

    def _keys(self, sourced: SourcedBatch) -> list[str]:
        if self.kind == SyncKind.USER_ATTRIBUTES.value:
            keyed = [row.primary_key for row in sourced.rows if row.primary_key is not None]
            return [str(keyed[0])] if keyed else []
        return [row.primary_key for row in sourced.event_rows if row.primary_key is not None]

    def _compare(self, pending: list[SourcedBatch], keys: list[str]) -> Iterator[SourcedBatch]:
        known = self._lookup(keys)
        for sourced in pending:
            kept = (
                self._user_attributes(sourced, known)
                if self.kind == SyncKind.USER_ATTRIBUTES.value
                else self._events(sourced, known)
            )
            if kept is not None:
                yield kept
        self._store_refreshed()

    def _refreshed(self, previous: StateEntry, source: str | None) -> None:
        """An unchanged row: its new source digest is stored, so the next run skips it."""
        if source is not None and source != previous.source and self._refresh is not None:
            self._refresh.append(attrs.evolve(previous, source=source))

    def _skip(self, rows: Iterable[RowRef]) -> None:
        for row in rows:
            self.statuses.mark(row, _UNCHANGED)
            self.unchanged += 1

    def _events(self, sourced: SourcedBatch, known: dict[str, StateEntry]) -> SourcedBatch | None:
        hashes = (
            _written_event_hashes(sourced)
            if isinstance(sourced, WrittenBatch)
            else _event_hashes(sourced.batch)
        )
        count = len(sourced.event_rows)
        kept: list[int] = []
        sources = self.sources
        for index, (digest, row) in enumerate(zip(hashes, sourced.event_rows, strict=True)):
            key = row.primary_key
            source = sources.pop(row.row_number, None) if sources else None
            previous = known.get(key) if key is not None else None
            if previous is not None and previous.hash == digest:
                self._refreshed(previous, source)
                continue
            kept.append(index)
            if key is not None:
                self.entries[row.row_number] = StateEntry(key=key, hash=digest, source=source)
        if len(kept) == count:
            return sourced
        kept_set = set(kept)
        skipped = [sourced.event_rows[i] for i in range(count) if i not in kept_set]
        if not kept:
            # Rows that gave only user fields travel with the events; none are left. Every
            # event row is among ``rows``, once.
            self._skip(sourced.rows)
            return None
        self._skip(skipped)
        return events_part(sourced, kept)

    def _user_attributes(
        self, sourced: SourcedBatch, known: dict[str, StateEntry]
    ) -> SourcedBatch | None:
        batch = sourced.batch
        keyed = [row for row in sourced.rows if row.primary_key is not None]
        if not keyed:
            return sourced  # nothing to key the state on: always sent
        key = str(keyed[0].primary_key)
        document = to_dict(batch)
        current: dict[str, Any] = document.get("user_attributes") or {}
        user = {name: value for name, value in document.items() if name not in _SENT_ON_CHANGE}
        user_hash = content_hash(user)
        attribute_hashes = {name: content_hash(value) for name, value in current.items()}
        # Consent is kept like an attribute, under a name no attribute can have (attribute
        # names are never empty): sent when it changed, left out when it did not.
        if "consent_state" in document:
            attribute_hashes[_CONSENT] = content_hash(document["consent_state"])
        digest = content_hash([user_hash, attribute_hashes])
        previous = known.get(key)
        source = self.sources.pop(keyed[0].row_number, None) if self.sources else None
        entry = StateEntry(key=key, hash=digest, attributes=attribute_hashes, source=source)
        if previous is not None and previous.hash == digest:
            self._refreshed(previous, source)
            self._skip(sourced.rows)
            return None
        for row in sourced.rows:
            self.entries[row.row_number] = entry
        if previous is None or previous.attributes is None:
            return sourced
        before = dict(previous.attributes)
        same_user = content_hash([user_hash, before]) == previous.hash
        consent = batch.consent_state
        if same_user:
            changed = {
                name: batch.user_attributes[name]  # type: ignore[index]
                for name, value_hash in attribute_hashes.items()
                if name != _CONSENT and before.get(name) != value_hash
            }
            if before.get(_CONSENT) == attribute_hashes.get(_CONSENT):
                consent = None
        else:
            # Identities changed: send every attribute, as for a new user.
            changed = dict(batch.user_attributes or {})
        gone = set(before) - set(current) - {_CONSENT}
        deleted = sorted(gone | set(batch.deleted_user_attributes or ()))
        return SourcedBatch(
            batch=attrs.evolve(
                batch,
                user_attributes=changed or None,
                deleted_user_attributes=tuple(deleted) or None,
                consent_state=consent,
            ),
            event_rows=sourced.event_rows,
            rows=sourced.rows,
        )


#: Batch fields a user-attribute sync sends only when they changed; the rest name the user.
_SENT_ON_CHANGE = frozenset(
    {"user_attributes", "deleted_user_attributes", "source_request_id", "consent_state"}
)
#: The state's name for the consent hash, beside the attributes' (no attribute is unnamed).
_CONSENT = ""

_HASH_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _event_hashes(batch: Batch) -> list[str]:
    """Each event's state hash: ``content_hash([user fields' hash, event as written])``.

    orjson writes the models through the codec's hook, as packing does, so no dict tree
    is built per event; the bytes, keys sorted, are those ``content_hash`` hashes.
    """
    try:
        header = dict(_json_default(batch))  # the hook may hand back the model's storage
        events = header.pop("events", None) or ()
        header.pop("source_request_id", None)
        user_hash = _digest(orjson.dumps(header, default=_json_default, option=_HASH_OPTIONS))
        prefix = b'["' + user_hash.encode() + b'",'
        return [
            _digest(
                prefix + orjson.dumps(event, default=_json_default, option=_HASH_OPTIONS) + b"]"
            )
            for event in events
        ]
    except TypeError:
        # Values orjson refuses (integers beyond 64 bits): content_hash's fallback.
        document = to_dict(batch)
        documents = document.pop("events", None) or []
        document.pop("source_request_id", None)
        user = content_hash(document)
        return [content_hash([user, event]) for event in documents]


def _written_event_hashes(sourced: WrittenBatch) -> list[str]:
    """:func:`_event_hashes` for events written as data (the Arrow engine's), without models.

    An event written as bytes is read back as data (JSON numbers and text read back as
    the values written), so orjson writes the same sorted bytes as for the model and the
    hashes are the model path's.
    """
    try:
        # A header written without a model is read back as data, as the events are.
        header = (
            dict(_json_default(sourced.header))
            if sourced.header_json is None
            else orjson.loads(sourced.header_json)
        )
        header.pop("source_request_id", None)
        user_hash = _digest(orjson.dumps(header, default=_json_default, option=_HASH_OPTIONS))
        prefix = b'["' + user_hash.encode() + b'",'
        return [
            _digest(
                prefix
                + orjson.dumps(event_data(event), default=_json_default, option=_HASH_OPTIONS)
                + b"]"
            )
            for event in sourced.blobs
        ]
    except TypeError:
        return _event_hashes(sourced.batch)
