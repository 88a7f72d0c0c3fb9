"""Mapping stage: the rejection a compiled field raises for a bad value, and the field paths
it names.

A bad value raises :class:`_Reject` naming the field path (``product_action.products[0].price``);
:mod:`.run` records the row as rejected with that path and the reason, and the run goes on.
"""

from __future__ import annotations

__all__ = ["_Reject", "_join", "_under"]


class _Reject(Exception):  # noqa: N818 - control flow, never escapes the mapping stage
    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _under(path: str, field: str | None) -> str:
    """A field reported by a coercer called with a path relative to ``path``, made whole."""
    return _join(path, field) if field else path
