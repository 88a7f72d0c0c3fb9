"""Converters the wire models run at construction: the values users have, made wire-ready."""

from __future__ import annotations

import ipaddress
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeVar

from .._errors import ModelError, type_name
from .sparse import passes_through, same_for_values

#: A value allowed in event attribute maps and user attributes (the schema's "String" type).
Scalar = str | int | float | bool | Decimal | None
#: A user attribute value: a scalar, or a list of scalars.
UserAttributeValue = Scalar | list[Scalar]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MAX = 2**63 - 1
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)

E = TypeVar("E", bound=Enum)


def json_number(value: Decimal) -> int | float:
    """A finite Decimal as the JSON number it is sent as: an exact int when integral, else a float.

    A float is what mParticle stores for a non-integral number, so nothing is lost that the
    far side would keep.
    """
    if value == value.to_integral_value() and abs(value) < 2**63:
        return int(value)
    return float(value)


def utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: no lone surrogate, as undecodable bytes
    read leniently (``surrogateescape``) give. JSON, hashes and the state need that."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def timestamp_ms(value: int | datetime) -> int:
    """Epoch milliseconds from an aware datetime or an int; a naive datetime is refused."""
    if type(value) is int and -_INT64_MAX <= value <= _INT64_MAX:
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ModelError(
                f"naive datetime {value.isoformat()} has no timezone; "
                "pass an aware datetime (e.g. tzinfo=timezone.utc) or epoch milliseconds"
            )
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(
            f"timestamp must be epoch milliseconds (int) or an aware datetime, "
            f"not {type(value).__name__}"
        )
    if not -_INT64_MAX <= value <= _INT64_MAX:
        raise ModelError(f"{value} does not fit in a signed 64-bit integer")
    return int(value)


def optional_timestamp_ms(value: int | datetime | None) -> int | None:
    if value is None:
        return value
    return timestamp_ms(value)


same_for_values(optional_timestamp_ms, timestamp_ms)


def decimal_number(value: Decimal | int | float) -> Decimal:
    """Money and quantities: kept as Decimal, sent as a JSON number."""
    # Exact-type fast paths first: this runs for every price of every row.
    if type(value) is float:
        cached = _FLOAT_DECIMALS.get(value)
        if cached is not None:
            return cached
        if value - value == 0.0:  # finite: inf - inf and nan - nan are nan
            # repr() gives the shortest string that round-trips, so 0.1 stays 0.1.
            result = Decimal(repr(value))
            if value:  # 0.0 == -0.0 as keys, but their Decimals differ
                if len(_FLOAT_DECIMALS) >= _DECIMALS_MAX:
                    _FLOAT_DECIMALS.clear()
                _FLOAT_DECIMALS[value] = result
            return result
    elif type(value) is int:
        if 0 <= value < _SMALL_INTS:
            return _SMALL_DECIMALS[value]
        if -_INT64_MAX <= value <= _INT64_MAX:
            return Decimal(value)
    elif type(value) is Decimal:
        if value in _EXACT_DECIMALS:
            return value
        if value.is_finite():
            exact_number(value)
            if len(_EXACT_DECIMALS) >= _DECIMALS_MAX:
                _EXACT_DECIMALS.clear()
            _EXACT_DECIMALS.add(value)
            return value
    return _decimal_number_slow(value)


#: Prices repeat (a catalogue has few distinct ones), and ``Decimal(repr(price))`` costs about
#: 240 ns against 35 ns for a lookup. Decimals are immutable, so instances can be shared.
_FLOAT_DECIMALS: dict[float, Decimal] = {}
#: Decimals already proven exact as doubles (the check costs about 1 µs, a lookup 60 ns).
_EXACT_DECIMALS: set[Decimal] = set()
_DECIMALS_MAX = 4096
#: Quantities are mostly small counts.
_SMALL_INTS = 1024
_SMALL_DECIMALS = tuple(Decimal(number) for number in range(_SMALL_INTS))


def _decimal_number_slow(value: object) -> Decimal:
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, bool):
        raise ModelError("expected a number (Decimal, int or float), not bool")
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        try:
            # float's own repr: a subclass's (numpy.float64's) may not be a number's text.
            result = Decimal(float.__repr__(value))
        except InvalidOperation:
            result = Decimal("NaN")
    else:
        raise ModelError(f"expected a number (Decimal, int or float), not {type(value).__name__}")
    if not result.is_finite():
        raise ModelError(f"{value!r} is not a finite number")
    exact_number(result)
    return result


