"""Wire stage: sparse models, a generated ``__init__`` that stores only the fields a caller set.

Why: a batch of the benchmark workload (``benchmarks/workload.py``) builds 24 model objects with about 420 fields, of which
about 90 are set. A frozen slotted attrs class writes every slot through ``object.__setattr__``
(about 45 ns each) and runs every converter, ``None`` included: building cost more than the
whole of hand-written dicts + ``json.dumps``. Here the models are frozen attrs classes without
slots: defaults live on the class, and ``__init__`` (generated once per class from
``attrs.fields``, with the same keyword-only parameters and defaults) converts and stores a
field only when its value is not the default. Reads of unset fields find the class attribute.
Measured on that workload (``python benchmarks/run_all.py``): building the models went from
0.118 s to 0.071 s, and the whole of variant (d) from 0.140 s to 0.084 s; a batch's models
take 4.3 KB instead of 8.0 KB.

Values go in with ``object.__setattr__`` rather than into ``self.__dict__``: that keeps
CPython's inline attribute values, whereas a materialised ``__dict__`` is one more
garbage-collected object per model, and the extra collections cost more than the writes save.
An int bitmask, in the ``_mpf_set`` attribute, says which optional fields were set, so
``dumps`` reads only those; :func:`layout` says which bit is which field.

State lives with what it describes: a class's layout on the class, a converter's hints
(:func:`passes_through`, :func:`same_for_values`) on the converter function.
The source is compiled by :mod:`.codegen`, so tracebacks show the generated lines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import UnionType
from typing import TYPE_CHECKING, Any, TypeVar, Union, get_args, get_origin

import attrs

from .._errors import ModelError, type_name
from .codegen import compile_function, generated_filename

__all__ = [
    "SET_MASK",
    "SparseLayout",
    "layout",
    "passes_through",
    "same_for_values",
    "sparse_model",
]

T = TypeVar("T")

#: The instance attribute holding the mask of set optional fields (0 when absent).
SET_MASK = "_mpf_set"

#: The class attribute holding a sparse model's :class:`SparseLayout`.
_LAYOUT = "_mpf_layout"

#: A model's own class attribute naming the optional fields written even when None: the
#: environment, and both sides of a change event (the 2021 schema requires the keys; null
#: says "none"). Required fields are always written anyway.
ALWAYS = "_sparse_always"

#: Converter function attributes: the exact class of input it returns unchanged (the
#: generated ``__init__`` tests the class inline and calls the converter only for other
#: inputs), and the converter it applies to every value but None.
_PASSES = "_mpf_passes_through"
_FOR_VALUES = "_mpf_for_values"


@attrs.frozen
class SparseLayout:
    """Which fields of a sparse model ``dumps`` writes, and what its set-field mask means."""

    #: Written whatever their value: required fields and the class's ``_sparse_always``.
    always: frozenset[str]
    #: The other fields, in field order: bit ``1 << i`` of the mask says field i was set.
    optional: tuple[str, ...]

    def set_fields(self, mask: int) -> list[str]:
        """The optional fields a mask says were set, in field order."""
        return [name for bit, name in enumerate(self.optional) if mask >> bit & 1]


def layout(cls: type) -> SparseLayout:
    """The layout of a class made by :func:`sparse_model`; TypeError for any other class."""
    found = cls.__dict__.get(_LAYOUT)
    if not isinstance(found, SparseLayout):
        raise TypeError(f"{cls.__qualname__} is not a sparse model")
    return found


def passes_through(kind: type, converter: Callable[..., object]) -> None:
    """Declare that ``converter`` returns any value whose exact class is ``kind`` unchanged."""
    # Not a decorator: the attrs mypy plugin only reads converters that are plain functions.
    setattr(converter, _PASSES, kind)


def same_for_values(optional: Callable[..., object], required: Callable[..., object]) -> None:
    """Declare that ``optional(value) == required(value)`` whenever ``value`` is not None."""
    # The generated __init__ has tested for None already: calling ``required`` saves a call.
    setattr(optional, _FOR_VALUES, required)


if TYPE_CHECKING:
    # Type checkers read the models as what they are, attrs.frozen classes, through the
    # attrs plugin; that is why the models spell out ``kw_only`` and ``slots``.
    from attrs import frozen as sparse_model
else:

    def sparse_model(*, kw_only: bool, slots: bool) -> Callable[[type[T]], type[T]]:
        """``attrs.frozen`` with a sparse ``__init__``: keyword-only and non-slotted only."""
        if not kw_only or slots:
            raise TypeError("sparse models are keyword-only, non-slotted attrs classes")

        def make(cls: type[T]) -> type[T]:
            if "__slots__" in cls.__dict__:
                raise TypeError(f"{cls.__name__}: sparse models are non-slotted attrs classes")
            made: type[T] = attrs.frozen(kw_only=True, slots=False)(cls)
            _install(made)
            return made

        return make


# --- type checks for fields without a converter ----------------------------------------------
#
# A field declared ``str | None`` with no converter would store whatever it is given, and
# ``dumps`` would write it: ``Batch(mpid="123")`` sent a string that our own ``loads`` refuses.
# Each such field gets a check built from its declared type; the generated ``__init__`` skips
# the call when the value's exact class is the declared one (``passes_through``).

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _check_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ModelError(f"expected a string, got {type_name(value)}")


def _check_int(value: Any) -> int:
    if value.__class__ is int and _INT64_MIN <= value <= _INT64_MAX:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"expected an integer, got {type_name(value)}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ModelError(f"{value} does not fit in a signed 64-bit integer")
    return int(value)


def _check_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ModelError(f"expected a boolean, got {type_name(value)}")


def _check_model(cls: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, cls):
            return value
        raise ModelError(f"expected a {cls.__name__}, got {type_name(value)}")

    return check


def _check_map(
    key_check: Callable[[Any], Any], value_check: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ModelError(f"expected an object (a mapping), got {type_name(value)}")
        out = {}
        for key, item in value.items():
            try:
                out[key_check(key)] = value_check(item)
            except ModelError as exc:
                raise ModelError(f"[{key!r}]: {exc}") from None
        return out

    return check


def _without_none(tp: Any) -> Any:
    if isinstance(tp, UnionType) or get_origin(tp) is Union:
        args = [arg for arg in get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _check_for(tp: Any) -> tuple[Callable[[Any], Any], type | None]:
    """The check of a declared type, and the exact class it returns unchanged (if any)."""
    inner = _without_none(tp)
    if inner is not tp:
        # Only always-written fields are converted when None: both sides of a change event.
        check, kind = _check_for(inner)
        return (lambda value: None if value is None else check(value)), kind
    simple = {str: _check_str, bool: _check_bool}
    if inner in simple:
        return simple[inner], inner
    if inner is int:
        return _check_int, None  # the range is checked for exact ints too
    if isinstance(inner, type) and attrs.has(inner):
        return _check_model(inner), inner
    if get_origin(inner) is dict:
        key_type, value_type = get_args(inner)
        return _check_map(_check_for(key_type)[0], _check_for(value_type)[0]), None
    raise TypeError(f"no construction check for fields of type {tp!r}")


def _naming(
    model: str, checks: list[tuple[str, Any, Callable[[Any], Any]]]
) -> Callable[[ModelError, tuple[Any, ...]], None]:
    """What a generated ``__init__`` calls when a conversion fails: find the field (each
    converter runs again on its argument; converters are pure) and put its name first in the
    error's message. Only on failure, so a successful ``__init__`` pays nothing for it."""

    def name(error: ModelError, values: tuple[Any, ...]) -> None:
        for (field, skip, convert), value in zip(checks, values, strict=True):
            if value is skip:
                continue
            try:
                convert(value)
            except ModelError:
                error.args = (f"{model}.{field}: {error}", *error.args[1:])
                return

    return name


