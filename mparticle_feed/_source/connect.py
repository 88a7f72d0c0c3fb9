"""Source stage: a query's rows from a ``--db`` value (a database URL, a file, MODULE:CALLABLE).

``sqlite:///path`` and ``duckdb:///path`` open the file read-only; ``postgresql://`` uses
psycopg 3 with a server-side cursor, so the server holds the result and rows arrive a chunk
at a time; any other ``scheme://`` URL goes to SQLAlchemy (when installed) with streamed
results. ``MODULE:CALLABLE`` names a function returning a DB-API connection, importable from
the working directory. A URL's password is never shown: every message names the URL with
the password replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._errors import ConfigurationError

__all__ = ["open_query", "redact_url"]

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_DUCKDB_SUFFIXES = (".duckdb", ".ddb")
#: The server-side cursor's name: the server keeps the result, the client fetches chunks.
_CURSOR_NAME = "mparticle_feed_rows"


def redact_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``; anything else unchanged."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def _scrub(text: str, url: str) -> str:
    """A driver's message with the URL's password removed, should the driver repeat it."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        return text
    if not password:
        return text
    for form in {password, urllib.parse.unquote(password), urllib.parse.quote(password)}:
        text = text.replace(form, "***")
    return text


def _refused(db: str, exc: BaseException) -> ConfigurationError:
    reason = _scrub(str(exc).strip(), db) or type(exc).__name__
    return ConfigurationError(f"--db {redact_url(db)}: {type(exc).__name__}: {reason}")


def _file_path(url: str, scheme: str) -> Path:
    path = url[len(scheme) + len(":///") :]
    if not url.startswith(f"{scheme}:///") or not path:
        raise ConfigurationError(
            f"--db: write {scheme}:///path/to/file (three slashes), got {url!r}"
        )
    return Path(path).expanduser()


