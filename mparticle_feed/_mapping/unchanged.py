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
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import islice
from math import isfinite
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from .._source.coerce import ADDRESS_TYPES
from .._wire.values import utf8_text
from .rejects import _Reject
from .spec import RowMapping

if TYPE_CHECKING:
    from .compile import CompiledMapping

__all__ = [
    "KnownRows",
    "SourceDigest",
    "check_each",
    "column_keys",
    "digestible",
    "keyed_column_digests",
    "keyed_digests",
    "rows_digest",
    "rows_text",
    "skip_known",
]

#: Rows digested and looked up together: one state query per chunk.
SKIP_CHUNK = 500
#: Distinct row shapes remembered (names, and which columns are null); past it, start over.
_SHAPE_CACHE_LIMIT = 4096
#: Per row shape: its names and types as written, which values are floats, and whether any
#: value is a container (or a type whose JSON may hold one).
_Shape = tuple[bytes, tuple[int, ...], bool]
#: Types whose JSON holds no float inside (a float itself is checked on its own).
_SCALARS = (str, int, float, bool, type(None), datetime, date, time, timedelta, Decimal, bytes)


class KnownRows(Protocol):
    """What the sync tells the mapping about rows the state holds (see :func:`skip_known`)."""

    def stored_sources(self, keys: Sequence[str]) -> Mapping[str, str]:
        """The stored source digests of those ``keys`` that have one."""

    def skipped(self, numbers: Sequence[int], keys: list[str]) -> None:
        """Rows left unmapped (their digests are the stored ones): row numbers (ascending;
        a ``range`` for consecutive rows) and keys."""

    def kept(self, row_number: int, digest: str) -> None:
        """A row that is mapped, with its digest (stored with its entry once accepted)."""

    def known_slice(self, digest: str) -> str | None:
        """The :func:`rows_digest` recorded for a slice of rows with this content digest.

        A cache, never trusted alone: a slice is skipped whole only when the keys and
        source digests the state stores now give the same :func:`rows_digest`.
        """

    def stored_span(self, first: str, last: str, count: int) -> str | None:
        """The :func:`rows_text` of the entries from key ``first`` to key ``last`` with a
        digest, if there are exactly ``count`` of them (else None)."""

    def saw_slice(self, digest: str, rows: str) -> None:
        """A slice of rows read with this content digest and :func:`rows_digest` of theirs."""


def check_each(
    check: Callable[[str, int], int | None], keys: list[str], first: int
) -> dict[int, int]:
    """``check(key, row)`` for ``keys[i]`` at row ``first + i``, in order: the positions of
    the keys seen before, each with the row it was first seen at."""
    seen_at: dict[int, int] = {}
    for position, key in enumerate(keys):
        found = check(key, first + position)
        if found is not None:
            seen_at[position] = found
    return seen_at


def digestible(mapping: RowMapping) -> bool:
    """Whether the mapping's output depends only on a row's values and the mapping.

    A computed source is Python code: the fingerprint names it but cannot see inside, so
    with one every row is mapped.
    """
    return mapping.computed_field() is None


class SourceDigest:
    """A row's digest: 32 hex characters, or None for a value it cannot write exactly.

    It covers the column names, each value's type and each value's exact text, salted
    with what else decides the mapped output (the mapping's fingerprint, the data plan
    policy).
    """

    def __init__(self, salt: str) -> None:
        self._salt = b"mparticle-feed-source/2\n" + salt.encode() + b"\n"
        self._shapes: dict[tuple[tuple[Any, ...], tuple[type, ...]], _Shape] = {}

    @property
    def salt(self) -> bytes:
        """What every digest starts from: the version of the format, and the salt."""
        return self._salt

    def __call__(self, row: Mapping[str, Any]) -> str | None:
        if row.__class__ is not dict:
            row = dict(row)
        return self.of_values(tuple(row), tuple(row.values()))

    def of_values(self, names: tuple[Any, ...], values: tuple[Any, ...]) -> str | None:
        """The digest of a row with these column ``names`` and ``values``, in order."""
        # The types count: None and NaN, or text and a datetime, write the same JSON.
        types = tuple(map(type, values))
        shape = self._shapes.get((names, types))
        if shape is None:
            shape = self._shape(names, types)
            if shape is None:
                return None
        header, floats, nested = shape
        try:
            data = orjson.dumps(
                values,
                default=_exact_text,
                option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS,
            )
            if (nested and b"null" in data) or (
                floats and not all(isfinite(values[index]) for index in floats)
            ):
                # JSON writes NaN and the infinities as null; the standard library tells
                # them apart.
                data = json.dumps(values, default=_exact_text, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            return None  # a value with no exact text (an unknown type, a huge integer)
        return hashlib.blake2b(self._salt + header + data, digest_size=16).hexdigest()

    def _shape(self, names: tuple[Any, ...], types: tuple[type, ...]) -> _Shape | None:
        try:
            written = orjson.dumps(names)
        except TypeError:
            return None  # a column name JSON cannot write
        if len(self._shapes) >= _SHAPE_CACHE_LIMIT:
            self._shapes.clear()
        kinds = ",".join(f"{kind.__module__}.{kind.__qualname__}" for kind in types)
        floats = tuple(index for index, kind in enumerate(types) if issubclass(kind, float))
        nested = not all(issubclass(kind, _SCALARS) for kind in types)
        shape = self._shapes[(names, types)] = (
            written + b"\n" + kinds.encode() + b"\n",
            floats,
            nested,
        )
        return shape


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
    if isinstance(value, ADDRESS_TYPES):
        return str(value)  # psycopg's inet and cidr: the text tells any two apart
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
            if key is not None and (key.isascii() or utf8_text(key)):
                value = digest(row)
                if value is not None:
                    pair = (key, value)
        append(pair)
    return out


def keyed_column_digests(
    names: tuple[str, ...],
    columns: Sequence[Sequence[Any]],
    keys: Sequence[str | None],
    digest: SourceDigest,
) -> list[tuple[str, str] | None]:
    """:func:`keyed_digests` of the rows these columns hold (``names`` all distinct), keyed
    by ``keys`` (:func:`column_keys` of the key column), without a dict per row: the same
    keys and digests as for the rows as dicts."""
    of_values = digest.of_values
    out: list[tuple[str, str] | None] = []
    append = out.append
    for key, values in zip(keys, zip(*columns, strict=True), strict=True):
        pair = None
        if key is not None:
            found = of_values(names, values)
            if found is not None:
                pair = (key, found)
        append(pair)
    return out


def column_keys(values: Sequence[Any], compiled: CompiledMapping) -> list[str | None]:
    """The primary key of each value of the key column; None where a row cannot be keyed
    (it is mapped, and rejected there if need be)."""
    key_text = compiled.key_text
    out: list[str | None] = []
    append = out.append
    for value in values:
        try:
            key = value if value.__class__ is str else key_text(value)
        except _Reject:
            key = None
        append(key if key is not None and (key.isascii() or utf8_text(key)) else None)
    return out


def rows_text(pairs: Iterable[tuple[str, str]]) -> str:
    """The source digests of keys, in key order, as one text (what
    :meth:`KnownRows.stored_span` gives). The keys need not be written: a digest covers its
    row's key column, so a row with another key cannot have a digest of these rows."""
    return "".join([digest for _, digest in sorted(pairs)])


def rows_digest(text: str) -> str:
    """The digest of a :func:`rows_text` (see :meth:`KnownRows.known_slice`)."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
