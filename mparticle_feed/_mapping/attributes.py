"""Mapping stage: attribute maps, which build an event's or a user's attributes from a row.

An :class:`~.sources.Attributes` map names attributes from columns, takes the columns with a
prefix, the remaining columns, or a JSON column's object. Names and values are checked
against mParticle's limits (:mod:`.limits`): a bad one rejects the row, naming the
attribute.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

import attrs

from .._source.coerce import CoercionError, to_scalar, to_user_attribute
from .coercers import _parsed
from .getters import Getter, _getter
from .limits import (
    _INT64,
    MAX_ATTRIBUTE_NAME,
    MAX_ATTRIBUTE_VALUE,
    MAX_EVENT_ATTRIBUTES,
    MAX_USER_ATTRIBUTE_LIST,
    MAX_USER_ATTRIBUTE_LIST_ENTRY,
    MAX_USER_ATTRIBUTES,
)
from .rejects import _join, _Reject
from .sources import RESERVED_USER_ATTRIBUTES, Column

if TYPE_CHECKING:
    from .spec import RowMapping

__all__ = ["_AttributeBuilder", "attribute_builders"]

_RESERVED_LOWER = frozenset(name.lower() for name in RESERVED_USER_ATTRIBUTES)


@attrs.frozen
class _AttributeMap:
    field: str
    explicit: tuple[tuple[str, Getter], ...]
    #: For each explicit pair, the column its value is read from (None: not a column).
    explicit_columns: tuple[str | None, ...]
    prefix: str | None
    strip_prefix: bool
    remaining: bool
    json_column: str | None
    user: bool  # user attributes (lists allowed, '$' reserved) or event attributes
    limit: int | None  # how many attributes one row may set


def _check_name(name: Any, field: str, *, user: bool) -> str:
    if not isinstance(name, str):
        raise _Reject(field, f"attribute name {name!r} is not text")
    if not name:
        raise _Reject(field, "an attribute name is empty")
    if len(name) > MAX_ATTRIBUTE_NAME:
        raise _Reject(
            _join(field, name[:40] + "..."),
            f"attribute name is {len(name)} characters; mParticle allows {MAX_ATTRIBUTE_NAME}",
        )
    if user and name.startswith("$") and name.lower() not in _RESERVED_LOWER:
        raise _Reject(_join(field, name), "names starting with '$' are reserved by mParticle")
    return name


def _is_plain(value: Any) -> bool:
    """A value every attribute accepts as it is: short text, an int, a bool, a finite float."""
    cls = value.__class__
    if cls is str:
        return len(value) <= MAX_ATTRIBUTE_VALUE
    return (
        (cls is int and -_INT64 <= value < _INT64)
        or cls is bool
        or (cls is float and math.isfinite(value))
    )


def _check_text(value: Any, path: str, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        raise _Reject(path, f"value is {len(value)} characters; mParticle allows {limit}")


class _AttributeBuilder:
    def __init__(
        self,
        spec: _AttributeMap,
        used: frozenset[str],
        prefixes: tuple[str, ...],
        tz: tzinfo | None,
    ) -> None:
        self.spec = spec
        self.used = used
        self.prefixes = prefixes
        self.tz = tz
        # Explicit names are fixed by the mapping: check them once here, not on every row.
        explicit = []
        for (name, get), column in zip(spec.explicit, spec.explicit_columns, strict=True):
            try:
                _check_name(name, spec.field, user=spec.user)
            except _Reject:
                checked = False  # checked (and rejected) per row, as any other name
            else:
                checked = True
            explicit.append((name, column, get, checked))
        self.explicit = tuple(explicit)
        self.has_rest = spec.prefix is not None or spec.remaining or spec.json_column is not None
        self.limit = spec.limit
        # The common case, every explicit source a column with a valid name: one itemgetter
        # fetches all their values at once.
        self.fetch_all: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        if explicit and all(column is not None and ok for _, column, _, ok in explicit):
            columns = [column for _, column, _, _ in explicit]
            getter = operator.itemgetter(*columns)
            self.fetch_all = getter if len(columns) > 1 else lambda row: (getter(row),)
            self.names = tuple(name for name, _, _, _ in explicit)

    def _value(self, value: Any, path: str) -> Any:
        try:
            if self.spec.user:
                result = to_user_attribute(value, tz=self.tz)
            else:
                result = to_scalar(value, tz=self.tz)
        except CoercionError as exc:
            raise _Reject(path, str(exc)) from None
        if isinstance(result, list):
            if len(result) > MAX_USER_ATTRIBUTE_LIST:
                raise _Reject(
                    path,
                    f"list has {len(result)} entries; mParticle allows {MAX_USER_ATTRIBUTE_LIST}",
                )
            for index, item in enumerate(result):
                _check_text(item, f"{path}[{index}]", MAX_USER_ATTRIBUTE_LIST_ENTRY)
        else:
            _check_text(result, path, MAX_ATTRIBUTE_VALUE)
        return result

    def _put(self, out: dict[str, Any], name: Any, value: Any) -> None:
        if value is None:
            return
        field = self.spec.field
        checked = _check_name(name, field, user=self.spec.user)
        if _is_plain(value):
            out[checked] = value
        else:
            out[checked] = self._value(value, _join(field, checked))

    def build(self, row: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        values: tuple[Any, ...] | None = None
        if self.fetch_all is not None:
            try:
                values = self.fetch_all(row)
            except KeyError:
                values = None  # the loop below rejects the row, naming the column
        if values is not None:
            for name, value in zip(self.names, values, strict=True):
                if value is None:
                    continue
                # _is_plain inlined: this runs for every attribute of every row.
                cls = value.__class__
                if (
                    (cls is str and len(value) <= MAX_ATTRIBUTE_VALUE)
                    or (cls is int and -_INT64 <= value < _INT64)
                    or cls is bool
                    or (cls is float and math.isfinite(value))
                ):
                    out[name] = value
                else:
                    self._put(out, name, value)
        else:
            self._explicit(row, out)
        if self.has_rest or (self.limit is not None and len(out) > self.limit):
            return self._rest(row, out)
        return out

    def _explicit(self, row: Mapping[str, Any], out: dict[str, Any]) -> None:
        for name, column, get, checked in self.explicit:
            if column is None:
                value = get(row)
            else:
                try:
                    value = row[column]
                except KeyError:
                    value = get(row)  # raises the missing column's rejection
            if value is None:
                continue
            if checked:
                # _is_plain inlined: this runs for every attribute of every row.
                cls = value.__class__
                if (
                    (cls is str and len(value) <= MAX_ATTRIBUTE_VALUE)
                    or (cls is int and -_INT64 <= value < _INT64)
                    or cls is bool
                    or (cls is float and math.isfinite(value))
                ):
                    out[name] = value
                    continue
            self._put(out, name, value)

    def _rest(self, row: Mapping[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        """The prefix, remaining and JSON parts of the map, and the count limit."""
        spec = self.spec
        if spec.prefix is not None:
            prefix, cut = spec.prefix, len(spec.prefix) if spec.strip_prefix else 0
            for column, value in row.items():
                if (
                    isinstance(column, str)
                    and column.startswith(prefix)
                    and column not in self.used
                ):
                    self._put(out, column[cut:], value)
        if spec.remaining:
            for column, value in row.items():
                if not isinstance(column, str):
                    raise _Reject(spec.field, f"column name {column!r} is not text")
                if column in self.used or column.startswith(self.prefixes):
                    continue
                self._put(out, column, value)
        if spec.json_column is not None:
            try:
                raw = row[spec.json_column]
            except KeyError:
                raise _Reject(
                    spec.field, f"column {spec.json_column!r} is not in the row"
                ) from None
            if raw is not None:
                document = _parsed(raw, spec.field)
                if not isinstance(document, Mapping):
                    raise _Reject(spec.field, f"column {spec.json_column!r} is not a JSON object")
                for name, value in document.items():
                    self._put(out, name, value)
        if spec.limit is not None and len(out) > spec.limit:
            raise _Reject(
                spec.field,
                f"{len(out)} attributes; mParticle allows {spec.limit} per {'batch' if spec.user else 'event'}",
            )
        return out


def attribute_builders(
    mapping: RowMapping, used: frozenset[str], tz: tzinfo | None
) -> dict[str, _AttributeBuilder]:
    """A builder for each attribute map of ``mapping``, by field name; ``used`` are the
    columns the mapping names, which a map of the remaining columns leaves out."""
    prefixes = tuple(maps.prefix for _, maps in mapping.attribute_maps() if maps.prefix)
    builders: dict[str, _AttributeBuilder] = {}
    for name, maps in mapping.attribute_maps():
        user = name == "user_attributes"
        limit = (
            MAX_USER_ATTRIBUTES
            if user
            else (MAX_EVENT_ATTRIBUTES if name == "custom_attributes" else None)
        )
        spec = _AttributeMap(
            field=name,
            explicit=tuple(
                (attr, _getter(source, _join(name, attr))) for attr, source in maps.columns
            ),
            explicit_columns=tuple(
                source.name if isinstance(source, Column) else None for _, source in maps.columns
            ),
            prefix=maps.prefix,
            strip_prefix=maps.strip_prefix,
            remaining=maps.remaining,
            json_column=maps.json_column,
            user=user,
            limit=limit,
        )
        builders[name] = _AttributeBuilder(spec, used, prefixes, tz)
    return builders
