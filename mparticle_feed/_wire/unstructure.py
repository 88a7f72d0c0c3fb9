"""Wire stage: the generated functions behind ``dumps`` and ``to_dict``.

``dumps`` is the hot path of every sync. Each model class gets one function per shape (set of
set optional fields), compiled through :mod:`.codegen` on first sight: see the comment above
:class:`_Compiler`. The codec (:mod:`.codec`) registers the deep functions with its cattrs
converter (``to_dict``) and hands orjson the shallow ones (``dumps``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from types import UnionType
from typing import Any, Union, get_args, get_origin

import attrs

from .codegen import compile_function, generated_filename
from .enums import EventType
from .models import EVENT_CLASSES, Batch
from .sparse import SET_MASK, layout
from .values import Scalar, UserAttributeValue, json_number

__all__ = [
    "SHAPES_PER_CLASS",
    "compile_unstructurers",
    "json_default_for",
    "unstructure_any_scalar",
]


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


def unstructure_any_scalar(value: Any) -> Any:
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
        if len(table) >= SHAPES_PER_CLASS:
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
        # Left out when None (Batch.environment: None means production to mParticle).
        for name in sorted(cls.__dict__.get("_omitted_when_none", ())):
            body.append(f"    if o.{name} is None: del d[{name!r}]")
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
SHAPES_PER_CLASS = 256


_EVENT_CLASS_SET = frozenset(EVENT_CLASSES.values())


def compile_unstructurers(*, shallow: bool) -> dict[type, Callable[[Any], dict[str, Any]]]:
    """Model class -> its unstructure function, for the batch and every class it can hold."""
    compiler = _Compiler(shallow=shallow)
    compiler.require(Batch)
    for event_cls in EVENT_CLASSES.values():
        compiler.require(event_cls)
    return compiler.functions


def json_default_for(
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
