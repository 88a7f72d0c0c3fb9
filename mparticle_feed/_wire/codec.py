"""Wire stage: the codec. ``loads``, ``from_dict`` and ``to_dict`` use one dedicated cattrs
converter; ``dumps`` hands the models to orjson with the shallow functions of :mod:`.unstructure`.

Unset (None) fields are omitted; ``environment`` is always written unless it is None
(unset: mParticle reads that as production). Decimals go on the
wire as JSON numbers. ``loads`` collects every problem of a document and names each by
its JSON path, for example ``$.events[2].data.custom_event_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from typing import Any, cast, get_origin, overload

import attrs
import cattrs
import orjson
from cattrs.cols import (
    homogenous_tuple_structure_factory,
    is_mapping,
    is_sequence,
    list_structure_factory,
    mapping_structure_factory,
)
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, override

from .._errors import ModelError, PayloadError, type_name
from . import enums as _enums
from .enums import EventType
from .models import (
    EVENT_CLASSES,
    Batch,
    BreadcrumbEvent,
    Event,
)
from .unstructure import compile_unstructurers, json_default_for, unstructure_any_scalar
from .values import Scalar, UserAttributeValue, json_number

__all__ = ["OUTPUT_ONLY_BATCH_FIELDS", "dumps", "from_dict", "loads", "to_dict"]

#: Batch keys mParticle sets or uses internally; ``loads`` drops them (docs/models.md).
OUTPUT_ONLY_BATCH_FIELDS = frozenset(
    {
        "schema_version",
        "timestamp_unixtime_ms",
        "source_info",
        "batch_id",
        "sdk_version",
        "job_id",
        "origin_mpid",
        "partner_identity",
        "message_id",
        "message_type",
        "unique_id",
        "api_key",
        "api_keys",
    }
)


# --- structuring: strict primitives (cattrs' defaults would turn 12 into "12") ---------------


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type_name(value)}")
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value < 2**63:
        # JSON has one number type: 5.0 is the integer 5 (JSON Schema draft 7 agrees).
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type_name(value)}")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit in a signed 64-bit integer")
    return value


def _wire_type(cls: type, field: attrs.Attribute[Any]) -> Any:
    """The type ``loads`` checks a field against: its declared type, but ``environment``,
    which a batch may leave out (None in the model) but never sends as ``null``."""
    if cls is Batch and field.name == "environment":
        return _enums.Environment
    return field.type


def _structure_bool(value: Any, _: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {type_name(value)}")
    return value


def _structure_float(value: Any, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"expected a number, got {type_name(value)}")
    return float(value)


def _structure_decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise TypeError(f"expected a number, got {type_name(value)}")
    if isinstance(value, float):
        return Decimal(float.__repr__(value))  # a subclass's repr may not be a number's
    return Decimal(value)


def _structure_scalar(value: Any, _: object) -> Scalar:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"expected a string, number, boolean or null, got {type_name(value)}")


def _structure_user_attribute(value: Any, _: object) -> UserAttributeValue:
    if isinstance(value, list):
        return [_structure_scalar(item, Scalar) for item in value]
    return _structure_scalar(value, Scalar)


def _structure_enum(value: Any, enum_cls: type[Enum]) -> Enum:
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in enum_cls)
        raise ValueError(
            f"{value!r} is not a valid {enum_cls.__name__}; expected one of {allowed}"
        ) from None


def _with_note(exc: Exception, name: str) -> Exception:
    note = cattrs.AttributeValidationNote(f"Structuring @ attribute {name}", name, object)
    # setattr: BaseException.add_note only exists from Python 3.11.
    setattr(exc, "__notes__", [*getattr(exc, "__notes__", []), note])  # noqa: B010
    return exc


def make_converter() -> cattrs.Converter:
    """Build the package's converter; never the global one."""
    converter = cattrs.Converter(
        omit_if_default=True,
        forbid_extra_keys=True,
        detailed_validation=True,
        unstruct_collection_overrides={tuple: list, Sequence: list},
    )
    # The order matters: a hook registered later wins over an earlier one that also matches.
    _register_values(converter)
    _register_containers(converter)
    for model_cls, unstructure in compile_unstructurers(shallow=False).items():
        converter.register_unstructure_hook(model_cls, unstructure)
    _register_events(converter)
    return converter


