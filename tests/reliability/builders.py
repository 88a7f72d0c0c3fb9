"""Small, deterministic input for the scenarios: sourced batches, one row per event."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from mparticle_feed import Batch, CustomEvent, CustomEventType, UserIdentities
from mparticle_feed._mapping.provenance import RowRef, SourcedBatch

__all__ = ["NOW", "batch_for", "batches", "multibyte_text"]

#: The fixed "now" every scenario routes by; events are an hour older, so they go live.
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
_EVENT_MS = int((NOW - timedelta(hours=1)).timestamp() * 1000)

_MULTIBYTE = "aé€😀ü中"  # 1, 2, 3, 4, 2 and 3 bytes in UTF-8


def multibyte_text(n_bytes: int, seed: int) -> str:
    """A string of mixed 1-4 byte characters whose UTF-8 form is about ``n_bytes`` long."""
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n_bytes:
        ch = rng.choice(_MULTIBYTE)
        out.append(ch)
        size += len(ch.encode())
    return "".join(out)


def batch_for(
    user: str,
    rows: Iterable[int],
    *,
    padding: str = "",
    name: str = "reliability",
) -> SourcedBatch:
    """One user's batch with one custom event per row (row numbers are 1-based)."""
    refs = tuple(RowRef(n, f"k{n}") for n in rows)
    events = tuple(
        CustomEvent(
            event_name=name,
            custom_event_type=CustomEventType.OTHER,
            timestamp_unixtime_ms=_EVENT_MS + ref.row_number,
            custom_attributes={"row": ref.row_number, **({"pad": padding} if padding else {})},
        )
        for ref in refs
    )
    batch = Batch(events=events, user_identities=UserIdentities(customer_id=user))
    return SourcedBatch(batch=batch, event_rows=refs, rows=refs)


def batches(n_batches: int, rows_per_batch: int = 1, *, prefix: str = "u") -> list[SourcedBatch]:
    """``n_batches`` users, each with ``rows_per_batch`` consecutive rows."""
    out = []
    for b in range(n_batches):
        first = b * rows_per_batch + 1
        out.append(batch_for(f"{prefix}{b}", range(first, first + rows_per_batch)))
    return out


def rows_of(items: Iterable[SourcedBatch]) -> set[RowRef]:
    """Every distinct input row behind ``items``."""
    return {row for item in items for row in item.rows}
