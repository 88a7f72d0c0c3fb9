"""map_rows reuses the previous row's user part when the user columns repeat: never visibly.

``CompiledMapping.map_row`` takes a shortcut (the previous row's identities and user
attributes) when a row's identity and user-attribute columns equal the previous row's. With
the shortcut off (``map_row`` replaced by the full ``_map_row``) every run must give the same
batches, row references, rejections and counters, down to the type and sign of each value.
The rows below put values that compare equal across types, or not at all, next to each other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed import (
    CommerceEventMapping,
    CustomEventMapping,
    RowMapping,
    UserAttributeMapping,
)
from mparticle_feed._mapping.compile import CompiledMapping, compile_mapping
from mparticle_feed._mapping.run import map_rows

IDENTITY_COLUMNS = ("cid", "em")
USER_ATTRIBUTE_COLUMNS = ("ua", "ub")
USER_COLUMNS = IDENTITY_COLUMNS + USER_ATTRIBUTE_COLUMNS
EVENT_COLUMNS = ("name", "ts", "ea", "eb")

_USER_ATTRIBUTES = {"ua": "ua", "ub": "ub", "$FirstName": "cid"}
# Event attributes read user columns too: the event part is rebuilt even when the user part is not.
_EVENT_ATTRIBUTES = {"ea": "ea", "eb": "eb", "ua_copy": "ua", "cid_copy": "cid"}

MAPPINGS: dict[str, RowMapping] = {
    "custom": CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "em"},
        user_attributes=_USER_ATTRIBUTES,
        event_name="name",
        timestamp_unixtime_ms="ts",
        custom_attributes=_EVENT_ATTRIBUTES,
        custom_flags={"flag": "eb"},
    ),
    "custom_oslo": CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "em"},
        user_attributes=_USER_ATTRIBUTES,
        event_name="name",
        timezone="Europe/Oslo",  # naive datetimes are accepted, as Oslo time
        custom_attributes=_EVENT_ATTRIBUTES,
    ),
    "commerce": CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "em"},
        user_attributes=_USER_ATTRIBUTES,
        product_action="pa",
        event_name="name",
        timestamp_unixtime_ms="ts",
        custom_attributes=_EVENT_ATTRIBUTES,
    ),
    "user_attributes": UserAttributeMapping(
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "em"},
        user_attributes=_USER_ATTRIBUTES,
    ),
}

UTC_NOON = datetime(2024, 3, 1, 12, tzinfo=timezone.utc)
NAIVE_NOON = UTC_NOON.replace(tzinfo=None)
PLUS_TWO = UTC_NOON.astimezone(timezone(timedelta(hours=2)))
MINUS_FIVE_THIRTY = UTC_NOON.astimezone(timezone(timedelta(hours=-5, minutes=-30)))
LONG = "x" * 5000
NAN = math.nan  # one object: (NAN,) == (NAN,) although NAN != NAN

#: Values that compare equal (or fail to: NaN) while mapping differently, two by two. A run
#: gives a column one pair and each row one of the two: consecutive rows hold look-alikes.
LOOKALIKES: tuple[tuple[Any, Any], ...] = (
    (0, False),
    (0, 0.0),
    (0.0, -0.0),
    (0, -0.0),
    (False, -0.0),
    (Decimal("0"), Decimal("-0")),
    (Decimal("0.0"), 0),
    (1, True),
    (1, 1.0),
    (True, 1.0),
    (Decimal("1.0"), Decimal("1.00")),
    (Decimal("1"), 1),
    (2**63 - 1, 2**63),
    (2**63, 9.223372036854776e18),
    (-(2**63), -(2**63) - 1),
    (2.5, Decimal("2.50")),
    (1e300, 1e300 * 10),
    (NAN, NAN),
    (NAN, float("nan")),
    (math.inf, Decimal("NaN")),
    (UTC_NOON, PLUS_TWO),
    (PLUS_TWO, MINUS_FIVE_THIRTY),
    (UTC_NOON, NAIVE_NOON),
    (LONG, LONG.encode()),
    (LONG, LONG[:4096]),
    ("a", b"a"),
    ("a", " a"),
    ("a", "A"),
    (None, ""),
    ("", b""),
    (" ", ""),
    ("1", 1),
    ("1.0", 1.0),
    ("c1", b"c1"),
    ("view", b"view"),
    (1700000000000, 1700000000000.0),
    (1700000000000, Decimal("1700000000000")),
)
#: Plain values each column accepts, for the columns that do not vary in a run.
STEADY: dict[str, tuple[Any, ...]] = {
    "cid": ("c1", "c2", 7),
    "em": ("ann@example.com", None),
    "ua": ("gold", 3, 2.5, True, None),
    "ub": ("x", 1, None),
    "ea": ("p", 1, 0.5, False),
    "eb": ("q", None),
    "name": ("view",),
    "ts": (1700000000000,),
}
PURCHASE = '{"action": "purchase", "products": [{"id": "A", "price": 1}]}'


def _fresh(value: Any) -> Any:
    """An equal value that is a different object, where the type allows it: equality, not
    identity, is what the reuse check may rely on (``(nan,) == (nan,)`` when it is one object)."""
    if isinstance(value, float):
        return float(repr(value))
    if isinstance(value, str):
        return "".join(list(value))
    if isinstance(value, bytes):
        return bytes(bytearray(value))
    return value


def _member(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values) | st.sampled_from(values).map(_fresh)


COLUMNS = USER_COLUMNS + EVENT_COLUMNS


@st.composite
def row_sequences(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows where one to three columns each take values from one pair of look-alikes, and the
    others hold plain accepted values, now and then changed (a new user)."""
    # User columns twice: the shortcut is about them.
    chosen = st.lists(st.sampled_from(USER_COLUMNS * 2 + EVENT_COLUMNS), min_size=1, max_size=3)
    pairs = {column: draw(st.sampled_from(LOOKALIKES)) for column in draw(chosen)}
    steady = {column: draw(st.sampled_from(STEADY[column])) for column in COLUMNS}
    rows: list[dict[str, Any]] = []
    for number in range(draw(st.integers(1, 10))):
        if draw(st.integers(0, 5)) == 3:  # not 0: hypothesis favours it
            column = draw(st.sampled_from(COLUMNS))
            steady[column] = draw(st.sampled_from(STEADY[column]))
        row = {"id": number, **steady, "pa": PURCHASE}
        for column, pair in pairs.items():
            row[column] = draw(_member(pair))
        if draw(st.integers(0, 15)) == 7:
            row["pa" if draw(st.booleans()) else "ua"] = "[not json" if draw(st.booleans()) else b""
        if draw(st.integers(0, 15)) == 7:
            del row[draw(st.sampled_from(COLUMNS))]
        rows.append(row)
    return rows