def _register_values(converter: cattrs.Converter) -> None:
    """Strict primitives, the scalar unions and the enums."""
    converter.register_unstructure_hook(Decimal, json_number)
    for primitive, hook in (
        (str, _structure_str),
        (int, _structure_int),
        (bool, _structure_bool),
        (float, _structure_float),
        (Decimal, _structure_decimal),
    ):
        converter.register_structure_hook(primitive, hook)
    converter.register_structure_hook_func(lambda t: t == Scalar, _structure_scalar)
    converter.register_structure_hook_func(
        lambda t: t == UserAttributeValue, _structure_user_attribute
    )
    # Our enums subclass str, so each is registered by class to win over the str hook.
    for name in _enums.__all__:
        converter.register_structure_hook(getattr(_enums, name), _structure_enum)
    scalar_map = dict[str, Scalar]
    converter.register_unstructure_hook_func(
        lambda t: t in (scalar_map, scalar_map | None) or t == UserAttributeValue,
        unstructure_any_scalar,
    )


def _register_containers(converter: cattrs.Converter) -> None:
    """The model classes, JSON arrays and JSON objects."""
    converter.register_structure_hook_factory(
        attrs.has, lambda cls: _structure_attrs(cls, converter)
    )
    # cattrs would iterate a string's characters or an object's keys as a sequence, and fail
    # on a list given for a map with an AttributeError; JSON arrays and objects only.
    converter.register_structure_hook_factory(
        is_sequence, lambda t: _json_container(list, "an array", _sequence_factory(t, converter))
    )
    converter.register_structure_hook_factory(
        is_mapping,
        lambda t: _json_container(dict, "an object", mapping_structure_factory(t, converter)),
    )


def _structure_attrs(cls: type, converter: cattrs.Converter) -> Callable[[Any, type], Any]:
    # cattrs would structure a field that has an attrs converter by the converter's
    # (permissive) input type; validate by the declared wire type instead.
    overrides = {
        field.name: override(struct_hook=_hook_for(converter, _wire_type(cls, field)))
        for field in attrs.fields(attrs.resolve_types(cls))
        if field.converter is not None
    }
    generated: Callable[[Any, type], Any] = make_dict_structure_fn(
        cls, converter, **cast(Any, overrides)
    )

    def structure(value: Any, _: type) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type_name(value)}")
        try:
            return generated(value, cls)
        except ModelError as exc:
            message = f"While structuring {cls.__name__}"
            raise ClassValidationError(message, [exc], cls) from None

    return structure


def _register_events(converter: cattrs.Converter) -> None:
    """Event envelopes, dispatched on ``event_type``, and a crash report's breadcrumbs."""

    def structure_event(value: Any, _: object) -> Event:
        if not isinstance(value, dict):
            raise TypeError(f"expected an event object, got {type_name(value)}")
        errors: list[Exception] = []
        extra = set(value) - {"event_type", "data"}
        if extra:
            errors.append(ForbiddenExtraKeysError("", dict, extra))
        raw_type = value.get("event_type")
        try:
            event_cls = EVENT_CLASSES[EventType(raw_type)]
        except (ValueError, KeyError):
            allowed = ", ".join(repr(t.value) for t in EVENT_CLASSES)
            errors.append(
                _with_note(
                    ValueError(f"unknown event type {raw_type!r}; expected one of {allowed}"),
                    "event_type",
                )
            )
            raise ClassValidationError("While structuring an event", errors, dict) from None
        try:
            event = converter.structure(value.get("data", {}), event_cls)
        except (ClassValidationError, IterableValidationError, TypeError, ValueError) as exc:
            errors.append(_with_note(exc, "data"))
        if errors:
            raise ClassValidationError("While structuring an event", errors, dict)
        return event

    converter.register_structure_hook_func(lambda t: t == Event, structure_event)

    def structure_breadcrumbs(value: Any, _: object) -> tuple[BreadcrumbEvent, ...] | None:
        # A crash report's breadcrumbs are whole event envelopes, as the schema has them.
        if value is None:
            return None
        events = converter.structure(value, tuple[Event, ...])
        wrong = [index for index, event in enumerate(events) if type(event) is not BreadcrumbEvent]
        if wrong:
            raise ValueError(f"breadcrumbs {wrong} are not breadcrumb events")
        return cast(tuple[BreadcrumbEvent, ...], events)

    breadcrumbs_type = tuple[BreadcrumbEvent, ...] | None
    converter.register_structure_hook_func(lambda t: t == breadcrumbs_type, structure_breadcrumbs)