#: Marks a field converted whatever its value (required and always-written fields).
_NEVER = object()


def _unchecked(value: Any) -> Any:
    return value


def _unset(name: str) -> str:
    return f"_default_{name}"


def _install(cls: type) -> None:
    if "__slots__" in cls.__dict__ or not attrs.has(cls):
        raise TypeError(f"{cls.__name__}: sparse models are non-slotted attrs classes")
    if hasattr(cls, "__attrs_pre_init__"):
        raise TypeError(f"{cls.__name__}: __attrs_pre_init__ is not supported by sparse models")
    fields = attrs.fields(cls)
    always: frozenset[str] = frozenset(cls.__dict__.get(ALWAYS, ()))
    unknown = always - {field.name for field in fields}
    if unknown:
        raise TypeError(f"{cls.__name__}: always-written fields {sorted(unknown)} do not exist")
    namespace: dict[str, Any] = {"_set": object.__setattr__, "_ModelError": ModelError}
    types = {field.name: field.type for field in attrs.fields(attrs.resolve_types(cls))}
    #: (field, the value that is not converted, the converter): to name a failing field.
    checks: list[tuple[str, Any, Callable[[Any], Any]]] = []
    optional: list[str] = []
    parameters: list[str] = []
    first: list[str] = []
    rest: list[str] = []
    for field in fields:
        _check_supported(cls, field)
        name = field.name
        value = _converted(field, namespace, types[name])
        unconverted = None if field.default is None and name not in always else _NEVER
        checks.append((name, unconverted, namespace.get(f"_convert_{name}", _unchecked)))
        if field.default is attrs.NOTHING:
            parameters.append(name)
            first.append(f"        _set(self, {name!r}, {value})")
            continue
        default = field.default
        if default is None:
            parameters.append(f"{name}=None")
            test = f"{name} is not None"
        else:
            namespace[_unset(name)] = default
            parameters.append(f"{name}={_unset(name)}")
            test = f"{name} is not {_unset(name)}"
        # Unset fields read the class attribute: the converted default.
        converted = default if field.converter is None else field.converter(default)
        if converted is not None and name not in always:
            # dumps leaves unset optional fields out, which is only right when they are None.
            raise TypeError(f"{cls.__name__}.{name}: a non-None default must be always written")
        setattr(cls, name, converted)
        if name in always:
            first.append(f"        _set(self, {name!r}, {value})")
        else:
            rest += [
                f"        if {test}:",
                f"            _set(self, {name!r}, {value})",
                f"            m |= {1 << len(optional)}",
            ]
            optional.append(name)
    required = {field.name for field in fields if field.default is attrs.NOTHING}
    setattr(cls, _LAYOUT, SparseLayout(always=always | required, optional=tuple(optional)))
    setattr(cls, SET_MASK, 0)
    # A failing conversion gets its field's name (the try costs nothing until something
    # raises); the bare raise keeps the traceback at the line that failed.
    namespace["_name"] = _naming(cls.__name__, checks)
    arguments = ", ".join(name for name, _, _ in checks)
    lines = [
        f"def __init__(self, *, {', '.join(parameters)}):",
        "    try:",
        *first,
        "        m = 0",
        *rest,
        "    except _ModelError as e:",
        f"        _name(e, ({arguments},))",
        "        raise",
    ]
    lines += ["    if m:", f"        _set(self, {SET_MASK!r}, m)"]
    if hasattr(cls, "__attrs_post_init__"):
        lines.append("    self.__attrs_post_init__()")
    init = compile_function(
        "__init__", lines, namespace, filename=generated_filename("sparse __init__", cls)
    )
    original = cls.__init__
    init.__annotations__ = dict(original.__annotations__)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = original.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 (mypy refuses assigning a method)


