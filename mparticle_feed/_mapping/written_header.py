"""Mapping stage: a batch's header (identities, user attributes, environment) written as the
codec writes it, without a model, where its values are proven plain (see :mod:`.written`)."""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from .._wire.common import UserIdentities
from .._wire.enums import Environment

__all__ = ["known_header", "written_header"]


#: The rank of each identity in what the codec writes for ``UserIdentities`` (field order).
_IDENTITY_ORDER = {field.name: rank for rank, field in enumerate(attrs.fields(UserIdentities))}
#: The identity names a mapping gives, in the codec's order (few shapes per mapping).
_ORDERED_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_SHAPES_KEPT = 1024
_TEXT = frozenset({str})
#: User attribute values ``optional_user_attributes`` hands back unchanged (floats: finite).
_PLAIN_KINDS = frozenset({str, int, bool, float, type(None)})


def written_header(
    environment: Any, first: Any, user_attributes: dict[str, Any]
) -> tuple[bytes, bytes] | None:
    """A batch header's bytes, as the codec writes the :class:`Batch` the row path builds from
    ``first`` (a mapped row) and the merged ``user_attributes``, and the user key packing
    orders by; None unless the model is proven to keep every value as it is.

    Proven: identities (text) and user attributes whose keys are text and values text,
    integers, booleans, null or finite floats (``optional_user_attributes`` hands those back
    unchanged), no other user-level field. The codec writes ``environment`` first, then the
    set fields in the model's field order: ``user_attributes`` before ``user_identities``,
    each identity in :class:`UserIdentities`'s field order.
    """
    if (
        first.device
        or first.extras
        or not first.identities
        or first.mpid is not None
        or first.mp_deviceid is not None
        or first.ip is not None
        or first.application_info is not None
        or first.context is not None
        or (environment is not None and environment.__class__ is not Environment)
    ):
        return None
    identities = _in_order(dict(first.identities))
    if identities is None or not _TEXT.issuperset(map(type, identities.values())):
        return None
    if user_attributes:
        if not _TEXT.issuperset(map(type, user_attributes)):
            return None
        kinds = set(map(type, user_attributes.values()))
        if not kinds <= _PLAIN_KINDS:
            return None
        if float in kinds:
            for item in user_attributes.values():  # a loop: cheaper than all() per batch
                if item.__class__ is float and item - item != 0.0:
                    return None  # not finite: the model's converter refuses it
    return _header_bytes(environment, identities, user_attributes)


def known_header(
    environment: Any, first: Any, user_attributes: dict[str, Any]
) -> tuple[bytes, bytes] | None:
    """:func:`written_header` for a row the Arrow engine proved plain (``_KnownMapped``): no
    other user-level field, an environment the codec writes, identities of known names
    holding text, ``user_attributes`` those of ``first`` (text keys; values text, integers,
    booleans, null or finite floats). The same bytes, without checking each value again."""
    identities = _in_order(dict(first.identities))
    if identities is None:
        return None
    return _header_bytes(environment, identities, user_attributes)


def _in_order(given: dict[str, str]) -> dict[str, str] | None:
    """Identities in :class:`UserIdentities`'s field order (``given`` itself when it is, as
    identities mostly are); None for an unknown name."""
    names = tuple(given)
    ordered = _ORDERED_NAMES.get(names)
    if ordered is None:
        if not all(name in _IDENTITY_ORDER for name in names):
            return None
        ordered = tuple(sorted(names, key=_IDENTITY_ORDER.__getitem__))
        if len(_ORDERED_NAMES) < _SHAPES_KEPT:
            _ORDERED_NAMES[names] = ordered
    return given if names == ordered else {name: given[name] for name in ordered}


#: A header's opening, per environment the header writers take (None: none written): ``{``
#: and the environment, as orjson writes it in the header's document.
_OPENINGS: dict[Any, bytes] = {
    None: b"{",
    **{
        environment: b"{" + orjson.dumps({"environment": environment})[1:-1] + b","
        for environment in Environment
    },
}


def _header_bytes(
    environment: Any, identities: dict[str, str], user_attributes: Any
) -> tuple[bytes, bytes] | None:
    """The header's bytes and the user key, from identities in the codec's order.

    The bytes orjson writes for ``{"environment": ..., "user_attributes": ...,
    "user_identities": ...}`` (the codec's order), joined from each part's JSON: orjson
    writes a value alike wherever it stands, and the identities' JSON is also the user key's.
    """
    opening = _OPENINGS[environment]
    try:
        identities_json = orjson.dumps(identities)
        if user_attributes:
            header = b"".join(
                (
                    opening,
                    b'"user_attributes":',
                    orjson.dumps(user_attributes),
                    b',"user_identities":',
                    identities_json,
                    b"}",
                )
            )
        else:
            header = b"".join((opening, b'"user_identities":', identities_json, b"}"))
    except orjson.JSONEncodeError:
        return None  # a lone surrogate: the model, which packing reports
    return header, b"".join((b"[null,null,", identities_json, b"]"))
