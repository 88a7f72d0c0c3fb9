"""Mapping stage: compiling a mapping into one closure per mapped field, once, when it is made.

:class:`CompiledMapping` puts together the parts compiled elsewhere: the user part
(:mod:`.user_part`), the attribute maps (:mod:`.attributes`) and the event part
(:mod:`.event_part`), each built from getters (:mod:`.getters`) and coercers
(:mod:`.coercers`). ``map_row`` maps one row into a :class:`_Mapped`, or raises
:class:`~.rejects._Reject` naming the field path; running the closures over rows is
:mod:`.run`'s job. mParticle's limits are applied as :mod:`.limits` says.
"""

from __future__ import annotations

import operator
import zoneinfo
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._source.coerce import CoercionError, to_key_str, to_str
from .._wire.common import ApplicationInfo, Context
from .._wire.models import Event
from .._wire.values import optional_ip
from .attributes import _AttributeBuilder, attribute_builders
from .coercers import _Coercers, _then, _wrap
from .columns import used_columns
from .event_part import _custom_event_type, _EventPart
from .limits import MAX_USER_ATTRIBUTES
from .rejects import _Reject
from .sources import Column
from .user_part import _nested_value, _UserPart

if TYPE_CHECKING:  # the mapping classes import this module to compile themselves
    from .spec import RowMapping

__all__ = ["CompiledMapping", "compile_mapping"]

#: Column value types for which equal values always map to the same output.
_CACHEABLE_TYPES = frozenset({str, int, bool, float, type(None)})


@attrs.define
class _Mapped:
    """One row, mapped: the user part (the batch key) and at most one event."""

    user_key: tuple[Any, ...]
    identities: tuple[tuple[str, str], ...]
    device: tuple[tuple[str, Any], ...]
    mpid: int | None
    mp_deviceid: str | None
    ip: str | None
    application_info: ApplicationInfo | None
    context: Context | None
    user_attributes: dict[str, Any] | None
    event: Event | None
    truncated: int
    #: Other batch-level fields (consent_state, partner_identities, ...): (name, value) pairs.
    extras: tuple[tuple[str, Any], ...] = ()


@attrs.define
class _KnownMapped(_Mapped):
    """A row the Arrow engine mapped from columns whose values it proved plain for a batch
    header (text identities; text, integer, boolean or finite float user attributes): its
    header is written without checking each value again (``written_header.known_header``)."""


