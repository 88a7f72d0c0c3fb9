"""Source stage: a query's rows from a ``--db`` value (a database URL, a file, MODULE:CALLABLE).

``sqlite:///path`` and ``duckdb:///path`` open the file read-only; ``postgresql://`` uses
psycopg 3 with a server-side cursor, so the server holds the result and rows arrive a chunk
at a time; any other ``scheme://`` URL goes to SQLAlchemy (when installed) with streamed
results. ``MODULE:CALLABLE`` names a function returning a DB-API connection, importable from
the working directory. A URL's secrets are never shown: every message names the URL with its
password, and the value of any parameter named like a secret (``?password=``,
``?motherduck_token=``), replaced by ``***``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
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


#: A parameter whose name says its value is a secret, as a URL's query (``?password=``,
#: ``?motherduck_token=``), a keyword DSN (``password=...``) or an ODBC string (``PWD=...;``)
#: writes it: the name, the ``=`` and the value.
_SECRET_PARAMETER = re.compile(
    r"(?i)([\w.-]*(?:pass|pwd|secret|token|key|auth|cred|sig)[\w.-]*)(\s*=\s*)([^&;\s]+)"
)
#: Secrets shorter than this are not searched for in free text (a driver's message): the
#: URL itself is always shown redacted, by its structure.
_SHORTEST_SECRET = 3


def redact_url(url: str) -> str:
    """``url`` with its secrets replaced by ``***``: the password before the host, and the
    value of any parameter named like a secret (``?password=``, ``?access_token=``, a keyword
    DSN's ``password=``, an ODBC string's ``PWD=``, percent-encoded or not). Anything else
    unchanged."""
    return _scrub(_SECRET_PARAMETER.sub(r"\1\2***", _without_password(url)), url)


def _without_password(url: str) -> str:
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


def _secrets(url: str) -> set[str]:
    """Every secret ``url`` holds, in each form a message may repeat it (as written,
    percent-decoded, percent-encoded)."""
    try:
        password = urllib.parse.urlsplit(url).password
    except ValueError:
        password = None
    found = {password} if password else set()
    decoded = url
    for _ in range(3):  # a connect string inside a URL may be encoded twice
        found.update(match.group(3) for match in _SECRET_PARAMETER.finditer(decoded))
        decoded = urllib.parse.unquote(decoded)
    return {
        form
        for secret in found
        for form in (
            secret,
            urllib.parse.unquote(secret),
            urllib.parse.quote(secret),
            urllib.parse.quote(secret, safe=""),
        )
        if len(form) >= _SHORTEST_SECRET
    }


def _scrub(text: str, url: str) -> str:
    """A message with every secret of ``url`` removed, should a driver (or a path built from
    the URL) repeat one."""
    for form in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _refused(db: str, exc: BaseException) -> ConfigurationError:
    reason = _scrub(str(exc).strip(), db) or type(exc).__name__
    return ConfigurationError(f"--db {redact_url(db)}: {type(exc).__name__}: {reason}")


def _file_path(url: str, scheme: str) -> Path:
    path = url[len(scheme) + len(":///") :]
    if not url.startswith(f"{scheme}:///") or not path:
        raise ConfigurationError(
            f"--db: write {scheme}:///path/to/file (three slashes), got {redact_url(url)!r}"
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
def _sqlite(path: Path, query: str, db: str) -> Iterator[Any]:
    if not path.exists():
        raise ConfigurationError(_scrub(f"--db: {path} does not exist", db))
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    # Undecodable bytes become lone surrogates: that row is rejected, the run goes on
    # (SQLite's default stops every run at that row).
    connection.text_factory = _lenient_text
    try:
        try:
            cursor = connection.execute(query)
        except sqlite3.Error as exc:
            raise _refused(db, exc) from None
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
        raise ConfigurationError(_scrub(f"--db: {path} does not exist", db))
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
        return _sqlite(_file_path(db, scheme), query, db)
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
        return _sqlite(path, query, db)
    module_name, sep, attribute = db.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"--db: {redact_url(db)!r} is not a database URL (sqlite:///, duckdb:///, "
            "postgresql://, or a SQLAlchemy URL), an existing SQLite or DuckDB file, or "
            "MODULE:CALLABLE"
        )
    return _callable(db, query)