def _check_supported(cls: type, field: attrs.Attribute[Any]) -> None:
    if (
        not field.init
        or field.validator is not None
        or field.alias != field.name
        or isinstance(field.default, attrs.Factory)  # type: ignore[arg-type]
        or (field.converter is not None and not callable(field.converter))
        or isinstance(field.converter, attrs.Converter)
    ):
        raise TypeError(f"{cls.__name__}.{field.name}: not supported by sparse models")


def _converted(field: attrs.Attribute[Any], namespace: dict[str, Any], declared: Any) -> str:
    """The expression ``__init__`` stores for ``field``, its helpers put in ``namespace``."""
    name = field.name
    converter = field.converter
    if converter is None:
        # No converter: the declared type's check (see "type checks" above).
        check, exact = _check_for(declared)
        namespace[f"_convert_{name}"] = check
        if exact is None:
            return f"_convert_{name}({name})"
        namespace[f"_kind_{name}"] = exact
        return f"({name} if {name}.__class__ is _kind_{name} else _convert_{name}({name}))"
    if field.default is None:
        converter = getattr(converter, _FOR_VALUES, converter)
    namespace[f"_convert_{name}"] = converter
    call = f"_convert_{name}({name})"
    kind = getattr(field.converter, _PASSES, None)
    if kind is None:
        return call
    namespace[f"_kind_{name}"] = kind
    return f"({name} if {name}.__class__ is _kind_{name} else {call})"
