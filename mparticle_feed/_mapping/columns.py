"""Mapping stage: the columns a mapping reads, checked against a source before its first row."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from enum import Enum
from typing import TYPE_CHECKING

import attrs

from .._errors import MappingError
from .._wire.enums import CustomEventType, ProductActionType, PromotionActionType
from .sources import Attributes, Column, ListOf, Source, Struct

if TYPE_CHECKING:  # the compiled mapping imports this module to list its columns
    from .compile import CompiledMapping
    from .spec import RowMapping

__all__ = ["check_columns", "source_columns", "used_columns"]


def source_columns(source: Source | None) -> Iterator[str]:
    """The columns ``source`` reads, nested sources included."""
    if isinstance(source, Column):
        yield source.name
    elif isinstance(source, Struct):
        for _, item in source.fields:
            yield from source_columns(item)
    elif isinstance(source, ListOf):
        for item in source.items:
            yield from source_columns(item)


def used_columns(mapping: RowMapping) -> frozenset[str]:
    """Every column the mapping names: what the remaining attributes leave out, and what a
    source must have."""
    used: set[str] = set()
    if mapping.key_column:
        used.add(mapping.key_column)
    for field in attrs.fields(type(mapping)):
        if not field.init:
            continue
        value = getattr(mapping, field.name)
        if isinstance(value, tuple):
            for item in value:
                if isinstance(item, tuple) and len(item) == 2:
                    used.update(source_columns(item[1]))
        elif isinstance(value, Attributes):
            for _, source in value.columns:
                used.update(source_columns(source))
            if value.json_column:
                used.add(value.json_column)
        elif isinstance(value, (Column, Struct, ListOf)):
            used.update(source_columns(value))
    return frozenset(used)


#: Enums whose values are easily written where a column name is expected.
_VALUE_ENUMS: tuple[type[Enum], ...] = (CustomEventType, ProductActionType, PromotionActionType)


def check_columns(compiled: CompiledMapping, columns: Sequence[str]) -> None:
    """Raise one :class:`MappingError` when the mapping reads a column the source lacks.

    Called with the source's column names before its first row, so a misspelt column is one
    error, not one rejected row per row. The message lists the columns that exist, the
    closest match, and suggests ``{ const = ... }`` for a name that is an enum value.
    """
    present = set(columns)
    missing = sorted(compiled.used_columns - present)
    if not missing:
        return
    problems = []
    for name in missing:
        hint = ""
        close = difflib.get_close_matches(name, columns, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        for enum in _VALUE_ENUMS:
            if name in {member.value for member in enum}:
                hint = (
                    f": {name!r} is a {enum.__name__} value, not a column; to send it on every "
                    f'row write {{ const = "{name}" }} (Constant("{name}") in code)'
                )
                break
        problems.append(f"column {name!r} is not in the source{hint}")
    shown = ", ".join(map(repr, columns)) if columns else "none"
    raise MappingError(f"{'; '.join(problems)}. The source's columns: {shown}")