def _require(module: str, extra: str, db: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigurationError(
            f"--db {redact_url(db)} needs the {module!r} package: pip install {extra}"
        ) from None


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


@contextlib.contextmanager
def _sqlite(path: Path, query: str) -> Iterator[Any]:
    if not path.exists():
        raise ConfigurationError(f"--db: {path} does not exist")
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # Undecodable bytes become lone surrogates: that row is rejected, the run goes on
    # (SQLite's default stops every run at that row).
    connection.text_factory = _lenient_text
    try:
        try:
            cursor = connection.execute(query)
        except sqlite3.Error as exc:
            raise _refused(str(path), exc) from None
        yield cursor
    finally:
        connection.close()


#: DuckDB types whose Arrow values are the cursor's Python values (checked value by value in
#: tests/test_cli_duckdb_arrow.py). Others differ: HUGEINT becomes a Decimal, UUID text, MAP a
#: list of pairs, INTERVAL and TIMESTAMP_NS other types, BIT bytes.
_ARROW_SAFE_DUCKDB = frozenset(
    {
        "boolean",
        "tinyint",
        "smallint",
        "integer",
        "bigint",
        "utinyint",
        "usmallint",
        "uinteger",
        "ubigint",
        "float",
        "double",
        "decimal",
        "varchar",
        "blob",
        "date",
        "time",
        "timestamp",
        "timestamp_s",
        "timestamp_ms",
        "timestamp with time zone",
        "null",
    }
)


def _arrow_safe(duckdb_type: Any) -> bool:
    kind = duckdb_type.id
    if kind in ("list", "struct"):
        return all(_arrow_safe(child) for _, child in duckdb_type.children)
    return kind in _ARROW_SAFE_DUCKDB


def _has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


@contextlib.contextmanager
def _duckdb(path: Path, query: str, db: str, *, arrow: bool = True) -> Iterator[Any]:
    duckdb = _require("duckdb", "duckdb", db)
    if not path.exists():
        raise ConfigurationError(f"--db: {path} does not exist")
    try:
        connection = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise _refused(db, exc) from None
    try:
        try:
            # A relation is read as Arrow record batches (the Arrow engine), when pyarrow is
            # installed and every column's Arrow values are what the cursor would give;
            # otherwise fetchmany hands the rows to Python a chunk at a time.
            source = connection.sql(query) if arrow and _has_pyarrow() else None
            if source is None or not all(map(_arrow_safe, source.types)):
                source = connection.execute(query)
        except duckdb.Error as exc:
            raise _refused(db, exc) from None
        try:
            yield source
        except duckdb.Error as exc:
            # A relation runs as it is read: an error in its rows arrives while reading.
            raise _refused(db, exc) from None
    finally:
        connection.close()


@contextlib.contextmanager
def _postgresql(db: str, query: str) -> Iterator[Any]:
    psycopg = _require("psycopg", "'psycopg[binary]'", db)
    try:
        connection = psycopg.connect(db)
    except psycopg.Error as exc:
        raise _refused(db, exc) from None
    try:
        # A named cursor is a server-side cursor: the server holds the result.
        with connection.cursor(name=_CURSOR_NAME) as cursor:
            try:
                cursor.execute(query)
            except psycopg.Error as exc:
                raise _refused(db, exc) from None
            try:
                yield cursor
            except psycopg.Error as exc:
                # A server-side cursor runs as it is fetched: an error in a later row too.
                raise _refused(db, exc) from None
    finally:
        connection.close()


@contextlib.contextmanager
def _sqlalchemy(db: str, query: str) -> Iterator[Any]:
    sqlalchemy = _require("sqlalchemy", "sqlalchemy", db)
    try:
        engine = sqlalchemy.create_engine(db)
    except (ImportError, sqlalchemy.exc.ArgumentError) as exc:
        raise _refused(db, exc) from None
    try:
        with engine.connect() as connection:
            try:
                result = connection.execution_options(stream_results=True).execute(
                    sqlalchemy.text(query)
                )
            except sqlalchemy.exc.DBAPIError as exc:
                raise _refused(db, exc.orig or exc) from None
            yield result
    except sqlalchemy.exc.DBAPIError as exc:
        # Connecting, or a streamed result failing on a row as it is read.
        raise _refused(db, exc.orig or exc) from None
    finally:
        engine.dispose()


@contextlib.contextmanager
def _callable(spec: str, query: str) -> Iterator[Any]:
    module_name, _, attribute = spec.partition(":")
    # A console script's sys.path starts at its own folder: look in the working directory too.
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"--db: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise ConfigurationError(f"--db: {module_name}.{attribute} is not a callable")
    connection = factory()
    try:
        cursor = connection.cursor()
        cursor.execute(query)
        yield cursor
    finally:
        connection.close()


def open_query(
    db: str, query: str, *, arrow: bool = True
) -> contextlib.AbstractContextManager[Any]:
    """Connect to ``db``, run ``query``, and yield what :func:`rows_from` reads; close on exit.

    A DuckDB query is handed over as a relation (read as Arrow) when pyarrow is installed
    and every column's type reaches Arrow as the cursor's values, unless ``arrow`` is false.

    Raises :class:`ConfigurationError` (naming the URL without its password) when ``db`` is
    not understood, its driver is not installed, or the connection or query fails.
    """
    scheme = urllib.parse.urlsplit(db).scheme.lower() if "://" in db else ""
    if scheme == "sqlite":
        return _sqlite(_file_path(db, scheme), query)
    if scheme == "duckdb":
        return _duckdb(_file_path(db, scheme), query, db, arrow=arrow)
    if scheme in ("postgresql", "postgres"):
        return _postgresql(db, query)
    if scheme:
        return _sqlalchemy(db, query)
    path = Path(db)
    suffix = path.suffix.lower()
    if suffix in _DUCKDB_SUFFIXES:
        return _duckdb(path, query, db, arrow=arrow)
    if suffix in _SQLITE_SUFFIXES or path.exists():
        return _sqlite(path, query)
    module_name, sep, attribute = db.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"--db: {db!r} is not a database URL (sqlite:///, duckdb:///, postgresql://, or a "
            "SQLAlchemy URL), an existing SQLite or DuckDB file, or MODULE:CALLABLE"
        )
    return _callable(db, query)
