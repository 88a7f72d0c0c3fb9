"""Every value coercer behind one signature, for tests that hold them all to one rule."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timezone
from typing import Any

from mparticle_feed._source.coerce import (
    CoercionError,
    to_bool,
    to_decimal,
    to_float,
    to_int,
    to_key_str,
    to_scalar,
    to_str,
    to_timestamp_ms,
)

EVERY_COERCER: list[Callable[[Any], Any]] = [
    to_str,
    to_key_str,
    to_int,
    to_decimal,
    to_float,
    to_bool,
    lambda value: to_scalar(value, tz=timezone.utc),
    lambda value: to_timestamp_ms(value, tz=timezone.utc),
]


def outcome(coerce: Callable[[Any], Any], value: Any) -> tuple[str, Any]:
    """``("value", what coerce gives)``, or ``("refused", its message)``."""
    try:
        return "value", coerce(value)
    except CoercionError as exc:
        return "refused", str(exc)
