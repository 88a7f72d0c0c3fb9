"""Source stage: ``rows_from(source)``, rows as dicts from every kind of source a warehouse user has.

DB-API cursors (any row type), SQLAlchemy results, pandas and Polars DataFrames, Arrow tables,
batches and streams, DuckDB relations, and any iterable of mappings. Each is read in chunks,
never all at once. The optional libraries are imported only when one of their objects is
passed: a source is recognised by the module its type comes from.

Nulls become ``None`` whatever the library calls them (pandas ``NaN``/``NaT``/``pd.NA``,
Arrow nulls); an Arrow or Polars floating ``NaN`` is a value, not a null, and is refused by
the mapping as any non-finite number is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .._errors import ConfigurationError
from .rows import Rows, RowSource, _column_names, _CursorRows

if TYPE_CHECKING:
    import pyarrow

__all__ = ["arrow_reader", "is_arrow_shaped", "is_cursor", "rows_from"]

_SOURCES_ACCEPTED = (
    "pass an executed DB-API cursor, a SQLAlchemy Result, a pandas or Polars DataFrame, "
    "a pyarrow Table/RecordBatch/RecordBatchReader, a DuckDB relation, or an iterable of dicts"
)


def _library(value: object) -> str:
    """The top-level package a value's type comes from (``"pandas"``, ``"pyarrow"``...)."""
    return type(value).__module__.partition(".")[0]


def is_cursor(source: object) -> bool:
    """True when ``source`` is read as a cursor (``fetchmany``): a DB-API cursor, which has
    ``description``, or a SQLAlchemy ``Result``; never a mapping or a string.

    Both engines ask this, so a DuckDB cursor (Arrow-capable too) is read as a cursor by each.
    """
    if isinstance(source, (str, bytes, bytearray, Mapping)) or not hasattr(source, "fetchmany"):
        return False
    return hasattr(source, "description") or _library(source) == "sqlalchemy"


def _type_name(value: object) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


# --- pandas ------------------------------------------------------------------------------------


def _pandas_rows(frame: Any, chunk_size: int) -> Iterator[dict[str, Any]]:
    names = [str(name) for name in frame.columns]
    for start in range(0, len(frame), chunk_size):
        chunk = frame.iloc[start : start + chunk_size]
        columns = []
        for position in range(len(names)):
            series = chunk.iloc[:, position]
            missing = series.isna().tolist()
            if series.dtype.kind == "M":  # datetime64, with or without a time zone
                # Nanoseconds are cut without pandas' warning: the wire counts milliseconds.
                values = [
                    None if null else value.to_pydatetime(warn=False)
                    for value, null in zip(series.tolist(), missing, strict=True)
                ]
            else:
                # tolist() gives Python scalars; a nullable Int64 column stays integers.
                values = [
                    None if null else value
                    for value, null in zip(series.tolist(), missing, strict=True)
                ]
            columns.append(values)
        for values in zip(*columns, strict=True):
            yield dict(zip(names, values, strict=True))


def _pandas_source(frame: Any, chunk_size: int) -> Rows:
    names = [str(name) for name in frame.columns]
    _column_names([(name,) for name in names])
    return Rows(_pandas_rows(frame, chunk_size), names, kind="a pandas DataFrame")


# --- Polars ------------------------------------------------------------------------------------


def _polars_source(frame: Any, chunk_size: int) -> Rows:
    names = [str(name) for name in frame.columns]

    def rows() -> Iterator[dict[str, Any]]:
        for chunk in frame.iter_slices(chunk_size):
            yield from chunk.to_dicts()

    return Rows(rows(), names, kind="a Polars DataFrame")


# --- Arrow -------------------------------------------------------------------------------------


def is_arrow_shaped(source: object) -> bool:
    """Whether :func:`arrow_reader` reads ``source`` (told without importing pyarrow)."""
    library = _library(source)
    if library in ("pandas", "polars"):
        return False
    return library in ("duckdb", "pyarrow") or hasattr(type(source), "__arrow_c_stream__")


