"""Mapping stage: the user part of a compiled mapping, and mapping a row's user with it.

The user part is what makes a row's batch key: user identities, device identities, the
mpid, the ip, application and context info, and the other batch-level fields
(``BATCH_EXTRAS``). Compiling plans a getter and a coercer for each; on every row one step
per field group maps it, trimming identities and leaving blank ones out.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

import attrs

from .._errors import MappingError
from .._source.coerce import CoercionError, to_int, to_str
from .._wire.common import DEVICE_IDENTITY_FIELDS, ApplicationInfo, Context, DeviceInfo
from .._wire.models import Batch
from .._wire.sparse import layout
from .._wire.values import optional_device_uuid
from .coercers import (
    Coercer,
    _all_null,
    _check_struct,
    _Coercers,
    _empty,
    _refuse_table,
    _then,
    _wrap,
)
from .getters import Getter, _getter
from .limits import _INT64
from .rejects import _join, _Reject
from .sources import Column, Source, Struct

if TYPE_CHECKING:
    from .spec import RowMapping

__all__ = ["BATCH_EXTRAS", "_UserPart"]

#: Batch-level fields a mapping may give, mapped as their wire models have them.
BATCH_EXTRAS = (
    "consent_state",
    "partner_identities",
    "integration_attributes",
    "attribution_info",
    "deleted_user_attributes",
)


class _UserPart:
    """The user fields of :class:`~.compile.CompiledMapping`: planned by ``_plan_user``, each
    group mapped by its step on every row."""

    _to_ip: Coercer
    identities: list[tuple[str, Getter]]
    #: Identities read from columns (the usual case), fetched together.
    identity_fetch: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None
    device: list[tuple[str, Getter, Coercer]]
    mp_deviceid: tuple[Getter, Coercer] | None
    mpid: Getter | None
    ip: Getter | None
    application_info: tuple[Getter, Coercer, str] | None
    context: tuple[Getter, Coercer, str] | None
    extras: list[tuple[str, Getter, Coercer]]
    device_extra: tuple[Getter, Coercer] | None

    def _plan_user(self, mapping: RowMapping, coercers: _Coercers) -> None:
        for group in ("user_identities", "device_identities"):
            for name, source in getattr(mapping, group):
                _refuse_table(source, _join(group, name))
        for name in ("mpid", "ip"):
            _refuse_table(getattr(mapping, name), name)
        self.identities = [
            (name, _getter(source, _join("user_identities", name)))
            for name, source in mapping.user_identities
        ]
        self.identity_fetch = None
        identity_columns = [source for _, source in mapping.user_identities]
        if identity_columns and all(isinstance(c, Column) for c in identity_columns):
            getter = operator.itemgetter(*(cast(Column, c).name for c in identity_columns))
            self.identity_fetch = (
                getter if len(identity_columns) > 1 else lambda row: (getter(row),)
            )
        self._plan_device_identities(mapping, coercers)
        self.mpid = None if mapping.mpid is None else _getter(mapping.mpid, "mpid")
        self.ip = None if mapping.ip is None else _getter(mapping.ip, "ip")
        self.application_info = _nested(
            mapping.application_info, "application_info", coercers.struct(ApplicationInfo)
        )
        self.context = _nested(mapping.context, "context", coercers.struct(Context))
        self.extras = _batch_extras(mapping, coercers)
        self.device_extra = _device_extra(mapping, coercers)

    def _plan_device_identities(self, mapping: RowMapping, coercers: _Coercers) -> None:
        device_fields = {
            field.name: field for field in attrs.fields(attrs.resolve_types(DeviceInfo))
        }
        self.device = []
        self.mp_deviceid = None
        for name, source in mapping.device_identities:
            if name == "mp_deviceid":
                self.mp_deviceid = (
                    _getter(source, "mp_deviceid"),
                    _then(_wrap(to_str), optional_device_uuid),
                )
            else:
                path = _join("device_info", name)
                self.device.append(
                    (name, _getter(source, path), coercers.for_field(device_fields[name]))
                )

    # --- the steps of a row, one per field group (called only for the groups mapped) ---

    def _identities(self, row: Mapping[str, Any]) -> list[tuple[str, str]]:
        identities: list[tuple[str, str]] = []
        values: tuple[Any, ...] | None = None
        if self.identity_fetch is not None:
            try:
                values = self.identity_fetch(row)
            except KeyError:
                values = None  # the getters below reject the row, naming the column
        for index, (name, get) in enumerate(self.identities):
            value = get(row) if values is None else values[index]
            if value is None:
                continue
            if value.__class__ is str:
                text = value.strip()
            else:
                try:
                    text = to_str(value).strip()
                except CoercionError as exc:
                    raise _Reject(_join("user_identities", name), str(exc)) from None
            if text:
                identities.append((name, text))
        return identities

    def _device_identities(self, row: Mapping[str, Any]) -> list[tuple[str, Any]]:
        device: list[tuple[str, Any]] = []
        for name, get, coerce in self.device:
            value = get(row)
            # Trimmed, and a blank one left out, as user identities are.
            if value.__class__ is str:
                value = value.strip() or None
            if value is not None:
                device.append((name, coerce(value, _join("device_info", name))))
        return device

    def _mpid(self, row: Mapping[str, Any]) -> int | None:
        assert self.mpid is not None
        value = self.mpid(row)
        if value is None:
            return None
        try:
            mpid = to_int(value)
        except CoercionError as exc:
            raise _Reject("mpid", str(exc)) from None
        if not -_INT64 <= mpid < _INT64:
            raise _Reject("mpid", f"{mpid} is outside the 64-bit range of an mpid")
        return mpid

    def _extras(self, row: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        pairs = []
        for name, get, coerce in self.extras:
            value = get(row)
            if value is not None:
                value = coerce(value, name)
                if not _empty(value):
                    pairs.append((name, value))
        return tuple(pairs)

    def _device_info(self, row: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """``device_info``'s other fields, set on the row: (name, value) pairs."""
        assert self.device_extra is not None
        get, coerce = self.device_extra
        value = get(row)
        if value is None or (isinstance(value, Mapping) and _all_null(value)):
            return []
        info = coerce(value, "device_info")
        named = [(f, getattr(info, f)) for f in layout(DeviceInfo).set_fields(info._mpf_set)]
        identities_given = [f for f, _ in named if f in DEVICE_IDENTITY_FIELDS]
        if identities_given:
            raise _Reject(
                _join("device_info", identities_given[0]),
                "device identities are mapped under device_identities",
            )
        return named


