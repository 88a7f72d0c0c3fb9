"""Mapping stage: rows a sync's state holds as they are, skipped before they are mapped.

A sync with a state digests every source row (its column names, the types and the values
read, salted with the mapping's fingerprint). A row whose digest is the one stored with
its primary key was mapped from exactly these values by exactly this mapping when
mParticle last accepted it: it is *unchanged* and is not mapped again. Any other row is
mapped and compared by its mapped content, as before; its digest goes into the entry the
state stores once mParticle accepts it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .rejects import _Reject
from .spec import RowMapping

if TYPE_CHECKING:
    from .compile import CompiledMapping

__all__ = ["KnownRows", "SourceDigest", "digestible", "keyed_digests", "skip_known"]

#: Rows digested and looked up together: one state query per chunk.
SKIP_CHUNK = 500
#: Distinct row type signatures remembered (which columns are null); past it, start over.
_TYPE_CACHE_LIMIT = 4096


class KnownRows(Protocol):
    """What the sync tells the mapping about rows the state holds (see :func:`skip_known`)."""

    def stored_sources(self, keys: Sequence[str]) -> Mapping[str, str]:
        """The stored source digests of those ``keys`` that have one."""

    def skipped(self, numbers: list[int], keys: list[str]) -> None:
        """Rows left unmapped (their digests are the stored ones): row numbers and keys."""

    def kept(self, row_number: int, digest: str) -> None:
        """A row that is mapped, with its digest (stored with its entry once accepted)."""


def digestible(mapping: RowMapping) -> bool:
    """Whether the mapping's output depends only on a row's values and the mapping.

    A computed source is Python code: the fingerprint names it but cannot see inside, so
    with one every row is mapped.
    """
    return mapping.computed_field() is None


class SourceDigest:
    """A row's digest: 32 hex characters, or None for a value it cannot write exactly."""

    def __init__(self, salt: str) -> None:
        self._salt = b"mparticle-feed-source/1\n" + salt.encode() + b"\n"
        self._types: dict[tuple[type, ...], bytes] = {}

    def __call__(self, row: Mapping[str, Any]) -> str | None:
        if row.__class__ is not dict:
            row = dict(row)
        # The types count: None and NaN, or text and a datetime, write the same JSON.
        types = tuple(map(type, row.values()))
        names = self._types.get(types)
        if names is None:
            if len(self._types) >= _TYPE_CACHE_LIMIT:
                self._types.clear()
            names = self._types[types] = (
                ",".join(f"{kind.__module__}.{kind.__qualname__}" for kind in types).encode()
                + b"\n"
            )
        try:
            data = orjson.dumps(
                row,
                default=_exact_text,
                option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
            )
        except TypeError:
            return None  # a value with no exact text (an unknown type, a huge integer)
        return hashlib.blake2b(self._salt + names + data, digest_size=16).hexdigest()


def _exact_text(value: Any) -> str:
    """Text that tells apart any two values of one type (the row's types are hashed too)."""
    if isinstance(value, (datetime, time)):
        # fold tells apart the two readings of a local time that occurs twice.
        return value.isoformat() + (" fold" if value.fold else "")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, timedelta):
        return f"{value.days} {value.seconds} {value.microseconds}"
    raise TypeError(type(value).__name__)


def skip_known(
    rows: Iterator[Any],
    compiled: CompiledMapping,
    digest: SourceDigest,
    known: KnownRows,
    *,
    on_skip: Callable[[list[str]], None],
    on_keep: Callable[[str], None],
) -> Iterator[Any]:
    """The rows of ``rows`` to map; the others go to ``on_skip(keys)`` at their place.

    ``on_skip`` gets the keys of consecutive skipped rows exactly where they fall in the
    input, before the next row is handed on, so row numbers (and which of two rows with
    one primary key comes first) are what mapping every row gives. ``on_keep(digest)`` is
    called just before a digested row is handed on. A row without a primary key, or one
    that cannot be keyed or digested, is always handed on: the mapping rejects it or maps
    it as usual.
    """
    while chunk := list(islice(rows, SKIP_CHUNK)):
        digests = keyed_digests(chunk, compiled, digest)
        stored = known.stored_sources([pair[0] for pair in digests if pair is not None])
        skipped: list[str] = []
        for row, pair in zip(chunk, digests, strict=True):
            if pair is not None and stored.get(pair[0]) == pair[1]:
                skipped.append(pair[0])
                continue
            if skipped:  # counted first: the rows before this one
                on_skip(skipped)
                skipped = []
            if pair is not None:
                on_keep(pair[1])
            yield row
        if skipped:
            on_skip(skipped)


def keyed_digests(
    rows: Sequence[Any], compiled: CompiledMapping, digest: SourceDigest
) -> list[tuple[str, str] | None]:
    """Each row's primary key and digest; None for a row that is always mapped (not a
    mapping, no usable key, or a value without exact text)."""
    out: list[tuple[str, str] | None] = []
    append = out.append
    for row in rows:
        pair = None
        if row.__class__ is dict or isinstance(row, Mapping):
            try:
                key = compiled.primary_key(row)
            except _Reject:
                key = None
            if key is not None and (key.isascii() or _encodable(key)):
                value = digest(row)
                if value is not None:
                    pair = (key, value)
        append(pair)
    return out


def _encodable(key: str) -> bool:
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