def _sequence_factory(type_: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    if get_origin(type_) is tuple:
        return homogenous_tuple_structure_factory(type_, converter)
    return list_structure_factory(type_, converter)


def _json_container(
    kind: type, name: str, hook: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], Any]:
    def structure(value: Any, type_: Any) -> Any:
        if not isinstance(value, kind):
            raise TypeError(f"expected {name}, got {type_name(value)}")
        return hook(value, type_)

    return structure


def _hook_for(converter: cattrs.Converter, wire_type: Any) -> Callable[[Any, Any], Any]:
    hook = converter.get_structure_hook(wire_type)
    return lambda value, _: hook(value, wire_type)


# --- unstructuring: one generated function per model class and shape ------------------------
_json_default = json_default_for(compile_unstructurers(shallow=True))
_converter = make_converter()
_unstructure_batch = _converter.get_unstructure_hook(Batch)


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, (ModelError, TypeError, ValueError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _problems(exc: Exception) -> list[str]:
    messages = cattrs.transform_error(exc, path="$", format_exception=_format_exception)
    # transform_error says "message @ $.path"; we put the path first, as validators do.
    problems = []
    for message in messages:
        text, _, path = message.rpartition(" @ ")
        problems.append(f"{path}: {text}" if text else message)
    return problems


def to_dict(batch: Batch) -> dict[str, Any]:
    """The batch as JSON-ready Python data (what ``dumps`` writes)."""
    return cast(dict[str, Any], _unstructure_batch(batch))


def _structure_batch(value: Any, path: str) -> Batch:
    if not isinstance(value, dict):
        raise PayloadError([f"{path}: expected a batch object, got {type_name(value)}"])
    document = {key: item for key, item in value.items() if key not in OUTPUT_ONLY_BATCH_FIELDS}
    try:
        batch = _converter.structure(document, Batch)
        # Without ``environment`` mParticle assumes production; the models' default
        # (development) is for batches built in code, so a loaded batch keeps none.
        return batch if "environment" in document else attrs.evolve(batch, environment=None)
    except (ClassValidationError, IterableValidationError) as exc:
        problems = _problems(exc)
        if path != "$":
            problems = [path + problem[1:] for problem in problems]
        raise PayloadError(problems) from None
    except (TypeError, ValueError) as exc:
        raise PayloadError([f"{path}: {exc}"]) from None


def from_dict(value: Mapping[str, Any]) -> Batch:
    """A batch from parsed JSON; raises :class:`PayloadError` listing every problem."""
    return _structure_batch(value, "$")


def kept_bytes(data: bytes) -> bytes:
    """``data`` in a buffer of its own size: for orjson output kept past the call that made it.

    orjson (3.12 and later) hands back the buffer it wrote into: 4 KB at the least, grown by
    doubling, and never shrunk. A 100-byte header kept with its batch would hold 4 KB.
    """
    return b"".join((data, b""))  # two items: join copies (one would be handed back)


@overload
def dumps(batches: Batch) -> bytes: ...
@overload
def dumps(batches: Sequence[Batch]) -> bytes: ...
def dumps(batches: Batch | Sequence[Batch]) -> bytes:
    """Serialise one batch (a JSON object) or a sequence of batches (a JSON array) to bytes."""
    # orjson walks the models itself, asking _json_default for each model and Decimal: no
    # intermediate tree is built, so nothing builds up to wake the cyclic garbage collector.
    try:
        if isinstance(batches, Batch):
            return kept_bytes(orjson.dumps(batches, default=_json_default))
        return kept_bytes(orjson.dumps(list(batches), default=_json_default))
    except orjson.JSONEncodeError as exc:
        # An int beyond 64 bits or a lone surrogate gets through the models; say so plainly.
        raise ModelError(f"the batch cannot be written as JSON: {exc}") from None


def loads(document: bytes | str) -> Batch | list[Batch]:
    """Parse a batch object or a bulk array; every problem is reported with its JSON path."""
    try:
        value = orjson.loads(document)
    except orjson.JSONDecodeError as exc:
        raise PayloadError([f"$: not valid JSON ({exc})"]) from None
    if isinstance(value, list):
        batches: list[Batch] = []
        problems: list[str] = []
        for index, item in enumerate(value):
            try:
                batches.append(_structure_batch(item, f"$[{index}]"))
            except PayloadError as exc:
                problems.extend(exc.problems)
        if problems:
            raise PayloadError(problems)
        return batches
    return _structure_batch(value, "$")
