"""Value coercion: what database drivers hand back, turned into what the wire accepts.

Every function takes one raw value and returns the wire-ready value, or raises
:class:`CoercionError` with a reason a person can act on. Nothing here guesses a timezone:
a naive ``datetime`` is accepted only when the mapping declares one.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid
from datetime import date, datetime, time, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any

import orjson
from dateutil.parser import isoparse

from .._errors import ModelError, type_name
from .._wire.values import exact_number

__all__ = [
    "ADDRESS_TYPES",
    "MAX_TIMESTAMP_MS",
    "CoercionError",
    "EpochUnit",
    "parse_json",
    "to_bool",
    "to_decimal",
    "to_float",
    "to_int",
    "to_key_str",
    "to_scalar",
    "to_str",
    "to_timestamp_ms",
    "to_user_attribute",
]


class CoercionError(ValueError):
    """A value cannot become the wire type it is mapped to; ``str(exc)`` says why."""


class EpochUnit(str, Enum):
    """The unit of numeric timestamps in a mapping's columns."""

    SECONDS = "s"
    MILLISECONDS = "ms"
    MICROSECONDS = "us"

    def __str__(self) -> str:
        return str(self.value)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Year 9999 is the last datetime can express; anything beyond is a unit mistake.
MAX_TIMESTAMP_MS = 253_402_300_799_999
_MAX_MS = MAX_TIMESTAMP_MS
_UNIT_TO_MS = {
    EpochUnit.SECONDS: Decimal(1000),
    EpochUnit.MILLISECONDS: Decimal(1),
    EpochUnit.MICROSECONDS: Decimal("0.001"),
}
_INT64 = 2**63
_DATE_ONLY = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")
_TRUE = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE = frozenset({"f", "false", "n", "no", "off", "0"})


