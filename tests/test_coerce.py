"""Value coercion: timestamps, numbers, booleans, text and JSON the way drivers return them."""

from __future__ import annotations

import ipaddress
import math
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from coercers import EVERY_COERCER, outcome
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed._source.coerce import (
    CoercionError,
    EpochUnit,
    parse_json,
    to_bool,
    to_decimal,
    to_float,
    to_int,
    to_key_str,
    to_scalar,
    to_str,
    to_timestamp_ms,
    to_user_attribute,
)

aware_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [timezone.utc, timezone(timedelta(hours=5, minutes=30)), ZoneInfo("America/New_York")]
    ),
)


@given(aware_datetimes)
def test_aware_datetimes_and_their_iso_text_agree(value: datetime) -> None:
    expected = math.floor(value.timestamp() * 1000)
    ms = to_timestamp_ms(value)
    assert abs(ms - expected) <= 1
    assert to_timestamp_ms(value.isoformat()) == ms


@given(st.integers(0, 253_402_300_799))
def test_epoch_units_scale_to_milliseconds(seconds: int) -> None:
    assert to_timestamp_ms(seconds, unit=EpochUnit.SECONDS) == seconds * 1000
    assert to_timestamp_ms(seconds * 1000) == seconds * 1000
    assert to_timestamp_ms(seconds * 1_000_000 + 999, unit=EpochUnit.MICROSECONDS) == seconds * 1000
    assert to_timestamp_ms(Decimal(seconds), unit="s") == seconds * 1000  # type: ignore[arg-type]


def test_naive_datetimes_need_a_declared_timezone() -> None:
    naive = datetime(2024, 6, 1, 12, 0)
    with pytest.raises(CoercionError, match="naive datetime 2024-06-01T12:00:00 has no timezone"):
        to_timestamp_ms(naive)
    with pytest.raises(CoercionError, match="no timezone"):
        to_timestamp_ms("2024-06-01 12:00:00")
    paris = ZoneInfo("Europe/Paris")
    assert to_timestamp_ms(naive, tz=paris) == 1717236000000
    assert to_timestamp_ms("2024-06-01 12:00:00", tz=paris) == 1717236000000
    assert to_timestamp_ms(naive, tz=timezone.utc) == 1717243200000


def test_dates_are_midnight_in_the_declared_timezone_or_utc() -> None:
    assert to_timestamp_ms(date(2024, 1, 1)) == 1704067200000
    assert to_timestamp_ms("2024-01-01") == 1704067200000
    assert to_timestamp_ms(date(2024, 1, 1), tz=ZoneInfo("Asia/Tokyo")) == 1704034800000


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (Decimal("-Infinity"), "finite"),
        (True, "boolean"),
        ("yesterday", "ISO-8601"),
        (b"\xff", "UTF-8"),
        (-1, "outside"),
        (10**20, "outside"),
        ([1], "got list"),
        (None, "got null"),
    ],
)
def test_bad_timestamps_are_refused(value: Any, message: str) -> None:
    with pytest.raises(CoercionError, match=message):
        to_timestamp_ms(value)


@pytest.mark.parametrize(
    "value", [True, 1, 1.0, Decimal(1), "t", "TRUE", " yes ", "y", "on", "1", b"\x01", b"true"]
)
def test_true_forms(value: Any) -> None:
    assert to_bool(value) is True


@pytest.mark.parametrize(
    "value", [False, 0, 0.0, Decimal(0), "f", "False", "no", "n", "off", "0", b"\x00"]
)
def test_false_forms(value: Any) -> None:
    assert to_bool(value) is False


@pytest.mark.parametrize("value", [2, "maybe", None, [], 0.5])
def test_not_booleans(value: Any) -> None:
    with pytest.raises(CoercionError):
        to_bool(value)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_finite_decimals_survive(value: Decimal) -> None:
    assert to_decimal(value) == value
    assert to_decimal(str(value)) == value


