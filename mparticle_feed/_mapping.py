"""Declarative mappings from query columns to mParticle batches, built in code or loaded from a file.

Three sync kinds, one class each: :class:`CustomEventMapping`, :class:`CommerceEventMapping`
and :class:`UserAttributeMapping`. Every mapped field takes a *source*:

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

import hashlib
import sys
import zoneinfo
from collections.abc import Callable, Iterable
from collections.abc import Mapping as MappingABC
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Union, cast

import attrs
import orjson

from ._coerce import EpochUnit
from ._enums import Environment, IdentityType
from ._errors import MappingError
from ._models_common import DEVICE_IDENTITY_FIELDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "DEVICE_IDENTITY_KEYS",
    "RESERVED_USER_ATTRIBUTES",
    "Attributes",
    "Column",
    "CommerceEventMapping",
    "Computed",
    "Constant",
    "CustomEventMapping",
    "ListOf",
    "RowMapping",
    "Source",
    "Struct",
    "SyncKind",
    "UserAttributeMapping",
    "load_mapping",
    "mapping_from_dict",
]

#: mParticle's reserved user attributes (reference §3.9); matched case-insensitively.
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


@attrs.frozen(kw_only=True)
class _MappingBase:
    """Fields every sync kind has: who the user is, and batch-level settings."""

    kind: ClassVar[SyncKind]

    environment: Environment = attrs.field(default=Environment.DEVELOPMENT, converter=_environment)
    primary_key: str | None = None
    user_identities: tuple[tuple[str, Source], ...] = attrs.field(default=(), converter=_identities)
    device_identities: tuple[tuple[str, Source], ...] = attrs.field(
        default=(), converter=_device_identities
    )
    mpid: Source | None = attrs.field(default=None, converter=_optional_source)
    ip: Source | None = attrs.field(default=None, converter=_optional_source)
    application_info: Source | None = attrs.field(default=None, converter=_optional_source)
    context: Source | None = attrs.field(default=None, converter=_optional_source)
    user_attributes: Attributes | None = attrs.field(default=None, converter=_attributes)
    timezone: str | None = attrs.field(default=None, converter=_timezone)
    epoch_unit: EpochUnit = attrs.field(default=EpochUnit.MILLISECONDS, converter=_epoch_unit)

    def _check(self) -> None:
        if not (self.user_identities or self.device_identities or self.mpid is not None):
            raise MappingError(
                "a mapping needs at least one identity: user_identities, device_identities or mpid"
            )
        if self.user_attributes is not None:
            for name, _ in self.user_attributes.columns:
                if name.startswith("$") and name.lower() not in _RESERVED_LOWER:
                    raise MappingError(
                        f"user attribute {name!r}: names starting with '$' are reserved by "
                        f"mParticle; the reserved ones are {', '.join(RESERVED_USER_ATTRIBUTES)}"
                    )
        remaining = [maps for maps in self.attribute_maps() if maps[1].remaining]
        if len(remaining) > 1:
            raise MappingError(
                "only one attribute map can take the remaining columns "
                f"(found: {', '.join(name for name, _ in remaining)})"
            )

    def attribute_maps(self) -> list[tuple[str, Attributes]]:
        """The attribute maps of this mapping, by wire field name."""
        return [("user_attributes", self.user_attributes)] if self.user_attributes else []

    def __attrs_post_init__(self) -> None:
        self._check()
        # Compiling validates struct field names against the wire models now, not per row.
        from ._mapping_run import compile_mapping

        compile_mapping(cast("RowMapping", self))

    @property
    def key_column(self) -> str | None:
        """The column whose value names each row in reports (the primary key)."""
        return self.primary_key

    def to_dict(self) -> dict[str, Any]:
        """The definition in the mapping-file schema (callables appear by qualified name)."""
        document: dict[str, Any] = {"kind": self.kind.value}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if value is None or value in ((), field.default):
                continue
            document[field.name] = _dump(value)
        return document

    def fingerprint(self) -> str:
        """A stable SHA-256 of the definition: equal mappings, equal fingerprints."""
        canonical = orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(b"mparticle-feed-mapping/1\n" + canonical).hexdigest()


def _dump(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Column):
        return value.name
    if isinstance(value, Constant):
        return {"const": _dump_constant(value.value)}
    if isinstance(value, Computed):
        return {"computed": value.qualified_name}
    if isinstance(value, Struct):
        return {name: _dump(source) for name, source in value.fields}
    if isinstance(value, ListOf):
        return [_dump(item) for item in value.items]
    if isinstance(value, Attributes):
        out: dict[str, Any] = {}
        if value.columns:
            out["columns"] = _dump(value.columns)
        if value.prefix is not None:
            out["prefix"] = value.prefix
            if not value.strip_prefix:
                out["strip_prefix"] = False
        if value.remaining:
            out["remaining"] = True
        if value.json_column is not None:
            out["json_column"] = value.json_column
        return out
    if isinstance(value, tuple):  # (name, source) pairs
        return {name: _dump(source) for name, source in value}
    return value


def _dump_constant(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_dump_constant(item) for item in value]
    if isinstance(value, MappingABC):
        return {str(key): _dump_constant(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # Decimal, UUID, dates: their text is what a mapping file would hold.
    return str(value)


@attrs.frozen(kw_only=True)
class _EventMappingBase(_MappingBase):
    """Fields every event sync has (the common event data fields)."""

    timestamp_unixtime_ms: Source | None = attrs.field(default=None, converter=_optional_source)
    source_message_id: Source | None = attrs.field(default=None, converter=_optional_source)
    session_uuid: Source | None = attrs.field(default=None, converter=_optional_source)
    location: Source | None = attrs.field(default=None, converter=_optional_source)
    device_current_state: Source | None = attrs.field(default=None, converter=_optional_source)
    custom_attributes: Attributes | None = attrs.field(default=None, converter=_attributes)
    custom_flags: Attributes | None = attrs.field(default=None, converter=_attributes)

    def _check(self) -> None:
        if not self.primary_key:
            raise MappingError(
                f"a {self.kind.value} mapping needs primary_key: the column that names each row "
                "in reports and incremental state"
            )
        super()._check()

    def attribute_maps(self) -> list[tuple[str, Attributes]]:
        maps = super().attribute_maps()
        for name in ("custom_attributes", "custom_flags"):
            value = getattr(self, name)
            if value is not None:
                maps.append((name, value))
        return maps


def _required_source(value: Any) -> Source:
    return as_source(value)


@attrs.frozen(kw_only=True)
class CustomEventMapping(_EventMappingBase):
    """Rows → ``custom_event`` events. ``custom_event_type`` defaults to ``"other"``."""

    kind: ClassVar[SyncKind] = SyncKind.CUSTOM_EVENT

    event_name: Source = attrs.field(converter=_required_source)
    custom_event_type: Source = attrs.field(default=Constant("other"), converter=_required_source)


@attrs.frozen(kw_only=True)
class CommerceEventMapping(_EventMappingBase):
    """Rows → ``commerce_event`` events; each row must yield exactly one of
    ``product_action``, ``promotion_action`` or ``product_impressions``."""

    kind: ClassVar[SyncKind] = SyncKind.COMMERCE_EVENT

    product_action: Source | None = attrs.field(default=None, converter=_optional_source)
    promotion_action: Source | None = attrs.field(default=None, converter=_optional_source)
    product_impressions: Source | None = attrs.field(default=None, converter=_optional_source)
    shopping_cart: Source | None = attrs.field(default=None, converter=_optional_source)
    currency_code: Source | None = attrs.field(default=None, converter=_optional_source)
    screen_name: Source | None = attrs.field(default=None, converter=_optional_source)
    is_non_interactive: Source | None = attrs.field(default=None, converter=_optional_source)
    event_name: Source | None = attrs.field(default=None, converter=_optional_source)

    def _check(self) -> None:
        super()._check()
        if (self.product_action, self.promotion_action, self.product_impressions) == (
            None,
            None,
            None,
        ):
            raise MappingError(
                "a commerce_event mapping needs product_action, promotion_action or "
                "product_impressions"
            )


@attrs.frozen(kw_only=True)
class UserAttributeMapping(_MappingBase):
    """Rows → user data only (no events): identities and user attributes, one batch per row.

    ``primary_key`` defaults to the column of the first identity in this order:
    ``customer_id``, the other user identities in wire order, ``mpid``, the device identities.
    """

    kind: ClassVar[SyncKind] = SyncKind.USER_ATTRIBUTES

    def _check(self) -> None:
        super()._check()
        if self.user_attributes is None:
            raise MappingError("a user_attributes mapping needs user_attributes")

    @property
    def key_column(self) -> str | None:
        if self.primary_key:
            return self.primary_key
        by_type = dict(self.user_identities)
        ordered = [by_type[t.value] for t in IdentityType if t.value in by_type]
        candidates = [by_type.get("customer_id"), *ordered, self.mpid]
        candidates += [source for _, source in self.device_identities]
        for source in candidates:
            if isinstance(source, Column):
                return source.name
        return None


#: Any mapping.
RowMapping = Union[CustomEventMapping, CommerceEventMapping, UserAttributeMapping]  # noqa: UP007

_CLASSES: dict[str, type[CustomEventMapping | CommerceEventMapping | UserAttributeMapping]] = {
    SyncKind.CUSTOM_EVENT.value: CustomEventMapping,
    SyncKind.COMMERCE_EVENT.value: CommerceEventMapping,
    SyncKind.USER_ATTRIBUTES.value: UserAttributeMapping,
}


# --- loading --------------------------------------------------------------------------------

_SOURCE_KEYS = frozenset({"column", "const"})
_ATTRIBUTE_KEYS = frozenset({"columns", "prefix", "strip_prefix", "remaining", "json_column"})
_PLAIN_KEYS = frozenset({"kind", "environment", "primary_key", "timezone", "epoch_unit"})
_MAP_KEYS = frozenset({"user_identities", "device_identities"})
_ATTRIBUTE_FIELDS = frozenset({"user_attributes", "custom_attributes", "custom_flags"})


def _source_from_document(value: Any, where: str) -> Source:
    if isinstance(value, str):
        return Column(value)
    if isinstance(value, list):
        return ListOf(
            [_source_from_document(item, f"{where}[{i}]") for i, item in enumerate(value)]
        )
    if isinstance(value, dict):
        if set(value) & _SOURCE_KEYS:
            if len(value) != 1:
                raise MappingError(
                    f"{where}: a source is either {{column = ...}} or {{const = ...}}, alone"
                )
            if "column" in value:
                if not isinstance(value["column"], str):
                    raise MappingError(f"{where}: column must be a column name (text)")
                return Column(value["column"])
            return Constant(value["const"])
        return Struct(
            {str(key): _source_from_document(item, f"{where}.{key}") for key, item in value.items()}
        )
    raise MappingError(
        f"{where}: {value!r} is not a source; write a column name, {{const = ...}} or a table"
    )


def _attributes_from_document(value: Any, where: str) -> Attributes:
    if not isinstance(value, dict):
        raise MappingError(
            f"{where} must be a table with columns, prefix, remaining or json_column"
        )
    unknown = set(value) - _ATTRIBUTE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    columns = value.get("columns", {})
    if not isinstance(columns, dict):
        raise MappingError(f"{where}.columns must be a table of attribute = source")
    kwargs: dict[str, Any] = {
        "columns": {
            str(key): _source_from_document(item, f"{where}.columns.{key}")
            for key, item in columns.items()
        }
    }
    for key, kind in (
        ("prefix", str),
        ("strip_prefix", bool),
        ("remaining", bool),
        ("json_column", str),
    ):
        if key in value:
            if not isinstance(value[key], kind):
                raise MappingError(f"{where}.{key} must be {kind.__name__}")
            kwargs[key] = value[key]
    return Attributes(**kwargs)


def mapping_from_dict(document: MappingABC[str, Any]) -> RowMapping:
    """Build a mapping from parsed TOML/JSON (the mapping-file schema; see docs/mapping.md)."""
    if not isinstance(document, MappingABC):
        raise MappingError("a mapping document must be a table/object")
    kind = document.get("kind")
    if kind not in _CLASSES:
        raise MappingError(f"kind {kind!r} is not one of {', '.join(repr(k) for k in _CLASSES)}")
    cls = _CLASSES[kind]
    known = {field.name for field in attrs.fields(cls)}
    unknown = set(document) - known - {"kind"}
    if unknown:
        raise MappingError(f"unknown key(s) for a {kind} mapping: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for key, value in document.items():
        if key == "kind":
            continue
        if key in _PLAIN_KEYS:
            if not isinstance(value, str):
                raise MappingError(f"{key} must be text")
            kwargs[key] = value
        elif key in _MAP_KEYS:
            if not isinstance(value, dict):
                raise MappingError(f"{key} must be a table of name = source")
            kwargs[key] = {
                name: _source_from_document(item, f"{key}.{name}") for name, item in value.items()
            }
        elif key in _ATTRIBUTE_FIELDS:
            kwargs[key] = _attributes_from_document(value, key)
        else:
            kwargs[key] = _source_from_document(value, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise MappingError(f"{kind} mapping: {exc}") from None


def load_mapping(path: str | Path) -> RowMapping:
    """Load a mapping from a ``.toml`` or ``.json`` file (data only: no code is run)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}") from None
    try:
        if suffix == ".toml":
            document = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            document = orjson.loads(raw)
        else:
            raise MappingError(f"{path}: a mapping file ends in .toml or .json")
    except (tomllib.TOMLDecodeError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MappingError(f"{path} is not valid {suffix[1:].upper()}: {exc}") from None
    try:
        return mapping_from_dict(document)
    except MappingError as exc:
        raise MappingError(f"{path}: {exc}") from None
