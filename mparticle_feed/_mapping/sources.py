"""Declarative mappings from query columns to mParticle batches, built in code or loaded from a file.

Five sync kinds, one class each: :class:`CustomEventMapping`, :class:`CommerceEventMapping`,
:class:`ScreenViewEventMapping`, :class:`EventMapping` (any event type, chosen per row) and
:class:`UserAttributeMapping`. Every mapped field takes a *source*:

- a :class:`Column` (in code, a bare ``str`` means a column),
- a :class:`Constant`,
- a :class:`Computed` callable of the row (code only: mapping files are data),
- a :class:`Struct` of sources (a nested object assembled from flat columns; a ``dict`` in code),
- a :class:`ListOf` sources (a list assembled from columns; a ``list`` in code).

A column feeding a nested object (``product_action``, ``location``, ...) may hold JSON text,
JSON bytes or an already decoded ``dict``/``list``.

Attribute maps (:class:`Attributes`) combine explicit ``attribute = source`` pairs, every
column with a prefix, every remaining column, and the keys of a JSON object column.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Iterable
from collections.abc import Mapping as MappingABC
from enum import Enum
from typing import Any, Union

import attrs

from .._errors import MappingError
from .._source.coerce import EpochUnit
from .._wire.common import DEVICE_IDENTITY_FIELDS
from .._wire.enums import Environment, IdentityType

__all__ = [
    "DEVICE_IDENTITY_KEYS",
    "RESERVED_USER_ATTRIBUTES",
    "Attributes",
    "Column",
    "Computed",
    "Constant",
    "ListOf",
    "Source",
    "Struct",
    "SyncKind",
    "as_source",
]

#: mParticle's reserved user attributes (listed in docs/api.md); matched case-insensitively.
RESERVED_USER_ATTRIBUTES: tuple[str, ...] = (
    "$Age",
    "$FirstName",
    "$LastName",
    "$Gender",
    "$Mobile",
    "$Address",
    "$City",
    "$State",
    "$Zip",
    "$Country",
)
_RESERVED_LOWER = frozenset(name.lower() for name in RESERVED_USER_ATTRIBUTES)

#: Keys accepted in ``device_identities``: the ``device_info`` identities plus ``mp_deviceid``.
DEVICE_IDENTITY_KEYS: tuple[str, ...] = (*DEVICE_IDENTITY_FIELDS, "mp_deviceid")

#: mParticle truncates longer attribute names; we refuse them (see docs/mapping.md).
MAX_NAME_LENGTH = 256


class SyncKind(str, Enum):
    """What a mapping produces."""

    CUSTOM_EVENT = "custom_event"
    COMMERCE_EVENT = "commerce_event"
    SCREEN_VIEW = "screen_view"
    #: Any event type, chosen per row by the mapping's ``event_type`` source.
    EVENT = "event"
    USER_ATTRIBUTES = "user_attributes"

    def __str__(self) -> str:
        return str(self.value)


# --- sources ------------------------------------------------------------------------------


@attrs.frozen
class Column:
    """The value of one column of the row."""

    name: str = attrs.field(validator=attrs.validators.instance_of(str))


@attrs.frozen
class Constant:
    """The same value for every row (JSON-like data: text, numbers, booleans, lists, objects)."""

    value: Any


@attrs.frozen
class Computed:
    """``function(row)`` for each row; code only. Fingerprints use its qualified name."""

    function: Callable[[MappingABC[str, Any]], Any]

    @property
    def qualified_name(self) -> str:
        """``module.qualname`` of the callable: what the mapping's fingerprint records."""
        module = getattr(self.function, "__module__", None) or "?"
        name = getattr(self.function, "__qualname__", None) or type(self.function).__qualname__
        return f"{module}.{name}"


def _struct_fields(
    value: MappingABC[str, Any] | Iterable[tuple[str, Any]],
) -> tuple[tuple[str, Source], ...]:
    # Field order has no meaning in a nested object; sorting makes equal definitions equal.
    pairs = value.items() if isinstance(value, MappingABC) else value
    return tuple(sorted(((str(key), as_source(item)) for key, item in pairs), key=lambda p: p[0]))


@attrs.frozen
class Struct:
    """A nested object assembled field by field (``{"action": Constant("purchase"), ...}``)."""

    fields: tuple[tuple[str, Source], ...] = attrs.field(converter=_struct_fields)


def _items(value: Iterable[Any]) -> tuple[Source, ...]:
    return tuple(as_source(item) for item in value)