@contextmanager
def reuse_off() -> Iterator[None]:
    """Every row through the full mapping: map_row without its shortcut."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CompiledMapping, "map_row", CompiledMapping._map_row)
        yield


def _dumped(batch: mpf.Batch) -> str:
    try:
        return mpf.dumps(batch).decode()
    except mpf.ModelError as exc:
        return f"ModelError: {exc}"


def outcome(rows: list[dict[str, Any]], mapping: RowMapping, per_batch: int) -> Any:
    """Everything a run produces; reprs keep the types and signs that == would blur."""
    run = map_rows(rows, mapping, max_events_per_batch=per_batch)
    batches = [(repr(sourced), _dumped(sourced.batch)) for sourced in run]
    counts = (run.rows_in, run.rows_mapped, run.rows_rejected, run.batches_out)
    return batches, [repr(problem) for problem in run.rejected], counts, run.values_truncated


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_the_mappings_take_the_shortcut(name: str) -> None:
    """Without it the test below would compare the full path with itself."""
    assert compile_mapping(MAPPINGS[name]).user_fetch is not None
    row = {"id": 1, "cid": "c1", "em": None, "ua": "gold", "ub": 1, "name": "view", "ts": 1}
    row |= {"ea": "p", "eb": "q", "pa": PURCHASE}
    full_calls = 0
    full = CompiledMapping._map_row

    def counted(self: CompiledMapping, row: Any) -> Any:
        nonlocal full_calls
        full_calls += 1
        return full(self, row)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CompiledMapping, "_map_row", counted)
        run = map_rows([row, dict(row), dict(row)], MAPPINGS[name])
        list(run)
    assert run.rows_rejected == 0, run.rejected
    assert full_calls == 1


def test_every_pair_of_lookalikes_in_every_column() -> None:
    """Each pair, each column, each mapping, in a fixed pattern: a, b, a, a again (another
    object where the type allows), b, with the other columns steady."""
    steady = {column: values[0] for column, values in STEADY.items()}
    for (name, mapping), column, (a, b) in itertools.product(
        sorted(MAPPINGS.items()), COLUMNS, LOOKALIKES
    ):
        rows = [
            {"id": number, **steady, "pa": PURCHASE, column: value}
            for number, value in enumerate([a, b, a, _fresh(a), b])
        ]
        for per_batch in (1, 100):
            with_reuse = outcome(rows, mapping, per_batch)
            with reuse_off():
                without = outcome(rows, mapping, per_batch)
            assert with_reuse == without, (name, column, a, b, per_batch)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(MAPPINGS)),
    rows=row_sequences(),
    per_batch=st.integers(1, 3),
)
def test_reusing_the_user_part_changes_nothing(
    name: str, rows: list[dict[str, Any]], per_batch: int
) -> None:
    mapping = MAPPINGS[name]
    with_reuse = outcome(rows, mapping, per_batch)
    with reuse_off():
        without = outcome(rows, mapping, per_batch)
    assert with_reuse == without
