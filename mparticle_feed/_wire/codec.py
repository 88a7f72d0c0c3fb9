"""The wire codec: one dedicated cattrs converter behind dumps, loads, to_dict and from_dict.

Unset (None) fields are omitted; ``environment`` is always written. Decimals go on the
wire as JSON numbers. ``loads`` collects every problem of a document and names each by
its JSON path, for example ``$.events[2].data.custom_event_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from types import UnionType
from typing import Any, Union, cast, get_args, get_origin, overload

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
from .codegen import compile_function, generated_filename
from .enums import EventType
from .models import (
    EVENT_CLASSES,
    Batch,
    BreadcrumbEvent,
    Event,
)
from .sparse import SET_MASK, layout
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


class _Numbers:
    """Decimal -> its JSON number, remembered by the generated functions that own it.

    The number is a function of the numeric value alone (equal Decimals give equal numbers),
    and money repeats (prices, quantities): a dict lookup is about 50 ns against 160-240 ns
    for the conversion. Generated code reads ``known`` first and calls this on a miss.
    """

    __slots__ = ("known",)

    #: Entries kept before the table starts over: a bound on memory, not on correctness.
    LIMIT = 4096

    def __init__(self) -> None:
        self.known: dict[Decimal, int | float] = {}

    def __call__(self, value: Decimal) -> int | float:
        number = json_number(value)
        if len(self.known) >= self.LIMIT:
            self.known.clear()
        self.known[value] = number
        return number


def _unstructure_scalar(value: Any) -> Any:
    if isinstance(value, Decimal):
        return json_number(value)
    if isinstance(value, list):
        return [_unstructure_scalar(item) for item in value]
    return value


def _unstructure_scalar_map(value: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _unstructure_scalar(item) for key, item in value.items()}


# --- structuring: strict primitives (cattrs' defaults would turn 12 into "12") ---------------


def _structure_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type_name(value)}")
    return value


def _structure_int(value: Any, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type_name(value)}")
    return value


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
        return Decimal(repr(value))
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
        _unstructure_any_scalar,
    )

    def structure_attrs_factory(cls: type) -> Callable[[Any, type], Any]:
        # cattrs would structure a field that has an attrs converter by the converter's
        # (permissive) input type; validate by the declared wire type instead.
        overrides = {
            field.name: override(struct_hook=_hook_for(converter, field.type))
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

    converter.register_structure_hook_factory(attrs.has, structure_attrs_factory)
    # cattrs would iterate a string's characters or an object's keys as a sequence, and fail
    # on a list given for a map with an AttributeError; JSON arrays and objects only.
    converter.register_structure_hook_factory(
        is_sequence, lambda t: _json_container(list, "an array", _sequence_factory(t, converter))
    )
    converter.register_structure_hook_factory(
        is_mapping,
        lambda t: _json_container(dict, "an object", mapping_structure_factory(t, converter)),
    )

    for model_cls, unstructure in _compile_unstructurers(shallow=False).items():
        converter.register_unstructure_hook(model_cls, unstructure)

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
    return converter


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


def _unstructure_any_scalar(value: Any) -> Any:
    if isinstance(value, dict):
        return _unstructure_scalar_map(value)
    return _unstructure_scalar(value)


# --- unstructuring: one generated function per model class and shape ------------------------
#
# dumps is the hot path of every sync. The models record which optional fields were set (a
# bitmask, see sparse.py), and the instances of a class come in few shapes; each (class,
# shape) gets a function compiled on first sight that builds the dict in one display, reading
# only the set fields and converting only what orjson cannot write as it is (Decimal, enums,
# nested models). cattrs' generated functions do the job through per-value hooks, about 5x
# slower. On the benchmark workload (benchmarks/workload.py), dumps took 0.029 s with one
# function per class testing every field, and takes 0.017 s with these and the cached
# Decimal numbers. Each compiler owns its namespace, tables and Decimal cache.

_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
_SCALAR_TYPES = frozenset(get_args(Scalar))
_USER_ATTRIBUTE_TYPES = frozenset(get_args(UserAttributeValue))


def _unstructure_scalar_map_fast(value: Mapping[str, Any]) -> dict[str, Any]:
    # Most maps hold only plain scalars: one C-level pass proves it, then a copy suffices.
    if all(map(_PLAIN_SCALARS.__contains__, map(type, value.values()))):
        return dict(value)
    return _unstructure_scalar_map(value)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, UnionType)


def _without_none(tp: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    if not _is_union(tp):
        return tp, tp is type(None)
    args = tuple(arg for arg in get_args(tp) if arg is not type(None))
    optional = len(args) != len(get_args(tp))
    if len(args) == 1:
        return args[0], optional
    return Union[args], optional  # noqa: UP007 (a runtime-built union)


class _Compiler:
    """Writes the Python source of each model class's unstructure functions, one per shape.

    A deep function returns JSON-ready data (``to_dict``). A shallow one (``dumps``) leaves
    to orjson what it writes itself (enums, tuples, attribute maps), so it copies nothing;
    orjson calls :func:`_json_default` for the batch and for a Decimal inside a map.
    """

    def __init__(self, *, shallow: bool = False) -> None:
        self.shallow = shallow
        self.numbers = _Numbers()
        self.namespace: dict[str, Any] = {
            "_num": self.numbers,
            "_scalar": _unstructure_scalar,
            "_scalar_map": _unstructure_scalar_map_fast,
            "_event_fns": {},
            "_event_shapes": {},
            "_numbers": self.numbers.known,
        }
        self.functions: dict[type, Callable[[Any], dict[str, Any]]] = {}
        self.started: set[type] = set()
        self.tables: dict[type, dict[int, Callable[[Any], dict[str, Any]]]] = {}

    def function_name(self, cls: type) -> str:
        prefix = "_s" if self.shallow else "_u"
        return f"{prefix}_{cls.__module__.replace('.', '_')}_{cls.__qualname__}"

    def expression(self, tp: Any, value: str, depth: int = 0) -> str:
        """Source that turns ``value`` (of wire type ``tp``, not None) into what we return."""
        inner, _ = _without_none(tp)
        item = f"_x{depth}"
        if inner in (str, int, float, bool, Any):
            return value
        if inner is Decimal:
            return f"(_numbers.get({value}) or _num({value}))"
        if isinstance(inner, type) and issubclass(inner, Enum):
            return value if self.shallow else f"{value}.value"
        if attrs.has(inner):
            self.require(inner)
            # The shape's function straight from the table; the dispatcher on a new shape.
            dispatch = self.function_name(inner)
            return f"{dispatch}_shapes.get({value}.{SET_MASK}, {dispatch})({value})"
        if _is_union(inner):
            members = frozenset(get_args(inner)) | {type(None)}
            if members <= _USER_ATTRIBUTE_TYPES or members <= _SCALAR_TYPES:
                return value if self.shallow else f"_scalar({value})"
            if all(member in _EVENT_CLASS_SET for member in get_args(inner)):
                for member in get_args(inner):
                    self.require(member)
                return (
                    f"_event_shapes[{value}.__class__].get({value}.{SET_MASK}, "
                    f"_event_fns[{value}.__class__])({value})"
                )
        origin, args = get_origin(inner), get_args(inner)
        if origin in (tuple, list, Sequence) and args:
            element = self.expression(args[0], item, depth + 1)
            if element == item:
                return value if self.shallow else f"list({value})"
            return f"[{element} for {item} in {value}]"
        if origin in (dict, Mapping) and len(args) == 2:
            values_type, _ = _without_none(args[1])
            members = frozenset(get_args(values_type)) | {type(None)}
            if _is_union(values_type) and (
                members <= _USER_ATTRIBUTE_TYPES or members <= _SCALAR_TYPES
            ):
                # Shallow: orjson writes the map and calls _json_default for any Decimal in it.
                return value if self.shallow else f"_scalar_map({value})"
            element = self.expression(args[1], item, depth + 1)
            if element == item:
                return value if self.shallow else f"dict({value})"
            return f"{{_k{depth}: {element} for _k{depth}, {item} in {value}.items()}}"
        raise TypeError(f"no unstructuring rule for {tp!r}")

    def require(self, cls: type) -> None:
        # Generated code calls other classes' dispatchers by name at run time, so a class
        # only needs setting up once, whatever the order.
        if cls in self.started:
            return
        self.started.add(cls)
        table: dict[int, Callable[[Any], dict[str, Any]]] = {}
        self.tables[cls] = table

        def dispatch(model: Any) -> dict[str, Any]:
            function = table.get(model._mpf_set)
            if function is None:
                function = self.compile(cls, model._mpf_set)
            return function(model)

        self.namespace[self.function_name(cls)] = dispatch
        self.namespace[f"{self.function_name(cls)}_shapes"] = table
        self.functions[cls] = dispatch
        event_type = getattr(cls, "event_type", None)
        if isinstance(event_type, EventType):
            self.namespace["_event_fns"][cls] = dispatch
            self.namespace["_event_shapes"][cls] = table
        # Compiling the all-unset shape now resolves nested types: errors show at import.
        self.compile(cls, 0)
        for field in attrs.fields(attrs.resolve_types(cls)):
            self.expression(field.type, "v")

    def compile(self, cls: type, mask: int) -> Callable[[Any], dict[str, Any]]:
        """The function for the instances of ``cls`` whose set optional fields are ``mask``.

        Sparse models record which optional fields were set, and instances of one class
        come in few shapes; a function per shape reads only the set fields, in one dict
        display, with no test per field.
        """
        table = self.tables[cls]
        if len(table) >= _SHAPES_PER_CLASS:
            # A pathological variety of shapes: one function tests the mask field by field.
            generic = table.get(-1)
            if generic is None:
                generic = table[-1] = self.build(cls, None)
            return generic
        table[mask] = function = self.build(cls, mask)
        return function

    def build(self, cls: type, mask: int | None) -> Callable[[Any], dict[str, Any]]:
        """Compile the function for one mask, or (``None``) the one that tests every bit."""
        fields = {field.name: field for field in attrs.fields(attrs.resolve_types(cls))}
        shape = layout(cls)
        always = shape.always
        optional = list(shape.optional) if mask is None else shape.set_fields(mask)
        entries = []
        # Keys come in cattrs' order: the always-written fields first, then the set ones.
        for name in [name for name in fields if name in always] + (
            [] if mask is None else optional
        ):
            value = f"o.{name}"
            expression = self.expression(fields[name].type, value)
            if name in always and expression != value and _without_none(fields[name].type)[1]:
                expression = f"(None if {value} is None else {expression})"
            entries.append(f"{name!r}: {expression}")
        body = [f"    d = {{{', '.join(entries)}}}"]
        if mask is None:
            body.append(f"    m = o.{SET_MASK}")
            for bit, name in enumerate(optional):
                expression = self.expression(fields[name].type, f"o.{name}")
                body += [f"    if m & {1 << bit}:", f"        d[{name!r}] = {expression}"]
        event_type = getattr(cls, "event_type", None)
        if isinstance(event_type, EventType):
            body.append(f"    return {{'event_type': {event_type.value!r}, 'data': d}}")
        else:
            body.append("    return d")
        name = f"{self.function_name(cls)}_{'any' if mask is None else mask}"
        kind = "shallow" if self.shallow else "deep"
        return compile_function(
            name,
            [f"def {name}(o):", *body],
            self.namespace,
            filename=generated_filename(f"{kind} unstructure", cls),
        )


#: Shapes (sets of set optional fields) compiled per class before falling back to a generic
#: function; real data has a handful.
_SHAPES_PER_CLASS = 256


_EVENT_CLASS_SET = frozenset(EVENT_CLASSES.values())


def _compile_unstructurers(*, shallow: bool) -> dict[type, Callable[[Any], dict[str, Any]]]:
    """Model class -> its unstructure function, for the batch and every class it can hold."""
    compiler = _Compiler(shallow=shallow)
    compiler.require(Batch)
    for event_cls in EVENT_CLASSES.values():
        compiler.require(event_cls)
    return compiler.functions


def _json_default_for(
    shallow: Mapping[type, Callable[[Any], dict[str, Any]]],
) -> Callable[[Any], Any]:
    numbers = _Numbers()
    known = numbers.known

    def default(value: Any) -> Any:
        """What orjson calls for a value it cannot write itself: a Decimal or a model."""
        function = shallow.get(value.__class__)
        if function is not None:
            return function(value)
        if isinstance(value, Decimal):
            return known.get(value) or numbers(value)
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")

    return default


_json_default = _json_default_for(_compile_unstructurers(shallow=True))
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
        return _converter.structure(document, Batch)
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
            return orjson.dumps(batches, default=_json_default)
        return orjson.dumps(list(batches), default=_json_default)
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
