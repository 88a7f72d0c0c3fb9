"""Strategies for values (models stage): text, numbers, timestamps, money, attribute maps.

The building blocks the model strategies share; the limits that keep them exact on the
wire are described in :mod:`mparticle_feed.testing.strategies`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from ..._wire.values import Scalar, UserAttributeValue, timestamp_ms

T = TypeVar("T")

# 2015-01-01 and 2035-01-01 (UTC), in epoch milliseconds; public in the package.
DEFAULT_MIN_TIMESTAMP = 1_420_070_400_000
DEFAULT_MAX_TIMESTAMP = 2_051_222_400_000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1

# Small collections keep examples quick to build, dump and validate.
_MAX_ITEMS = 3

_text = st.text(st.characters(codec="utf-8"), max_size=16)
_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=16)
_int64 = st.integers(_INT64_MIN, _INT64_MAX)
_non_negative_int64 = st.integers(0, _INT64_MAX)
_int32 = st.integers(0, _INT32_MAX)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
_uuid_strings = st.uuids().map(str)
#: Device identities are trimmed and never blank (the models refuse a blank one).
_device_ids = _names.map(str.strip).filter(bool)
_json_payloads = st.dictionaries(_names, _text, max_size=_MAX_ITEMS).map(
    lambda payload: json.dumps(payload, ensure_ascii=False)
)


def _maybe(strategy: st.SearchStrategy[T]) -> st.SearchStrategy[T | None]:
    return st.none() | strategy


def _values(enum_members: Sequence[T]) -> st.SearchStrategy[T]:
    return st.sampled_from(list(enum_members))


def timestamps(
    *,
    min_value: int | datetime = DEFAULT_MIN_TIMESTAMP,
    max_value: int | datetime = DEFAULT_MAX_TIMESTAMP,
) -> st.SearchStrategy[int]:
    """Epoch milliseconds between ``min_value`` and ``max_value`` (inclusive).

    Bounds are epoch milliseconds or aware datetimes; the default range is 2015 to 2035.
    """
    low, high = timestamp_ms(min_value), timestamp_ms(max_value)
    if low > high:
        raise InvalidArgument(f"min_value ({low}) is after max_value ({high})")
    return st.integers(low, high)


def money(
    *,
    min_value: Decimal | int = -1_000_000_000,
    max_value: Decimal | int = 1_000_000_000,
    max_places: int = 4,
) -> st.SearchStrategy[Decimal]:
    """Decimal amounts that travel through JSON exactly.

    The codec writes integral amounts as JSON integers and the rest as doubles, which hold
    15 significant digits; the defaults stay at 13. Widen the bounds only as far as
    ``digits(max_value) + max_places <= 15`` holds.
    """
    if max_places < 0:
        raise InvalidArgument("max_places must be >= 0")
    return st.integers(0, max_places).flatmap(
        lambda places: st.decimals(
            min_value=Decimal(min_value),
            max_value=Decimal(max_value),
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )


def _scalars() -> st.SearchStrategy[Scalar]:
    # Decimals are left out: the wire turns them into ints and floats, which load back as such.
    return st.one_of(st.none(), _text, _int64, st.booleans(), _finite)


def custom_attribute_maps(*, max_size: int = _MAX_ITEMS) -> st.SearchStrategy[dict[str, Scalar]]:
    """Attribute maps as events carry them: names to strings, numbers, booleans or None."""
    return st.dictionaries(_names, _scalars(), max_size=max_size)


def _user_attribute_values() -> st.SearchStrategy[UserAttributeValue]:
    return _scalars() | st.lists(_scalars(), max_size=_MAX_ITEMS)


def _user_attribute_maps() -> st.SearchStrategy[dict[str, UserAttributeValue]]:
    return st.dictionaries(_names, _user_attribute_values(), max_size=_MAX_ITEMS)


def _string_maps() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(_names, _text, max_size=_MAX_ITEMS)


def _only(
    optional: dict[str, st.SearchStrategy[Any]], fields: Collection[str] | None, model: str
) -> dict[str, st.SearchStrategy[Any]]:
    """The optional fields' strategies, limited to ``fields`` (every one when None).

    Each optional field costs a draw (and, half the time, a value) per example; a test that
    only looks at a few fields runs faster when the others are never generated.
    """
    if fields is None:
        return optional
    if isinstance(fields, str):
        raise InvalidArgument("fields must be a collection of field names, not one string")
    unknown = set(fields) - set(optional)
    if unknown:
        raise InvalidArgument(
            f"{model} has no optional field(s) {sorted(unknown)}; choose from {sorted(optional)}"
        )
    return {name: strategy for name, strategy in optional.items() if name in fields}
