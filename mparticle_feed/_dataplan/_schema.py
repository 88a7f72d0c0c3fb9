"""Data-plan stage: checking a data point's JSON Schema and compiling it with the optional extra.

Validation itself is done by maintained libraries, imported only when a plan is loaded:
``fastjsonschema`` answers "valid or not" for every event (about 1.6 µs for a typical
point, against 25 µs for ``jsonschema``: see ``benchmarks/dataplan_validation.py``), and
``jsonschema`` lists every error of the few events that fail.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from .._errors import DataPlanError

__all__ = ["UNSUPPORTED_KEYWORDS", "CompiledSchema", "check_supported", "libraries"]

#: JSON Schema keywords mParticle's data plan format does not support (Data Planning API docs).
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "$ref",
        "$recursiveRef",
        "$recursiveAnchor",
        "$dynamicRef",
        "$dynamicAnchor",
        "patternProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "if",
        "then",
        "else",
        "not",
        "dependencies",
        "dependentRequired",
        "dependentSchemas",
    }
)

# Keywords whose value is one subschema, or (items) a list of them.
_SUBSCHEMA_KEYWORDS = (
    "additionalProperties",
    "items",
    "additionalItems",
    "contains",
    "propertyNames",
)

_EXTRA_HINT = "pip install 'mparticle-feed[dataplans]'"


def libraries() -> tuple[Any, Any]:
    # import_module keeps them typed Any: neither ships type information.
    try:
        fastjsonschema = importlib.import_module("fastjsonschema")
        jsonschema = importlib.import_module("jsonschema")
    except ImportError as exc:
        raise DataPlanError(
            f"data plan validation needs the 'dataplans' extra ({exc.name} is not installed): "
            f"{_EXTRA_HINT}"
        ) from None
    return fastjsonschema, jsonschema


def _subschemas(schema: Mapping[str, Any], pointer: str) -> Iterator[tuple[Any, str]]:
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for name, sub in properties.items():
            yield sub, f"{pointer}/properties/{name}"
    for keyword in _SUBSCHEMA_KEYWORDS:
        sub = schema.get(keyword)
        if isinstance(sub, list):
            for index, item in enumerate(sub):
                yield item, f"{pointer}/{keyword}/{index}"
        elif sub is not None:
            yield sub, f"{pointer}/{keyword}"


def check_supported(schema: Any, where: str, pointer: str = "#") -> None:
    """Refuse what the plan format does not allow, naming the data point and schema pointer."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise DataPlanError(
            f"{where}: schema at {pointer} is a {type(schema).__name__}, not an object"
        )
    refused = sorted(UNSUPPORTED_KEYWORDS.intersection(schema))
    if refused:
        raise DataPlanError(
            f"{where}: schema at {pointer} uses {', '.join(refused)}, which mParticle data plans "
            "do not support"
        )
    for sub, sub_pointer in _subschemas(schema, pointer):
        check_supported(sub, where, sub_pointer)


class CompiledSchema:
    """One data point's schema: a fast yes/no check, and an explainer for the failures."""

    __slots__ = ("_definition", "_fast", "_fast_error", "_where", "explainer")

    def __init__(self, definition: Mapping[str, Any], where: str) -> None:
        fastjsonschema, jsonschema = libraries()
        check_supported(definition, where)
        validator_cls = jsonschema.Draft7Validator
        try:
            validator_cls.check_schema(definition)
        except jsonschema.SchemaError as exc:
            path = "/".join(str(part) for part in exc.absolute_path)
            raise DataPlanError(
                f"{where}: invalid JSON Schema at #/{path}: {exc.message}"
            ) from None
        self._definition = dict(definition)
        self._where = where
        self.explainer = validator_cls(
            self._definition, format_checker=validator_cls.FORMAT_CHECKER
        )
        self._fast_error: type[BaseException] = fastjsonschema.JsonSchemaValueException
        # Compiled on first use: a plan of 1,000 points loads at once, and a sync meets few.
        self._fast: Callable[[Any], Any] | None = None

    def _compile(self) -> Callable[[Any], Any]:
        fastjsonschema, _ = libraries()
        try:
            fast: Callable[[Any], Any] = fastjsonschema.compile(self._definition)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise DataPlanError(f"{self._where}: schema not supported: {exc}") from None
        self._fast = fast
        return fast

    def is_valid(self, instance: Any) -> bool:
        fast = self._fast or self._compile()
        try:
            fast(instance)
        except self._fast_error:
            return False
        return True