class CompiledMapping(_UserPart, _EventPart):
    """A mapping turned into per-field closures; ``map_row`` maps one row or raises _Reject.

    The user and event parts are mixins, not objects of their own, so that each row step
    reads its closures as attributes of this one object (no extra lookup per field) and the
    Arrow engine finds them where it always did (``compiled.event_fields``, ...).
    """

    def __init__(self, mapping: RowMapping) -> None:
        self.mapping = mapping
        self._to_text = _wrap(to_str)
        self._to_event_type = _then(self._to_text, _custom_event_type)
        self._to_ip = _then(self._to_text, optional_ip)
        tz = zoneinfo.ZoneInfo(mapping.timezone) if mapping.timezone else None
        coercers = _Coercers(tz, mapping.epoch_unit)
        self.key_column = mapping.key_column
        self._plan_user(mapping, coercers)
        self.used_columns = used_columns(mapping)
        self.attribute_builders: dict[str, _AttributeBuilder] = attribute_builders(
            mapping, self.used_columns, tz
        )
        self.user_attributes = self.attribute_builders.get("user_attributes")
        self._plan_user_cache(mapping)
        self.event_attributes = [
            (name, self.attribute_builders[name])
            for name in ("custom_attributes", "custom_flags")
            if name in self.attribute_builders
        ]
        self._plan_event(mapping, coercers)

    def _plan_user_cache(self, mapping: RowMapping) -> None:
        """Reuse of the user part between consecutive rows with the same user columns.

        Only when the user part is identities and explicit user attributes read straight from
        columns: then it is a function of those columns' values alone.
        """
        self.user_fetch: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        self._last_raw: tuple[Any, ...] | None = None
        self._last_types: tuple[type, ...] | None = None
        self._last_user: tuple[Any, Any, Any] = ((), None, ())
        builder = self.user_attributes
        if (
            self.identity_fetch is None
            or self.device
            or self.mp_deviceid is not None
            or self.mpid is not None
            or self.ip is not None
            or self.application_info is not None
            or self.context is not None
            or self.extras
            or self.device_extra is not None
            or builder is None
            or builder.fetch_all is None
            or builder.has_rest
            or len(builder.names) > MAX_USER_ATTRIBUTES
        ):
            return
        columns = [cast(Column, source).name for _, source in mapping.user_identities]
        columns += [column for _, column, _, _ in builder.explicit if column is not None]
        self.user_fetch = operator.itemgetter(*columns)  # at least two: an identity, an attribute

    def primary_key(self, row: Mapping[str, Any]) -> str | None:
        column = self.key_column
        if column is None:
            return None
        try:
            value = row[column]
        except KeyError:
            raise _Reject(
                "primary_key", f"primary key column {column!r} is not in the row"
            ) from None
        if value.__class__ is str:
            return value  # what to_key_str gives text, without its type checks
        return self.key_text(value)

    def key_text(self, value: Any) -> str:
        """The primary key a value of the key column gives (raises ``_Reject``)."""
        if value.__class__ is str:
            return value
        if value is None:
            raise _Reject("primary_key", f"primary key column {self.key_column!r} is null")
        try:
            return to_key_str(value)
        except CoercionError as exc:
            raise _Reject("primary_key", str(exc)) from None

    def map_row(self, row: Mapping[str, Any]) -> _Mapped:
        """Map one row, or raise _Reject naming the field."""
        fetch = self.user_fetch
        if fetch is None:
            return self._map_row(row)
        try:
            raw: tuple[Any, ...] | None = fetch(row)
        except KeyError:
            raw = None  # the full path rejects the row, naming the column
        # Types first: they are all plain builtins once they match, so == cannot misbehave.
        if raw is not None and tuple(map(type, raw)) == self._last_types and raw == self._last_raw:
            # The same user columns as the row before (a user's rows come together): its
            # identities and user attributes again, with this row's event.
            identities, user_attributes, user_key = self._last_user
            event, truncated = self._event(row) if self.event_cls is not None else (None, 0)
            return _Mapped(
                user_key,
                identities,
                (),
                None,
                None,
                None,
                None,
                None,
                user_attributes,
                event,
                truncated,
            )
        mapped = self._map_row(row)
        if raw is not None:
            types = tuple(map(type, raw))
            # Only values whose equality means the same output: no datetimes (equal across
            # timezones), no Decimals, no zero (0.0 == -0.0 is written differently).
            if _CACHEABLE_TYPES.issuperset(types) and not any(
                kind is float and value == 0.0 for kind, value in zip(types, raw, strict=True)
            ):
                self._last_raw, self._last_types = raw, types
                self._last_user = (mapped.identities, mapped.user_attributes, mapped.user_key)
            else:
                self._last_raw = None
        return mapped

    def _map_row(self, row: Mapping[str, Any]) -> _Mapped:
        # One step per field group, in the order a row's problems are reported; a group the
        # mapping does not give costs no call.
        identities = self._identities(row)
        device = self._device_identities(row) if self.device else []
        mp_deviceid = None
        if self.mp_deviceid is not None:
            value = self.mp_deviceid[0](row)
            if value.__class__ is str:
                value = value.strip() or None
            if value is not None:
                mp_deviceid = self.mp_deviceid[1](value, "mp_deviceid")
        mpid = None if self.mpid is None else self._mpid(row)
        if not (identities or device or mp_deviceid or mpid is not None):
            raise _Reject(
                "user_identities", "the row has no user identity, device identity or mpid"
            )
        ip = None
        if self.ip is not None:
            value = self.ip(row)
            if value is not None:
                ip = self._to_ip(value, "ip")
        application_info = (
            None if self.application_info is None else _nested_value(self.application_info, row)
        )
        context = None if self.context is None else _nested_value(self.context, row)
        extras = self._extras(row) if self.extras else ()
        if self.device_extra is not None:
            device.extend(self._device_info(row))
        builder = self.user_attributes
        user_attributes = None if builder is None else builder.build(row)
        event, truncated = self._event(row) if self.event_cls is not None else (None, 0)
        identity_pairs = tuple(identities)
        device_pairs = tuple(device) if device else ()
        user_key = (
            identity_pairs,
            device_pairs,
            mpid,
            mp_deviceid,
            ip,
            application_info,
            context,
            extras,
        )
        # Positional, in _Mapped's field order: keywords cost more on every row.
        return _Mapped(
            user_key,
            identity_pairs,
            device_pairs,
            mpid,
            mp_deviceid,
            ip,
            application_info,
            context,
            user_attributes,
            event,
            truncated,
            extras,
        )


def compile_mapping(mapping: RowMapping) -> CompiledMapping:
    """Compile (and so validate) a mapping; raises :class:`MappingError` on a bad definition."""
    return CompiledMapping(mapping)