@pytest.mark.parametrize(
    "value", [float("nan"), float("-inf"), Decimal("NaN"), "nan", "Infinity", True, "abc", None]
)
def test_non_finite_or_non_numbers_are_refused(value: Any) -> None:
    with pytest.raises(CoercionError):
        to_decimal(value)
    with pytest.raises(CoercionError):
        to_float(value)


def test_integers() -> None:
    assert to_int(3) == 3
    assert to_int("  42 ") == 42
    assert to_int(Decimal("7.0")) == 7
    assert to_int(2.0) == 2
    assert to_int("1e3") == 1000
    for bad in (2.5, "2.5", True, "x", None):
        with pytest.raises(CoercionError):
            to_int(bad)


def test_text() -> None:
    ident = uuid.uuid4()
    assert to_str("a") == "a"
    assert to_str(12) == "12"
    assert to_str(Decimal("12.50")) == "12.50"
    assert to_str(ident) == str(ident)
    assert to_str("é".encode()) == "é"
    for bad in (1.5, True, None, b"\xff", {"a": 1}):
        with pytest.raises(CoercionError):
            to_str(bad)


def test_primary_keys_render_as_text() -> None:
    assert to_key_str(7) == "7"
    assert to_key_str(7.0) == "7"
    assert to_key_str(7.5) == "7.5"
    assert to_key_str(date(2024, 1, 2)) == "2024-01-02"
    with pytest.raises(CoercionError):
        to_key_str(float("nan"))


def test_scalars_for_attributes() -> None:
    ident = uuid.uuid4()
    assert to_scalar(Decimal("1.5")) == Decimal("1.5")
    assert to_scalar(ident) == str(ident)
    assert to_scalar(date(2024, 1, 2)) == "2024-01-02"
    aware = datetime(2024, 1, 2, 3, 4, tzinfo=timezone.utc)
    assert to_scalar(aware) == "2024-01-02T03:04:00+00:00"
    with pytest.raises(CoercionError, match="naive"):
        to_scalar(datetime(2024, 1, 2))
    for bad in (float("nan"), {"a": 1}, [1], None):
        with pytest.raises(CoercionError):
            to_scalar(bad)
    assert to_user_attribute(("a", 1, None)) == ["a", 1, None]
    with pytest.raises(CoercionError):
        to_user_attribute([float("inf")])


@pytest.mark.parametrize(
    "value", ['{"a": [1, 2]}', b'{"a": [1, 2]}', bytearray(b'{"a": [1, 2]}'), {"a": [1, 2]}]
)
def test_json_columns(value: Any) -> None:
    assert parse_json(value) == {"a": [1, 2]}


@pytest.mark.parametrize("value", ["{nope", b"\xff", 3, None, '{"x": NaN}'])
def test_bad_json_is_refused(value: Any) -> None:
    with pytest.raises(CoercionError):
        parse_json(value)


@given(st.binary(max_size=12) | st.text(max_size=8).map(str.encode))
def test_memoryviews_and_bytearrays_are_read_as_the_bytes_they_hold(data: bytes) -> None:
    """psycopg2 reads bytea as a memoryview: every coercer treats it (and a bytearray) as bytes."""
    for coerce in EVERY_COERCER:
        expected = outcome(coerce, data)
        assert outcome(coerce, memoryview(data)) == expected
        assert outcome(coerce, bytearray(data)) == expected


def test_times_of_day_and_addresses_are_read_as_text() -> None:
    """psycopg reads time, timetz, inet and cidr as these objects; psycopg2 hands inet over
    as text."""
    from datetime import time

    assert to_scalar(time(9, 30)) == "09:30:00"
    assert to_scalar(time(9, 30, tzinfo=timezone(timedelta(hours=2)))) == "09:30:00+02:00"
    address, network = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_network("10.0.0.0/8")
    for coerce in (to_str, to_key_str, to_scalar):
        assert coerce(address) == "2001:db8::1"
        assert coerce(network) == "10.0.0.0/8"
    with pytest.raises(CoercionError, match="'2001:db8::1' is not a number"):
        to_int(address)  # its text, read as a number