def _aware_ms(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _checked_ms(ms: int) -> int:
    if not 0 <= ms <= _MAX_MS:
        raise CoercionError(f"timestamp {ms} ms is outside 1970..9999 (is the epoch unit right?)")
    return ms


def _datetime_ms(value: datetime, tz: tzinfo | None) -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        if tz is None:
            raise CoercionError(
                f"naive datetime {value.isoformat()} has no timezone; declare the mapping's "
                "timezone or return timezone-aware values"
            )
        value = value.replace(tzinfo=tz)
    return _checked_ms(_aware_ms(value))


def to_timestamp_ms(
    value: Any, *, unit: EpochUnit = EpochUnit.MILLISECONDS, tz: tzinfo | None = None
) -> int:
    """Epoch milliseconds from a datetime, a date, an ISO-8601 string or an epoch number.

    Numbers are read in ``unit``; a naive datetime (or a naive ISO string) is placed in
    ``tz`` and refused when ``tz`` is None. A ``date`` is midnight in ``tz`` (UTC if None).
    """
    if value.__class__ is int and unit is EpochUnit.MILLISECONDS:
        return _checked_ms(value)  # the common case, ahead of the type tests below
    if isinstance(value, datetime):
        return _datetime_ms(value, tz)
    if isinstance(value, date):
        midnight = datetime.combine(value, time(), tzinfo=tz or timezone.utc)
        return _checked_ms(_aware_ms(midnight))
    if isinstance(value, bool):
        raise CoercionError("a boolean is not a timestamp")
    if isinstance(value, int):
        if unit is EpochUnit.MILLISECONDS:
            return _checked_ms(value)
        return _checked_ms(
            int((Decimal(value) * _UNIT_TO_MS[unit]).to_integral_value("ROUND_FLOOR"))
        )
    if isinstance(value, (float, Decimal)):
        number = _finite_decimal(value)
        return _checked_ms(int((number * _UNIT_TO_MS[unit]).to_integral_value("ROUND_FLOOR")))
    if isinstance(value, (str, bytes)):
        text = _text(value).strip()
        try:
            parsed = isoparse(text)
        except (ValueError, OverflowError):
            raise CoercionError(f"{_preview(text)} is not an ISO-8601 date or datetime") from None
        if _DATE_ONLY.match(text):
            return to_timestamp_ms(parsed.date(), unit=unit, tz=tz)
        return _datetime_ms(parsed, tz)
    native = _native(value)
    if native is not value:
        return to_timestamp_ms(native, unit=unit, tz=tz)
    raise CoercionError(
        f"expected a datetime, date, ISO-8601 string or epoch number, got {type_name(value)}"
    )


def _finite_decimal(value: float | Decimal) -> Decimal:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CoercionError(f"{value!r} is not a finite number")
        # float's own repr: a subclass's (numpy.float64's) may not be a number's text.
        return Decimal(float.__repr__(value))
    if not value.is_finite():
        raise CoercionError(f"{value!r} is not a finite number")
    return value


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _text(value: str | bytes) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CoercionError("bytes are not valid UTF-8 text") from None


def to_str(value: Any) -> str:
    """Text fields: str, bytes (UTF-8), UUID, integers and Decimals; floats and booleans are refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise CoercionError("expected text, got bool")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return str(_finite_decimal(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return _text(value)
    native = _native(value)
    if native is not value:
        return to_str(native)
    raise CoercionError(f"expected text, got {type_name(value)}")


def to_key_str(value: Any) -> str:
    """A primary key rendered as text; integral floats lose their ``.0``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CoercionError(f"{value!r} is not a usable key")
        return str(int(value)) if value.is_integer() else float.__repr__(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if not isinstance(value, (str, int)):
        native = _native(value)
        if native is not value:
            return to_key_str(native)
    return to_str(value)


def to_int(value: Any) -> int:
    """Integers from int, integral float/Decimal, or integer text."""
    if isinstance(value, bool):
        raise CoercionError("expected an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, (str, bytes)):
        text = _text(value).strip()
        try:
            return int(text)
        except ValueError:
            value = _decimal_from_text(text)
    if isinstance(value, (float, Decimal)):
        number = _finite_decimal(value)
        if number != number.to_integral_value():
            raise CoercionError(f"{value!r} is not a whole number")
        return int(number)
    native = _native(value)
    if native is not value:
        return to_int(native)
    raise CoercionError(f"expected an integer, got {type_name(value)}")


def _decimal_from_text(text: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise CoercionError(f"{_preview(text)} is not a number") from None
    return _finite_decimal(number)


def to_decimal(value: Any) -> Decimal:
    """Money and quantities: int, float, Decimal or numeric text; NaN and infinities refused."""
    if isinstance(value, bool):
        raise CoercionError("expected a number, got bool")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, (float, Decimal)):
        return _finite_decimal(value)
    if isinstance(value, (str, bytes)):
        return _decimal_from_text(_text(value).strip())
    native = _native(value)
    if native is not value:
        return to_decimal(native)
    raise CoercionError(f"expected a number, got {type_name(value)}")


def to_float(value: Any) -> float:
    """Measurements (coordinates, levels): any finite number or numeric text."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CoercionError(f"{value!r} is not a finite number")
        return value if value.__class__ is float else float(value)  # numpy.float64: a float
    return float(_exact(to_decimal(value)))


def _exact(value: Decimal) -> int | float:
    """The number a Decimal is sent as, refused when a double would change it."""
    try:
        return exact_number(value)
    except ModelError as exc:
        raise CoercionError(str(exc)) from None


def to_bool(value: Any) -> bool:
    """Booleans in the forms drivers return: bool, 0/1, 't'/'f', 'true'/'false', 'yes'/'no', BIT(1) bytes."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)) and value in (0, 1):
        return bool(value)
    if isinstance(value, bytes) and value in (b"\x00", b"\x01"):
        return value == b"\x01"
    if isinstance(value, (str, bytes)):
        text = _text(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise CoercionError(f"{_preview(text)} is not a boolean")
    native = _native(value)
    if native is not value:
        return to_bool(native)
    raise CoercionError(f"expected a boolean, got {type_name(value)}")


def _aware_iso(value: datetime, tz: tzinfo | None) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        if tz is None:
            raise CoercionError(
                f"naive datetime {value.isoformat()} has no timezone; declare the mapping's timezone"
            )
        value = value.replace(tzinfo=tz)
    return value.isoformat()


def to_scalar(value: Any, *, tz: tzinfo | None = None) -> str | int | float | bool | Decimal:
    """An attribute value: str, number or bool kept; UUID, bytes, dates and times become text.

    Integers must fit in 64 bits (signed): a larger one cannot be sent as a JSON number.
    """
    if isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise CoercionError(f"{value} does not fit in a 64-bit integer")
        return value
    if isinstance(value, float):
        _finite_decimal(value)
        # A subclass (numpy.float64) as a float: JSON writers take only floats themselves.
        return value if value.__class__ is float else float(value)
    if isinstance(value, Decimal):
        _exact(_finite_decimal(value))
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, datetime):
        return _aware_iso(value, tz)
    if isinstance(value, (date, time)):
        return value.isoformat()  # a time of day (with its offset, if any) as text
    native = _native(value)
    if native is not value:
        return to_scalar(native, tz=tz)
    raise CoercionError(f"expected text, a number or a boolean, got {type_name(value)}")


def to_user_attribute(
    value: Any, *, tz: tzinfo | None = None
) -> str | int | float | bool | Decimal | list[str | int | float | bool | Decimal | None]:
    """A user attribute: a scalar, or a list of scalars (a driver's array or a JSON array)."""
    if isinstance(value, (list, tuple)):
        return [None if item is None else to_scalar(item, tz=tz) for item in value]
    return to_scalar(value, tz=tz)


#: The :mod:`ipaddress` types psycopg reads ``inet`` and ``cidr`` as: read (and digested)
#: as their text.
ADDRESS_TYPES = (
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)


def _native(value: Any) -> Any:
    """The Python value a driver's or numpy's value stands for; any other value itself (the
    same object).

    psycopg2 reads ``bytea`` as a ``memoryview``: it is read as the bytes it shows (so is a
    ``bytearray``). psycopg reads ``inet`` and ``cidr`` as :mod:`ipaddress` objects: they are
    read as their text, as psycopg2 hands it over. Rows built by hand from numpy or pandas
    (``row.to_dict()`` of ``df.iterrows()``) hold ``numpy.int64``, ``numpy.float32``,
    ``numpy.bool_`` or ``numpy.datetime64`` values, which are no Python numbers or datetimes:
    they are read as the value ``item()`` gives. A ``datetime64`` is read at microseconds
    (``item()`` gives an int below that) and is naive, as ``datetime64`` has no time zone.
    numpy is never imported here.
    """
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, ADDRESS_TYPES):
        return str(value)  # psycopg reads inet and cidr as ipaddress objects
    if type(value).__module__ != "numpy" or getattr(value, "ndim", None) != 0:
        return value
    if value.dtype.kind in "Mm":
        # At microseconds item() gives a datetime (a timedelta for timedelta64), else an int.
        native = value.astype(f"{value.dtype.name.split('[')[0]}[us]").item()
        if native is None:
            raise CoercionError(f"{value!r} is a null: rows hold None for a null")
        if isinstance(native, int):
            raise CoercionError(f"{value!r} is outside the years a datetime holds (1..9999)")
        return native
    native = value.item()
    if native is value or type(native).__module__ == "numpy":
        return value  # no Python value of its own (a numpy void or object scalar)
    return native


def parse_json(value: Any) -> Any:
    """A JSON column: text or bytes are parsed; an already decoded dict or list passes through."""
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise CoercionError(f"not valid JSON ({exc})") from None
    raise CoercionError(f"expected JSON text or an object, got {type_name(value)}")
