"""The mapping classes, one per sync kind: which source feeds each wire field.

Construction checks the definition and compiles it once (see :mod:`.compile`); the compiled
form rides on the frozen mapping, outside equality, hashing and pickling.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping as MappingABC
from enum import Enum
from typing import Any, ClassVar, Union, cast

import attrs
import orjson

from .._dataplan._plan import LoadedDataPlan
from .._errors import MappingError
from .._source.coerce import EpochUnit
from .._wire.enums import Environment, IdentityType
from .compile import CompiledMapping
from .dataplan_step import as_data_plan, chosen_version, data_plan_fingerprint
from .sources import (
    _RESERVED_LOWER,
    RESERVED_USER_ATTRIBUTES,
    Attributes,
    Column,
    Computed,
    Constant,
    ListOf,
    Source,
    Struct,
    SyncKind,
    _attributes,
    _device_identities,
    _environment,
    _epoch_unit,
    _identities,
    _optional_source,
    _timezone,
    as_source,
)

__all__ = [
    "CommerceEventMapping",
    "CustomEventMapping",
    "EventMapping",
    "RowMapping",
    "ScreenViewEventMapping",
    "UserAttributeMapping",
]


def _plan_repr(plan: LoadedDataPlan | None) -> str:
    if plan is None:
        return "None"
    pinned = f", version {plan.version}" if plan.version is not None else ""
    return f"<data plan {plan.plan_id!r}{pinned}>"


def _rebuild(cls: type[_MappingBase], arguments: dict[str, Any]) -> _MappingBase:
    return cls(**arguments)


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
    #: Batch-level fields mapped as their wire models have them (see BATCH_EXTRAS in
    #: _mapping/user_part.py): consent (a JSON column or nested sources), partner ids, ...
    consent_state: Source | None = attrs.field(default=None, converter=_optional_source)
    partner_identities: Source | None = attrs.field(default=None, converter=_optional_source)
    integration_attributes: Source | None = attrs.field(default=None, converter=_optional_source)
    attribution_info: Source | None = attrs.field(default=None, converter=_optional_source)
    device_info: Source | None = attrs.field(default=None, converter=_optional_source)
    deleted_user_attributes: Source | None = attrs.field(default=None, converter=_optional_source)
    user_attributes: Attributes | None = attrs.field(default=None, converter=_attributes)
    timezone: str | None = attrs.field(default=None, converter=_timezone)
    epoch_unit: EpochUnit = attrs.field(default=EpochUnit.MILLISECONDS, converter=_epoch_unit)
    #: The data plan batches are tagged with and validated against (see docs/dataplans.md).
    #: Compared by content; left out of the hash (a plan's schemas are dicts).
    data_plan: LoadedDataPlan | None = attrs.field(
        default=None, converter=as_data_plan, hash=False, repr=_plan_repr
    )

    def _check(self) -> None:
        if self.data_plan is not None:
            chosen_version(self.data_plan, self.environment)
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

    # Compiled once at construction (which also checks struct field names against the wire
    # models now, not per row); not part of equality, hashing, the repr or a pickle.
    _compiled: CompiledMapping = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check()
        object.__setattr__(self, "_compiled", CompiledMapping(cast("RowMapping", self)))

    def __reduce__(self) -> tuple[Any, ...]:
        # Compiled closures do not pickle; a distributed run rebuilds them on each worker.
        arguments = {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.init}
        return (_rebuild, (type(self), arguments))

    def computed_field(self) -> str | None:
        """The first field that reads a :class:`Computed` source (anywhere inside it), or
        None. Its output is Python code the fingerprint names but cannot see into."""
        for field in attrs.fields(type(self)):
            if not field.init:
                continue
            value = getattr(self, field.name)
            if isinstance(value, Attributes):
                sources: list[Any] = [source for _, source in value.columns]
            elif isinstance(value, tuple):
                sources = [item[1] for item in value if isinstance(item, tuple)]
            else:
                sources = [value]
            if any(_reads_computed(source) for source in sources):
                return str(field.name)
        return None

    @property
    def key_column(self) -> str | None:
        """The column whose value names each row in reports (the primary key)."""
        return self.primary_key

    def to_dict(self) -> dict[str, Any]:
        """The definition in the mapping-file schema (callables appear by qualified name)."""
        document: dict[str, Any] = {"kind": self.kind.value}
        for field in attrs.fields(type(self)):
            if not field.init:
                continue
            value = getattr(self, field.name)
            if value is None or value in ((), field.default):
                continue
            document[field.name] = _dump(value)
        return document

    def fingerprint(self) -> str:
        """A stable SHA-256 of the definition: equal mappings, equal fingerprints."""
        document = self.to_dict()
        if self.data_plan is not None:
            # The plan's tag and content count, its file's path does not.
            document["data_plan"] = data_plan_fingerprint(self.data_plan, self.environment)
        canonical = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(b"mparticle-feed-mapping/1\n" + canonical).hexdigest()


def _reads_computed(source: Any) -> bool:
    if isinstance(source, Computed):
        return True
    if isinstance(source, Struct):
        return any(_reads_computed(item) for _, item in source.fields)
    if isinstance(source, ListOf):
        return any(_reads_computed(item) for item in source.items)
    return False


def _dump(value: Any) -> Any:
    if isinstance(value, LoadedDataPlan):
        plan: dict[str, Any] = (
            {"path": value.source} if value.source is not None else {"plan_id": value.plan_id}
        )
        if value.version is not None:
            plan["version"] = value.version
        return plan
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


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise MappingError(f"expected true or false, got {type(value).__name__}")
    return value


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
    #: Send events without a timestamp, for mParticle to stamp with their arrival time. Must
    #: be asked for: an event sent days late would otherwise be dated on arrival, silently.
    stamp_arrival_time: bool = attrs.field(default=False, converter=_flag)

    def _check(self) -> None:
        if not self.primary_key:
            raise MappingError(
                f"a {self.kind.value} mapping needs primary_key: the column that names each row "
                "in reports and incremental state"
            )
        if self.timestamp_unixtime_ms is None and not self.stamp_arrival_time:
            raise MappingError(
                f"a {self.kind.value} mapping needs timestamp_unixtime_ms (the column holding "
                "when each event happened); to let mParticle date events on arrival instead, "
                "say so with stamp_arrival_time = true"
            )
        if self.timestamp_unixtime_ms is not None and self.stamp_arrival_time:
            raise MappingError(
                "stamp_arrival_time = true and timestamp_unixtime_ms contradict each other: "
                "give one of them"
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
class ScreenViewEventMapping(_EventMappingBase):
    """Rows → ``screen_view`` events: ``screen_name`` (required) and ``activity_type``."""

    kind: ClassVar[SyncKind] = SyncKind.SCREEN_VIEW

    screen_name: Source = attrs.field(converter=_required_source)
    activity_type: Source | None = attrs.field(default=None, converter=_optional_source)


@attrs.frozen(kw_only=True)
class EventMapping(_EventMappingBase):
    """Rows → events of any type, chosen per row: one query can feed a mixed stream.

    ``event_type`` gives the wire event type of each row (``"screen_view"``,
    ``"custom_event"``, ``"session_start"``, ...; a column or a Constant). ``data`` gives the
    type's own fields, named as in its model (``event_name`` and ``custom_event_type`` for a
    custom event, ``screen_name`` for a screen view, ``product_action`` for a commerce event,
    ...): nested sources, or a JSON column. The common event fields (timestamp, ids,
    location, attribute maps) are the mapping's own, as for every event mapping.
    """

    kind: ClassVar[SyncKind] = SyncKind.EVENT

    event_type: Source = attrs.field(converter=_required_source)
    data: Source | None = attrs.field(default=None, converter=_optional_source)


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
RowMapping = Union[  # noqa: UP007
    CustomEventMapping,
    CommerceEventMapping,
    ScreenViewEventMapping,
    EventMapping,
    UserAttributeMapping,
]

_CLASSES: dict[str, type[RowMapping]] = {
    SyncKind.CUSTOM_EVENT.value: CustomEventMapping,
    SyncKind.COMMERCE_EVENT.value: CommerceEventMapping,
    SyncKind.SCREEN_VIEW.value: ScreenViewEventMapping,
    SyncKind.EVENT.value: EventMapping,
    SyncKind.USER_ATTRIBUTES.value: UserAttributeMapping,
}
