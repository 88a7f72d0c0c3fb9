"""Source stage: rows from any PEP 249 (DB-API 2.0) cursor, as dicts, in bounded chunks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from .._errors import ConfigurationError, MappingError

__all__ = ["Cursor", "RowSource", "iter_rows", "rows_from_cursor"]

logger = logging.getLogger(__name__)


@runtime_checkable
class Cursor(Protocol):
    """The part of a PEP 249 cursor we use: ``description`` and ``fetchmany``."""

    @property
    def description(self) -> Any: ...

    def fetchmany(self, size: int = ..., /) -> Any: ...


#: What ``plan``, ``sync`` and ``map_rows`` read rows from: an executed DB-API cursor, or any
#: iterable of ``{column: value}`` mappings (a list of dicts, DataFrame records, a generator).
RowSource = Cursor | Iterable[Mapping[str, Any]]


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


def _widths(chunk: Any) -> set[int] | None:
    """The set of row lengths in a chunk; None when a row has no length."""
    try:
        return set(map(len, chunk))
    except TypeError:
        return None


def rows_from_cursor(cursor: Cursor, *, chunk_size: int = 1000) -> Iterator[dict[str, Any]]:
    """Yield each row of an executed cursor as ``{column name: value}``.

    Rows are fetched ``chunk_size`` at a time with ``fetchmany`` (never ``fetchall``), so
    memory stays bounded whatever the size of the result. Column names come from
    ``cursor.description``; two columns with the same name raise :class:`MappingError`.
    """
    if chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
    names = _column_names(cursor.description)
    width = len(names)
    fetched = 0
    while True:
        chunk = cursor.fetchmany(chunk_size)
        if not chunk:
            break
        if _widths(chunk) == {width}:
            # Every row has the right width: convert the chunk in one comprehension.
            fetched += len(chunk)
            yield from [dict(zip(names, row, strict=False)) for row in chunk]
            continue
        for row in chunk:
            # sqlite3.Row, DuckDB tuples and plain tuples all index by position.
            values = row if row.__class__ is tuple else tuple(row)
            if len(values) != width:
                raise MappingError(
                    f"row {fetched + 1} has {len(values)} values for {width} columns"
                )
            fetched += 1
            yield dict(zip(names, values, strict=False))  # lengths checked just above
    logger.debug("fetched %d rows of %d columns", fetched, width)


def iter_rows(source: RowSource, *, chunk_size: int = 1000) -> Iterator[Any]:
    """Rows from a cursor, or the items of any iterable of dicts (e.g. DataFrame records).

    The one place that tells a cursor from an iterable of rows: anything with
    ``description`` and ``fetchmany`` that is not itself a mapping is read as a cursor.
    """
    if isinstance(source, Cursor) and not isinstance(source, Mapping):
        return rows_from_cursor(source, chunk_size=chunk_size)
    return iter(source)
