"""Source stage: rows from any PEP 249 (DB-API 2.0) cursor, as dicts, in bounded chunks.

Whatever the cursor's row type: tuples, named tuples, ``sqlite3.Row``, psycopg2 ``DictRow``
(read by position) or dict rows (psycopg ``dict_row``, psycopg2 ``RealDictCursor``: read by
name, since iterating a dict yields its keys).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigurationError, MappingError

__all__ = ["ArrowStream", "Cursor", "Result", "RowSource", "Rows", "rows_from_cursor"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Cursor(Protocol):
    """The part of a PEP 249 cursor we use: ``description`` and ``fetchmany``."""

    @property
    def description(self) -> Any: ...

    def fetchmany(self, size: int = ..., /) -> Any: ...


@runtime_checkable
class Result(Protocol):
    """A query result read like a cursor, its columns from ``keys()`` (a SQLAlchemy ``Result``)."""

    def keys(self) -> Any: ...

    def fetchmany(self, size: int = ..., /) -> Any: ...


@runtime_checkable
class ArrowStream(Protocol):
    """Anything exporting the Arrow C stream interface: pyarrow tables and readers, pandas and
    Polars DataFrames, DuckDB relations."""

    def __arrow_c_stream__(self, requested_schema: Any = ..., /) -> Any: ...


#: What ``rows_from`` (so ``plan``, ``sync`` and ``map_rows``) reads rows from: an executed
#: DB-API cursor, a SQLAlchemy result, anything Arrow-shaped (pyarrow, pandas, Polars, DuckDB
#: relations), or any iterable of ``{column: value}`` mappings.
RowSource = Cursor | Result | ArrowStream | Iterable[Mapping[str, Any]]


def _column_names(description: Any) -> list[str]:
    if description is None:
        raise MappingError(
            "the cursor has no result set (description is None); execute a query that returns rows"
        )
    names = [str(column[0]) for column in description]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise MappingError(
            f"the query returns several columns named {', '.join(map(repr, duplicates))}; "
            "give each column a distinct alias"
        )
    return names


class Rows(Iterator[dict[str, Any]]):
    """The rows of a source as ``{column: value}`` dicts, and the source's column names.

    ``columns`` lists the column names when the source declares them (cursors, results,
    DataFrames, Arrow), or is None for a plain iterable of dicts, whose rows may differ.
    Reading it may fetch the first chunk (a psycopg2 named cursor describes its columns only
    then); that chunk is kept and yielded first.
    """

    def __init__(
        self,
        rows: Iterator[dict[str, Any]],
        columns: list[str] | Callable[[], list[str]] | None,
        *,
        kind: str = "rows",
    ) -> None:
        self._rows = rows
        self._columns = columns
        self.kind = kind

    @property
    def columns(self) -> list[str] | None:
        if callable(self._columns):
            self._columns = self._columns()
        return self._columns

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # The underlying generator itself: a for loop then runs at C speed, not through
        # __next__ (one Python call a row). Both read the same stream.
        return self._rows

    def __next__(self) -> dict[str, Any]:
        return next(self._rows)

    def __repr__(self) -> str:
        return f"<Rows from {self.kind}>"


def _widths(chunk: Any) -> set[int] | None:
    """The set of row lengths in a chunk; None when a row has no length."""
    try:
        return set(map(len, chunk))
    except TypeError:
        return None


class _CursorRows:
    """Reads a cursor with ``fetchmany``; names from ``description`` (or a result's ``keys()``)."""

    def __init__(self, cursor: Any, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
        self.cursor = cursor
        self.chunk_size = chunk_size
        self.first: list[Any] | None = None
        self.names: list[str] | None = None

    def as_rows(self, kind: str) -> Rows:
        return Rows(self.rows(), self.columns, kind=kind)

    def _fetch(self) -> list[Any]:
        return list(self.cursor.fetchmany(self.chunk_size) or ())

    def columns(self) -> list[str]:
        if self.names is not None:
            return self.names
        if type(self.cursor).__module__.startswith("sqlalchemy"):
            keys = self.cursor.keys()  # a SQLAlchemy Result: its column names
            self.names = _column_names([(name,) for name in keys])
            return self.names
        description = self.cursor.description
        if description is None:
            # A psycopg2 named (server-side) cursor describes its result only after the first
            # fetch: fetch now and keep the chunk.
            self.first = self._fetch()
            description = self.cursor.description
        self.names = _column_names(description)
        return self.names

    def rows(self) -> Iterator[dict[str, Any]]:
        names = self.columns()
        width = len(names)
        fetched = 0
        chunk, self.first = (self.first if self.first is not None else self._fetch()), None
        while chunk:
            if chunk[0].__class__ is tuple and _widths(chunk) == {width}:
                # Plain tuples of the right width (the usual case): one comprehension a chunk.
                fetched += len(chunk)
                yield from [dict(zip(names, row, strict=False)) for row in chunk]
                chunk = self._fetch()
                continue
            for row in chunk:
                fetched += 1
                if isinstance(row, Mapping):
                    out = dict(row)
                    if len(out) != width:
                        raise MappingError(
                            f"row {fetched} has {len(out)} values for {width} columns"
                        )
                    yield out
                    continue
                # Named tuples, sqlite3.Row, psycopg2 DictRow, SQLAlchemy Row: by position.
                values = row if row.__class__ is tuple else tuple(row)
                if len(values) != width:
                    raise MappingError(
                        f"row {fetched} has {len(values)} values for {width} columns"
                    )
                yield dict(zip(names, values, strict=True))
            chunk = self._fetch()
        logger.debug("fetched %d rows of %d columns", fetched, width)


def rows_from_cursor(cursor: Cursor, *, chunk_size: int = 1000) -> Rows:
    """Yield each row of an executed cursor as ``{column name: value}``.

    Rows are fetched ``chunk_size`` at a time with ``fetchmany`` (never ``fetchall``), so
    memory stays bounded whatever the size of the result. Column names come from
    ``cursor.description`` (read after the first fetch when the cursor fills it only then,
    as psycopg2's named cursors do); two columns with the same name raise
    :class:`MappingError`. Any row type works: tuples, named tuples, ``sqlite3.Row``, dicts.
    """
    return _CursorRows(cursor, chunk_size).as_rows(type(cursor).__qualname__)