@attrs.frozen
class ListOf:
    """A list assembled from sources, e.g. the one product of a row: ``ListOf([Struct(...)])``."""

    items: tuple[Source, ...] = attrs.field(converter=_items)


Source = Union[Column, Constant, Computed, Struct, ListOf]  # noqa: UP007 - runtime alias on 3.10
SourceLike = Union[Source, str, MappingABC[str, Any], list[Any]]  # noqa: UP007


def as_source(value: Any) -> Source:
    """Normalise what users write in code: ``str`` → Column, ``dict`` → Struct, ``list`` → ListOf."""
    if isinstance(value, (Column, Constant, Computed, Struct, ListOf)):
        return value
    if isinstance(value, str):
        return Column(value)
    if isinstance(value, MappingABC):
        return Struct(value)
    if isinstance(value, (list, tuple)):
        return ListOf(value)
    if callable(value):
        return Computed(value)
    raise MappingError(
        f"{value!r} is not a source; use a column name, Column(...), Constant(...), "
        "Computed(...), a dict of sources or a list of sources"
    )


def _optional_source(value: Any) -> Source | None:
    return None if value is None else as_source(value)


def _source_map(
    value: MappingABC[Any, Any] | Iterable[tuple[Any, Any]] | None,
) -> tuple[tuple[str, Source], ...]:
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, MappingABC) else value
    return tuple((str(getattr(key, "value", key)), as_source(item)) for key, item in pairs)


# --- attribute maps -------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Attributes:
    """An attribute map: explicit pairs, a column prefix, all remaining columns, a JSON column.

    ``columns`` maps attribute name → source (``{"plan": "subscription_plan"}``). With
    ``prefix="attr_"`` every column starting with ``attr_`` becomes an attribute named by the
    rest of the column name (the whole name with ``strip_prefix=False``). ``remaining=True``
    takes every column no other part of the mapping reads. ``json_column`` names a column
    holding a JSON object whose keys become attributes. Null values are left out.
    """

    columns: tuple[tuple[str, Source], ...] = attrs.field(default=(), converter=_source_map)
    prefix: str | None = None
    strip_prefix: bool = True
    remaining: bool = False
    json_column: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.prefix == "":
            raise MappingError("an attribute prefix cannot be empty; use remaining=true instead")
        for name, _ in self.columns:
            if not name:
                raise MappingError("attribute names cannot be empty")
            if len(name) > MAX_NAME_LENGTH:
                raise MappingError(
                    f"attribute name {name[:40]!r}... is {len(name)} characters; "
                    f"mParticle allows {MAX_NAME_LENGTH}"
                )


def _attributes(value: Attributes | MappingABC[str, Any] | None) -> Attributes | None:
    if value is None or isinstance(value, Attributes):
        return value
    return Attributes(columns=value)


# --- the mappings -------------------------------------------------------------------------


def _environment(value: Environment | str) -> Environment:
    try:
        return Environment(value)
    except ValueError:
        raise MappingError(f"environment {value!r} is not 'development' or 'production'") from None


def _epoch_unit(value: EpochUnit | str) -> EpochUnit:
    try:
        return EpochUnit(value)
    except ValueError:
        raise MappingError(f"epoch_unit {value!r} is not one of 's', 'ms', 'us'") from None


def _timezone(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"timezone {value!r} is not an IANA timezone name") from None
    return value


def _identities(
    value: MappingABC[Any, Any] | Iterable[tuple[Any, Any]] | None,
) -> tuple[tuple[str, Source], ...]:
    pairs = _source_map(value)
    for key, _ in pairs:
        try:
            IdentityType(key)
        except ValueError:
            allowed = ", ".join(t.value for t in IdentityType)
            raise MappingError(
                f"user_identities: {key!r} is not an identity type; expected one of {allowed}"
            ) from None
    # An IdentityType key and its string spell the same thing; normalise to the string.
    return tuple((IdentityType(key).value, source) for key, source in pairs)


def _device_identities(
    value: MappingABC[str, Any] | Iterable[tuple[Any, Any]] | None,
) -> tuple[tuple[str, Source], ...]:
    pairs = _source_map(value)
    for key, _ in pairs:
        if key not in DEVICE_IDENTITY_KEYS:
            raise MappingError(
                f"device_identities: {key!r} is not a device identity; expected one of "
                f"{', '.join(DEVICE_IDENTITY_KEYS)}"
            )
    return pairs
