"""numpy scalars in rows built by hand (``df.iterrows()``) are read as the values they hold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from coercers import EVERY_COERCER, outcome
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed import pipeline
from mparticle_feed._source.coerce import CoercionError, to_scalar, to_timestamp_ms

np = pytest.importorskip("numpy")


def _same_as_native(scalar: Any, native: Any) -> None:
    for coerce in EVERY_COERCER:
        got, expected = outcome(coerce, scalar), outcome(coerce, native)
        if expected[0] == "value":
            assert got == expected
            assert type(got[1]) is type(expected[1])
        else:
            assert got[0] == "refused"  # the message may name the numpy type


INT_TYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]


@given(st.sampled_from(INT_TYPES), st.integers(-(2**63), 2**64 - 1))
def test_numpy_integers_are_read_as_the_int_they_hold(dtype: str, value: int) -> None:
    info = np.iinfo(dtype)
    value = min(max(value, int(info.min)), int(info.max))
    _same_as_native(np.dtype(dtype).type(value), value)


@given(st.sampled_from(["float16", "float32", "float64"]), st.floats(allow_nan=True))
def test_numpy_floats_are_read_as_the_float_they_hold(dtype: str, value: float) -> None:
    with np.errstate(over="ignore"):
        scalar = np.dtype(dtype).type(value)
    _same_as_native(scalar, scalar.item())


@given(st.booleans())
def test_numpy_booleans_are_read_as_booleans(value: bool) -> None:
    _same_as_native(np.bool_(value), value)


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.sampled_from(["s", "ms", "us", "ns"]),
)
def test_numpy_datetimes_are_read_at_their_unit_as_naive_datetimes(
    moment: datetime, unit: str
) -> None:
    scalar = np.datetime64(moment, unit)
    # The datetime the numpy value holds: ``moment`` cut to the unit (ns holds all of it).
    cut = {"s": timedelta(seconds=1), "ms": timedelta(milliseconds=1)}.get(unit)
    held = moment if cut is None else datetime.min + (moment - datetime.min) // cut * cut
    _same_as_native(scalar, held)
    assert to_timestamp_ms(scalar, tz=timezone.utc) == to_timestamp_ms(held, tz=timezone.utc)


def test_numpy_values_that_hold_no_value_are_refused_plainly() -> None:
    with pytest.raises(CoercionError, match="is a null: rows hold None"):
        to_timestamp_ms(np.datetime64("NaT"), tz=timezone.utc)
    with pytest.raises(CoercionError, match="outside the years"):
        to_timestamp_ms(np.datetime64("-20000-01-01"), tz=timezone.utc)
    # An array is not a scalar: refused as before, naming its type.
    with pytest.raises(CoercionError, match="got ndarray"):
        to_scalar(np.array([1, 2]))


NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
MAPPING = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name="name",
    timestamp_unixtime_ms="at",
    custom_attributes={"count": "count", "price": "price", "member": "member"},
    timezone="UTC",
)


def _bodies(rows: list[dict[str, Any]]) -> list[bytes]:
    run = mpf.map_rows(rows, MAPPING)
    out = list(pipeline.pack(pipeline.route(run, now=NOW)))
    assert run.rows_rejected == 0
    return [item.body for item in out if isinstance(item, pipeline.Request)]


@given(
    st.lists(
        st.tuples(
            st.integers(0, 2**40), st.integers(-(2**31), 2**31 - 1), st.booleans(), st.booleans()
        ),
        min_size=1,
        max_size=8,
    )
)
def test_rows_of_numpy_values_send_what_their_python_values_send(
    rows: list[tuple[int, int, bool, bool]],
) -> None:
    native, numpy_rows = [], []
    for number, (key, count, member, half) in enumerate(rows):
        stamp = datetime(2026, 2, 28, 12) + timedelta(seconds=number)
        price = 2.5 if half else 3.0
        native.append(
            {
                "id": key + number * 2**41,
                "user": f"u{number % 3}",
                "name": "Viewed",
                "at": stamp,
                "count": count,
                "price": price,
                "member": member,
            }
        )
        numpy_rows.append(
            {
                "id": np.int64(key + number * 2**41),
                "user": np.str_(f"u{number % 3}"),
                "name": "Viewed",
                "at": np.datetime64(stamp, "us"),
                "count": np.int32(count),
                # float64 is a float subclass (kept by the float paths), float32 is not.
                "price": np.float64(price) if number % 2 else np.float32(price),
                "member": np.bool_(member),
            }
        )
    assert _bodies(numpy_rows) == _bodies(native)


def test_models_built_by_hand_keep_a_numpy_float_as_the_float_it_is() -> None:
    event = mpf.CustomEvent(
        event_name="x", custom_event_type="other", custom_attributes={"a": np.float64(1.5)}
    )
    assert type(event.custom_attributes["a"]) is float  # type: ignore[index]
    batch = mpf.Batch(events=[event], user_attributes={"b": [np.float64(2.5)]})
    assert b'"a":1.5' in mpf.dumps(batch)
    assert b'"b":[2.5]' in mpf.dumps(batch)
