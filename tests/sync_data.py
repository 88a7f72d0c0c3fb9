"""Rows and mappings shared by the sync's tests (test_sync.py, test_planfile.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mparticle_feed._mapping.sources import Constant
from mparticle_feed._mapping.spec import CustomEventMapping, UserAttributeMapping

__all__ = ["EVENTS", "NOW", "PROFILES", "check_invariant", "event_rows", "ms", "profile_rows"]

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


EVENTS = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=Constant("Thing Happened"),
    timestamp_unixtime_ms="ts",
    custom_attributes={"value": "value", "row_id": "id"},
)

PROFILES = UserAttributeMapping(
    primary_key="user",
    user_identities={"customer_id": "user"},
    user_attributes={"plan": "plan", "city": "city", "score": "score"},
)


def event_rows(
    count: int, *, users: int | None = None, age: timedelta = timedelta(hours=1)
) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{n:04d}",
            "user": f"u{(n % users) if users else n:04d}",
            "ts": ms(NOW - age),
            "value": n,
        }
        for n in range(count)
    ]


def profile_rows() -> list[dict[str, Any]]:
    return [
        {"user": f"u{n}", "plan": "pro" if n % 2 else "free", "city": "Lyon", "score": n}
        for n in range(6)
    ]


def check_invariant(report: Any) -> None:
    """Every row ends somewhere, and every accepted row was sent or unchanged."""
    assert report.rows_in == report.accepted + report.rejected + report.failed + report.pending
    assert report.accepted == report.sent + report.unchanged
