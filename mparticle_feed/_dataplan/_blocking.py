"""Data-plan stage: what is left of a batch once mParticle's blocks are applied."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._errors import PayloadError
from .._wire.codec import from_dict, to_dict
from .._wire.models import Batch
from ._types import Violation, ViolationAction

__all__ = ["apply_blocks"]


def _parts(pointer: str) -> list[str]:
    if pointer in ("", "#"):
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[2:].split("/")]


def _remove(document: Any, parts: Sequence[str]) -> None:
    node = document
    for part in parts[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def apply_blocks(batch: Batch, violations: Sequence[Violation]) -> Batch | None:
    """The batch as mParticle keeps it: blocked events and attributes removed, or None.

    ``violations`` are those :meth:`LoadedDataPlan.validate` returned for ``batch``.
    Returns ``batch`` itself when nothing is blocked.
    """
    blocking = [v for v in violations if v.action is not ViolationAction.ALLOW]
    if not blocking:
        return batch
    if any(v.action is ViolationAction.BLOCK_BATCH for v in blocking):
        return None
    document = to_dict(batch)
    events: list[Any] = list(document.get("events") or ())
    dropped = {v.event_index for v in blocking if v.action is ViolationAction.BLOCK_EVENT}
    for violation in blocking:
        if violation.action is not ViolationAction.BLOCK_ATTRIBUTE:
            continue
        parts = _parts(violation.pointer)
        if not parts:
            continue
        if violation.event_index is None:
            _remove(document, parts)
        elif violation.event_index not in dropped:
            _remove(events[violation.event_index], parts)
    kept_events = [event for index, event in enumerate(events) if index not in dropped]
    if "events" in document:
        document["events"] = kept_events
    for key in ("user_attributes", "user_identities"):
        if key in document and not document[key]:
            del document[key]
    try:
        return from_dict(document)
    except PayloadError:
        # An attribute the model needs was unplanned: the event cannot stand without it.
        return _without_broken_events(document)


def _without_broken_events(document: dict[str, Any]) -> Batch:
    events = []
    for event in document.get("events") or ():
        try:
            from_dict({"events": [event]})
        except PayloadError:
            continue
        events.append(event)
    document["events"] = events
    return from_dict(document)
