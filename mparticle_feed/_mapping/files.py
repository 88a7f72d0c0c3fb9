"""Mapping files: TOML or JSON documents turned into mapping objects, with errors by key."""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._errors import DataPlanError, MappingError
from .._wire import commerce as _commerce
from .._wire import common as _common
from .._wire import models as _models
from .sources import Attributes, Column, Constant, ListOf, Source, Struct
from .spec import _CLASSES, RowMapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["load_mapping", "mapping_from_dict"]

# --- loading --------------------------------------------------------------------------------

_SOURCE_KEYS = frozenset({"column", "const"})
_ATTRIBUTE_KEYS = frozenset({"columns", "prefix", "strip_prefix", "remaining", "json_column"})
_PLAIN_KEYS = frozenset({"kind", "environment", "primary_key", "timezone", "epoch_unit"})
_MAP_KEYS = frozenset({"user_identities", "device_identities"})
_FLAG_KEYS = frozenset({"stamp_arrival_time"})
_ATTRIBUTE_FIELDS = frozenset({"user_attributes", "custom_attributes", "custom_flags"})


@functools.cache
def _wire_field_names() -> frozenset[str]:
    """Every field name of the wire models: a nested table may legitimately use any of them."""
    names: set[str] = set()
    for module in (_commerce, _common, _models):
        for value in vars(module).values():
            if isinstance(value, type) and attrs.has(value):
                names.update(field.name for field in attrs.fields(value))
    return frozenset(names)


def _source_from_document(value: Any, where: str) -> Source:
    if isinstance(value, str):
        return Column(value)
    if isinstance(value, list):
        return ListOf(
            [_source_from_document(item, f"{where}[{i}]") for i, item in enumerate(value)]
        )
    if isinstance(value, dict):
        if set(value) & _SOURCE_KEYS:
            if len(value) != 1:
                raise MappingError(
                    f"{where}: a source is either {{column = ...}} or {{const = ...}}, alone"
                )
            if "column" in value:
                if not isinstance(value["column"], str):
                    raise MappingError(f"{where}: column must be a column name (text)")
                return Column(value["column"])
            return Constant(value["const"])
        for key in value:
            close = difflib.get_close_matches(str(key), sorted(_SOURCE_KEYS), n=1, cutoff=0.75)
            if close and len(value) == 1 and key not in _wire_field_names():
                # A one-key table whose key is nearly "column"/"const" is a typo, not a struct.
                raise MappingError(
                    f"{where}: unknown key {key!r} in an inline table; did you mean {close[0]!r}?"
                )
        return Struct(
            {str(key): _source_from_document(item, f"{where}.{key}") for key, item in value.items()}
        )
    raise MappingError(
        f"{where}: {value!r} is not a source; write a column name, {{const = ...}} or a table"
    )


def _attributes_from_document(value: Any, where: str) -> Attributes:
    if not isinstance(value, dict):
        raise MappingError(
            f"{where} must be a table with columns, prefix, remaining or json_column"
        )
    unknown = set(value) - _ATTRIBUTE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    columns = value.get("columns", {})
    if not isinstance(columns, dict):
        raise MappingError(f"{where}.columns must be a table of attribute = source")
    kwargs: dict[str, Any] = {
        "columns": {
            str(key): _source_from_document(item, f"{where}.columns.{key}")
            for key, item in columns.items()
        }
    }
    for key, kind in (
        ("prefix", str),
        ("strip_prefix", bool),
        ("remaining", bool),
        ("json_column", str),
    ):
        if key in value:
            if not isinstance(value[key], kind):
                raise MappingError(f"{where}.{key} must be {kind.__name__}")
            kwargs[key] = value[key]
    return Attributes(**kwargs)


def _data_plan_from_document(value: Any, base_dir: Path | None) -> dict[str, Any]:
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        raise MappingError('data_plan must be a table: { path = "plan.json", version = 2 }')
    path = Path(value["path"])
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path  # relative to the mapping file, wherever the sync runs
    return {**value, "path": str(path)}


def mapping_from_dict(
    document: MappingABC[str, Any], *, base_dir: str | Path | None = None
) -> RowMapping:
    """Build a mapping from parsed TOML/JSON (the mapping-file schema; see docs/mapping.md).

    ``base_dir`` is where a relative ``data_plan.path`` is read from (default: the
    current directory; :func:`load_mapping` passes the mapping file's folder).
    """
    if not isinstance(document, MappingABC):
        raise MappingError("a mapping document must be a table/object")
    kind = document.get("kind")
    if kind not in _CLASSES:
        raise MappingError(f"kind {kind!r} is not one of {', '.join(repr(k) for k in _CLASSES)}")
    cls = _CLASSES[kind]
    known = {field.name for field in attrs.fields(cls) if field.init}
    unknown = set(document) - known - {"kind"}
    if unknown:
        raise MappingError(f"unknown key(s) for a {kind} mapping: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in document.items():
        if key == "kind":
            continue
        if key in _PLAIN_KEYS:
            if not isinstance(value, str):
                raise MappingError(f"{key} must be text")
            kwargs[key] = value
        elif key in _MAP_KEYS:
            if not isinstance(value, dict):
                raise MappingError(f"{key} must be a table of name = source")
            kwargs[key] = {
                name: _source_from_document(item, f"{key}.{name}") for name, item in value.items()
            }
        elif key in _FLAG_KEYS:
            if not isinstance(value, bool):
                raise MappingError(f"{key} must be true or false")
            kwargs[key] = value
        elif key in _ATTRIBUTE_FIELDS:
            kwargs[key] = _attributes_from_document(value, key)
        elif key == "data_plan":
            kwargs[key] = _data_plan_from_document(
                value, None if base_dir is None else Path(base_dir)
            )
        else:
            kwargs[key] = _source_from_document(value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise MappingError(f"{kind} mapping: {exc}") from None
    except DataPlanError as exc:
        text = str(exc)
        raise MappingError(text if text.startswith("data_plan") else f"data_plan: {text}") from None


def load_mapping(path: str | Path) -> RowMapping:
    """Load a mapping from a ``.toml`` or ``.json`` file (data only: no code is run)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
    try:
        if suffix == ".toml":
            document = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            document = orjson.loads(raw)
        else:
            raise MappingError(f"{path}: a mapping file ends in .toml or .json")
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from None
    try:
        return mapping_from_dict(document, base_dir=path.parent)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None