def arrow_reader(source: object, *, chunk_size: int = 65_536) -> pyarrow.RecordBatchReader | None:
    """A ``pyarrow.RecordBatchReader`` over an Arrow-shaped source, or None for any other source.

    Arrow-shaped: a pyarrow ``Table``, ``RecordBatch`` or ``RecordBatchReader``, a DuckDB
    relation, or any object exporting the Arrow C stream interface (``__arrow_c_stream__``)
    other than a pandas or Polars DataFrame (read by their own paths). pyarrow is imported
    only when the source is one of these. ``chunk_size`` bounds the rows a batch holds where
    the source lets the reader choose.
    """
    library = _library(source)
    if library in ("pandas", "polars"):
        return None
    if library == "duckdb" and hasattr(source, "to_arrow_reader"):
        reader: pyarrow.RecordBatchReader = source.to_arrow_reader(chunk_size)
        return reader
    if library == "pyarrow":
        import pyarrow as pa

        if isinstance(source, pa.RecordBatchReader):
            return source
        if isinstance(source, pa.Table):
            return source.to_reader(max_chunksize=chunk_size)
        if isinstance(source, pa.RecordBatch):
            return pa.RecordBatchReader.from_batches(source.schema, [source])
    if hasattr(type(source), "__arrow_c_stream__"):
        import pyarrow as pa

        return pa.RecordBatchReader.from_stream(source)
    return None


def _arrow_rows(reader: pyarrow.RecordBatchReader, chunk_size: int) -> Iterator[dict[str, Any]]:
    for batch in reader:
        # A producer's batch may be large: turn it into Python objects a slice at a time.
        for start in range(0, batch.num_rows, chunk_size):
            yield from batch.slice(start, chunk_size).to_pylist()


def _arrow_source(reader: pyarrow.RecordBatchReader, chunk_size: int, kind: str) -> Rows:
    names = list(reader.schema.names)
    _column_names([(name,) for name in names])
    return Rows(_arrow_rows(reader, chunk_size), names, kind=kind)


# --- iterables of mappings ---------------------------------------------------------------------


def _mapping_rows(source: Iterable[Any]) -> Rows:
    # Rows are checked one by one: a row that is not a mapping is rejected with its number,
    # like any other bad row, and the run goes on.
    rows = cast("Iterator[dict[str, Any]]", iter(source))
    return Rows(rows, None, kind="an iterable of mappings")


# --- the entry point ---------------------------------------------------------------------------


def _refuse(source: object, advice: str) -> ConfigurationError:
    return ConfigurationError(f"cannot read rows from {_type_name(source)}: {advice}")


def rows_from(source: RowSource, *, chunk_size: int = 1000) -> Rows:
    """Rows of any source as ``{column: value}`` dicts, read ``chunk_size`` rows at a time.

    ``source`` is an executed DB-API cursor (tuple, dict, named-tuple or ``sqlite3.Row``
    rows; psycopg2 named cursors too), a SQLAlchemy ``Result``, a pandas or Polars DataFrame,
    a pyarrow ``Table``/``RecordBatch``/``RecordBatchReader``, a DuckDB relation, or any
    iterable of mappings. Nulls become ``None``; pandas nullable integers stay integers and
    time zones are kept. Any other source raises :class:`ConfigurationError` naming its type
    and what to pass instead, before a row is read.
    """
    if chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be at least 1, got {chunk_size}")
    if isinstance(source, Rows):
        return source
    library = _library(source)
    if isinstance(source, (str, bytes, bytearray, Mapping)):
        raise _refuse(source, _SOURCES_ACCEPTED)
    if library == "pandas":
        if hasattr(source, "iloc") and hasattr(source, "columns"):
            return _pandas_source(source, chunk_size)
        raise _refuse(source, "pass a DataFrame (series.to_frame() for a Series)")
    if library == "polars":
        if hasattr(source, "iter_slices"):
            return _polars_source(source, chunk_size)
        if hasattr(source, "collect"):
            raise _refuse(source, "collect the LazyFrame first (lazy_frame.collect())")
        raise _refuse(source, "pass a DataFrame (series.to_frame() for a Series)")
    if library == "sqlalchemy" and not hasattr(source, "fetchmany"):
        raise _refuse(
            source,
            "execute the query and pass its Result "
            "(connection.execution_options(stream_results=True).execute(text(sql)))",
        )
    if is_cursor(source):
        return _CursorRows(source, chunk_size).as_rows(_type_name(source))
    reader = arrow_reader(source, chunk_size=chunk_size)
    if reader is not None:
        return _arrow_source(reader, chunk_size, _type_name(source))
    if hasattr(source, "cursor") and hasattr(source, "commit"):
        raise _refuse(source, "execute a query on a cursor (connection.cursor()) and pass that")
    if library == "pyspark":
        raise _refuse(source, "pass (row.asDict() for row in df.toLocalIterator())")
    if isinstance(source, Iterable):
        return _mapping_rows(source)
    raise _refuse(source, _SOURCES_ACCEPTED)
