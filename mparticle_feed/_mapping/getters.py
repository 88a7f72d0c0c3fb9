"""Mapping stage: getters, which read a mapped field's value from a row as its source says.

A :class:`~.sources.Column` reads the row, a :class:`~.sources.Constant` gives its value, a
:class:`~.sources.Computed` calls the user's function, and a :class:`~.sources.Struct` or
:class:`~.sources.ListOf` builds a dict or list of its parts. A missing column or a failing
function rejects the row, naming the field. A new kind of source is added here (and in
:mod:`.sources`, :mod:`.columns`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .rejects import _join, _Reject
from .sources import Column, Computed, Constant, Source, Struct

__all__ = ["Getter", "_getter"]

Getter = Callable[[Mapping[str, Any]], Any]


def _getter(source: Source, path: str) -> Getter:
    if isinstance(source, Column):
        name = source.name

        def column(row: Mapping[str, Any]) -> Any:
            try:
                return row[name]
            except KeyError:
                raise _Reject(path, f"column {name!r} is not in the row") from None

        return column
    if isinstance(source, Constant):
        value = source.value
        return lambda _row: value
    if isinstance(source, Computed):
        function, label = source.function, source.qualified_name

        def computed(row: Mapping[str, Any]) -> Any:
            try:
                return function(row)
            except Exception as exc:  # noqa: BLE001 - user code; its failure rejects only this row
                raise _Reject(path, f"{label} raised {type(exc).__name__}: {exc}") from None

        return computed
    if isinstance(source, Struct):
        parts = [(name, _getter(item, _join(path, name))) for name, item in source.fields]
        return lambda row: {name: get(row) for name, get in parts}
    items = [_getter(item, f"{path}[{index}]") for index, item in enumerate(source.items)]
    return lambda row: [get(row) for get in items]