def exact_number(value: Decimal) -> int | float:
    """The JSON number a finite Decimal is sent as, if it is exactly that number.

    mParticle stores numbers as doubles (64-bit integers excepted), so a value that a double
    cannot hold would arrive changed: ``1E+400`` as infinity (which JSON cannot write, so
    ``null``), ``12345678901234567.89`` as ``12345678901234568``. Such values are refused
    rather than changed; send them as text, or round them.
    """
    if value == value.to_integral_value() and -_INT64_MAX <= value <= _INT64_MAX:
        return int(value)
    number = float(value)
    if not math.isfinite(number) or Decimal(repr(number)) != value:
        nearest = "out of range" if not math.isfinite(number) else f"the nearest is {number!r}"
        raise ModelError(
            f"{value} cannot be sent exactly: mParticle reads numbers as doubles "
            f"({nearest}); send it as text, or round it"
        )
    return number


def optional_decimal(value: Decimal | int | float | None) -> Decimal | None:
    return None if value is None else decimal_number(value)


same_for_values(optional_decimal, decimal_number)


def optional_float(value: float | int | Decimal | None) -> float | None:
    """Measurements (coordinates, bytes, levels): plain JSON numbers."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ModelError(f"expected a number, not {type(value).__name__}")
    if value.__class__ is float:
        if value - value == 0.0:  # finite: inf - inf and nan - nan are nan
            return value
        raise ModelError(f"{value!r} is not a finite number")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ModelError(f"{value!r} is not a finite number")
        return float(exact_number(value))
    if isinstance(value, int) and not -_INT64_MAX <= value <= _INT64_MAX:
        return float(exact_number(Decimal(value)))
    result = float(value)
    if not math.isfinite(result):
        raise ModelError(f"{value!r} is not a finite number")
    return result


def required_float(value: float | int | Decimal) -> float:
    result = optional_float(value)
    if result is None:
        raise ModelError("a number is required")
    return result


def optional_uuid(value: str | uuid.UUID | None) -> str | None:
    """UUID-typed wire fields take a uuid.UUID or its canonical string form."""
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise ModelError(f"{value!r} is not a UUID (8-4-4-4-12 hex digits)")
    return value


def _device_text(value: object) -> str:
    if not isinstance(value, str):
        raise ModelError(f"expected a string, got {type_name(value)}")
    text = value.strip()
    if not text:
        # As for user identities: a blank id is no id, and would count as one.
        raise ModelError("a device identity is blank; leave it out (None)")
    return text


def optional_device_id(value: str | None) -> str | None:
    """A free-form device identity (``push_token``, ``amp_id``, ...): trimmed, never blank."""
    if value is None:
        return None
    return _device_text(value)


def optional_device_uuid(value: str | uuid.UUID | None) -> str | None:
    """A UUID device identity (advertising ids, ``mp_deviceid``): trimmed, then checked."""
    if value is None or isinstance(value, uuid.UUID):
        return optional_uuid(value)
    return optional_uuid(_device_text(value))


def optional_id_string(value: str | uuid.UUID | None) -> str | None:
    """Free-form ids (source_message_id): a uuid.UUID is accepted for convenience."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise ModelError(f"expected a string or UUID, not {type(value).__name__}")


passes_through(str, optional_id_string)