def _nested(
    source: Source | None, path: str, coercer: Coercer
) -> tuple[Getter, Coercer, str] | None:
    if source is None:
        return None
    return _getter(source, path), coercer, path


def _nested_value(plan: tuple[Getter, Coercer, str] | None, row: Mapping[str, Any]) -> Any:
    if plan is None:
        return None
    get, coerce, path = plan
    value = get(row)
    return None if value is None else coerce(value, path)


def _batch_extras(mapping: RowMapping, coercers: _Coercers) -> list[tuple[str, Getter, Coercer]]:
    fields = {field.name: field for field in attrs.fields(attrs.resolve_types(Batch))}
    extras = []
    for name in BATCH_EXTRAS:
        source = getattr(mapping, name)
        if source is None:
            continue
        _check_struct(source, fields[name], name)
        extras.append((name, _getter(source, name), coercers.for_field(fields[name])))
    return extras


def _device_extra(mapping: RowMapping, coercers: _Coercers) -> tuple[Getter, Coercer] | None:
    """``device_info``'s other fields (platform, os_version, ...); identities go elsewhere."""
    source = mapping.device_info
    if source is None:
        return None
    fields = {field.name: field for field in attrs.fields(attrs.resolve_types(Batch))}
    _check_struct(source, fields["device_info"], "device_info")
    if isinstance(source, Struct):
        named = {name for name, _ in source.fields} & set(DEVICE_IDENTITY_FIELDS)
        if named:
            raise MappingError(
                f"device_info: {', '.join(sorted(named))} are device identities; map them "
                "under device_identities, where they are trimmed and count as the row's identity"
            )
    return _getter(source, "device_info"), coercers.struct(DeviceInfo)