def optional_ip(value: str | None) -> str | None:
    """An IPv4 or IPv6 address as text; a scoped IPv6 (``fe80::1%eth0``) is refused, as both
    of mParticle's schemas refuse it."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ModelError(f"expected a string, got {type(value).__name__}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ModelError(f"{value!r} is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ModelError(f"{value!r} is a scoped IPv6 address; mParticle accepts none")
    return value


def enum_value(enum_cls: type[E], value: E | str) -> E:
    if value.__class__ is enum_cls or isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum_cls)
        raise ModelError(
            f"{value!r} is not a valid {enum_cls.__name__}; expected one of {allowed}"
        ) from None


def _check_scalar(value: object, where: str) -> Scalar:
    """The attribute value as stored: a Decimal becomes the int or float it is sent as.

    Attribute maps travel as plain JSON numbers and load back as int or float, so keeping a
    Decimal would make a batch unequal to itself after a round trip.
    """
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ModelError(f"{where}: {value!r} is not a finite number")
        try:
            return exact_number(value)
        except ModelError as exc:
            raise ModelError(f"{where}: {exc}") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelError(f"{where}: {value!r} is not a finite number")
        # A subclass (numpy.float64) as a float: JSON writers take only floats themselves.
        return value if value.__class__ is float else float(value)
    raise ModelError(
        f"{where}: {type(value).__name__} is not allowed; use str, int, float, bool, Decimal or None"
    )


_STR_ONLY = frozenset({str})
_PLAIN_VALUES = frozenset({str, int, bool, type(None)})


def _all_plain(items: Iterable[tuple[object, object]]) -> bool:
    """True when every key is a str and every value a str, int, bool, None or finite float.

    Exact types only, so the common case is a quick loop; the rest takes the checking path.
    """
    for key, item in items:
        if type(key) is not str:
            return False
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float and item - item == 0.0:  # type: ignore[operator]
            continue
        return False
    return True


def _mapping(value: object) -> Mapping[Any, Any]:
    if isinstance(value, Mapping):
        return value
    raise ModelError(f"expected an object (a mapping), got {type(value).__name__}")


def optional_scalar_map(value: Mapping[str, Scalar] | None) -> dict[str, Scalar] | None:
    if value is None:
        return None
    out: dict[str, Any] = dict(value) if value.__class__ is dict else dict(_mapping(value))
    # Two C-level passes prove the common case (string keys; str, int, bool or None values);
    # floats take the loop, which checks they are finite.
    if _STR_ONLY.issuperset(map(type, out)) and _PLAIN_VALUES.issuperset(map(type, out.values())):
        return out
    if _all_plain(out.items()):
        return out
    for key, item in out.items():
        if not isinstance(key, str):
            raise ModelError(f"attribute names must be strings, not {type(key).__name__}")
        out[key] = _check_scalar(item, f"attribute {key!r}")
    return out


def optional_string_map(value: Mapping[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    out: dict[str, Any] = dict(_mapping(value))
    for key, item in out.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ModelError(f"{key!r}: keys and values must be strings")
    return out


def optional_user_attributes(
    value: Mapping[str, UserAttributeValue] | None,
) -> dict[str, UserAttributeValue] | None:
    if value is None:
        return None
    if value.__class__ is not dict:
        _mapping(value)
    if _STR_ONLY.issuperset(map(type, value)) and _PLAIN_VALUES.issuperset(
        map(type, value.values())
    ):
        return dict(value)
    if _all_plain(value.items()):
        return dict(value)
    out: dict[str, UserAttributeValue] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ModelError(f"user attribute names must be strings, not {type(key).__name__}")
        if isinstance(item, (list, tuple)):
            where = f"user attribute {key!r}"
            out[key] = [_check_scalar(element, where) for element in item]
        else:
            out[key] = _check_scalar(item, f"user attribute {key!r}")
    return out


def optional_str_tuple(value: Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ModelError(f"expected a list of strings, got {type(value).__name__}")
    out = tuple(value)
    for item in out:
        if not isinstance(item, str):
            raise ModelError(f"expected strings, found {type(item).__name__}")
    return out


def optional_user_attribute_value(
    value: UserAttributeValue | tuple[Scalar, ...],
) -> UserAttributeValue:
    """One user attribute's value (a change event's ``new`` and ``old``): a scalar or a list."""
    if isinstance(value, (list, tuple)):
        return [_check_scalar(element, "list element") for element in value]
    return _check_scalar(value, "value")


M = TypeVar("M")


def model_tuple(cls: type[M], value: Iterable[M]) -> tuple[M, ...]:
    """A list of nested models, each checked to be a ``cls`` (a dict is not one)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ModelError(f"expected a list of {cls.__name__}, got {type(value).__name__}")
    items = tuple(value)
    for index, item in enumerate(items):
        if item.__class__ is not cls and not isinstance(item, cls):
            raise ModelError(f"[{index}]: expected a {cls.__name__}, got {type(item).__name__}")
    return items
