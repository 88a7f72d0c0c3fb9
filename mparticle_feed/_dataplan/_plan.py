"""Data-plan stage: loading mParticle data plans (whole plans or one version) and choosing a version.

The documents are those the Data Planning API and mParticle's UI export:

* a whole plan: ``data_plan_id``, ``data_plan_versions[]``, each version with its
  ``activated_environment`` (``none``, ``development``, or ``production``, which is active in
  both environments);
* one version: ``version``, ``version_document.data_points[]`` and, for the block settings,
  ``settings.validation_actions`` (beside ``version_document`` or inside it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson

from .._errors import DataPlanError
from .._wire.common import DataPlan
from .._wire.enums import Environment
from .._wire.models import Batch
from ._schema import CompiledSchema, libraries
from ._types import (
    BATCH_MATCH_TYPES,
    EVENT_MATCH_TYPES,
    DataPlanMatch,
    ValidationActions,
    Violation,
)
from ._validate import PlanValidator

__all__ = ["DataPlanVersion", "DataPoint", "LoadedDataPlan", "load_data_plan"]

_ACTIVATED = ("none", "development", "production")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise DataPlanError(f"{where} is a {type(value).__name__}, expected an object")
    return value


@attrs.frozen(kw_only=True)
class DataPoint:
    """One planned event, or the batch's planned user attributes or identities."""

    match: DataPlanMatch
    #: The JSON Schema (``validator.definition``), rooted at the event or attribute map.
    schema: dict[str, Any] = attrs.field(factory=dict)
    description: str | None = None

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], where: str = "data point") -> DataPoint:
        value = _mapping(value, where)
        match = _mapping(value.get("match"), f"{where}.match")
        match_type = match.get("type")
        if not isinstance(match_type, str) or (
            match_type not in EVENT_MATCH_TYPES and match_type not in BATCH_MATCH_TYPES
        ):
            known = ", ".join([*EVENT_MATCH_TYPES, *BATCH_MATCH_TYPES])
            raise DataPlanError(f"{where}.match.type is {match_type!r}; expected one of {known}")
        criteria = _mapping(match.get("criteria") or {}, f"{where}.match.criteria")
        for name in EVENT_MATCH_TYPES.get(match_type, ()):
            if not isinstance(criteria.get(name), str) or not criteria[name]:
                raise DataPlanError(f"{where}.match.criteria.{name} is required for {match_type}")
        validator = _mapping(value.get("validator"), f"{where}.validator")
        if validator.get("type") != "json_schema":
            raise DataPlanError(
                f"{where}.validator.type is {validator.get('type')!r}; only 'json_schema' exists"
            )
        definition = validator.get("definition", {})
        _mapping(definition, f"{where}.validator.definition")
        description = value.get("description")
        return cls(
            match=DataPlanMatch(type=match_type, criteria=criteria),
            schema=dict(definition),
            description=description if isinstance(description, str) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        match: dict[str, Any] = {"type": self.match.type, "criteria": dict(self.match.criteria)}
        point: dict[str, Any] = {
            "match": match,
            "validator": {"type": "json_schema", "definition": self.schema},
        }
        if self.description is not None:
            point["description"] = self.description
        return point


def _compile(points: Sequence[DataPoint], actions: ValidationActions, where: str) -> PlanValidator:
    libraries()  # even a plan without points is a plan in use: say now what is missing
    events: dict[tuple[str, ...], tuple[DataPlanMatch, CompiledSchema]] = {}
    batch_level: dict[str, tuple[DataPlanMatch, CompiledSchema]] = {}
    for index, point in enumerate(points):
        point_where = f"{where}data_points[{index}] ({point.match})"
        compiled = CompiledSchema(point.schema, point_where)
        if point.match.type in BATCH_MATCH_TYPES:
            if point.match.type in batch_level:
                raise DataPlanError(f"{point_where}: a second {point.match.type} data point")
            batch_level[point.match.type] = (point.match, compiled)
            continue
        key = point.match.key
        if key in events:
            raise DataPlanError(f"{point_where}: a second data point with the same match")
        events[key] = (point.match, compiled)
    return PlanValidator(
        events, batch_level.get("user_attributes"), batch_level.get("user_identities"), actions
    )


@attrs.frozen(kw_only=True)
class DataPlanVersion:
    """One version of a data plan: its data points and block settings.

    Build it with :meth:`from_dict` (or :func:`load_data_plan`); loading compiles every
    schema, so it needs the ``dataplans`` extra (``jsonschema`` and ``fastjsonschema``).
    """

    data_points: tuple[DataPoint, ...]
    plan_id: str | None = None
    version: int | None = None
    #: ``none``, ``development`` or ``production`` (active in production and development).
    activated_environment: str = "none"
    validation_actions: ValidationActions = attrs.field(factory=ValidationActions)
    description: str | None = None
    _validator: PlanValidator = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.activated_environment not in _ACTIVATED:
            raise DataPlanError(
                f"activated_environment is {self.activated_environment!r}; expected one of "
                + ", ".join(_ACTIVATED)
            )
        where = "" if self.version is None else f"version {self.version}: "
        validator = _compile(self.data_points, self.validation_actions, where)
        object.__setattr__(self, "_validator", validator)

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], *, plan_id: str | None = None) -> DataPlanVersion:
        """One version as the API returns it, or a bare ``version_document``."""
        value = _mapping(value, "data plan version")
        document = value.get("version_document", value if "data_points" in value else None)
        document = _mapping(document, "version_document")
        version = value.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise DataPlanError(f"version is {version!r}, expected an integer")
        where = "" if version is None else f"version {version}: "
        raw_points = document.get("data_points")
        if not isinstance(raw_points, list):
            raise DataPlanError(f"{where}version_document.data_points must be a list")
        points = tuple(
            DataPoint.from_dict(point, f"{where}data_points[{index}]")
            for index, point in enumerate(raw_points)
        )
        settings = value.get("settings", document.get("settings")) or {}
        settings = _mapping(settings, f"{where}settings")
        try:
            actions = ValidationActions.from_dict(
                _mapping(settings.get("validation_actions") or {}, "validation_actions")
            )
        except DataPlanError as exc:
            raise DataPlanError(f"{where}{exc}") from None
        found_id = value.get("data_plan_id", plan_id)
        activated = value.get("activated_environment") or "none"
        description = value.get("version_description")
        return cls(
            data_points=points,
            plan_id=found_id if isinstance(found_id, str) else None,
            version=version,
            activated_environment=activated,
            validation_actions=actions,
            description=description if isinstance(description, str) else None,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The compiled validators do not pickle; a distributed run recompiles on each worker.
        return (_rebuild_version, (self.to_dict(),))

    def to_dict(self) -> dict[str, Any]:
        """The version in the API's shape (``from_dict(to_dict())`` gives an equal version)."""
        value: dict[str, Any] = {
            "activated_environment": self.activated_environment,
            "version_document": {"data_points": [point.to_dict() for point in self.data_points]},
            "settings": {"validation_actions": self.validation_actions.to_dict()},
        }
        if self.plan_id is not None:
            value["data_plan_id"] = self.plan_id
        if self.version is not None:
            value["version"] = self.version
        if self.description is not None:
            value["version_description"] = self.description
        return value

    def is_active_in(self, environment: Environment | str) -> bool:
        env = Environment(environment)
        if env is Environment.PRODUCTION:
            return self.activated_environment == "production"
        return self.activated_environment in ("development", "production")

    def tag(self) -> DataPlan:
        """The ``context.data_plan`` that names this version."""
        if self.plan_id is None:
            raise DataPlanError("this plan version has no data_plan_id to tag batches with")
        return DataPlan(plan_id=self.plan_id, plan_version=self.version)

    def validate(self, batch: Batch) -> list[Violation]:
        """Every way ``batch`` breaks this version, in event order, batch-level ones last."""
        return self._validator.validate(batch)


def _rebuild_version(document: dict[str, Any]) -> DataPlanVersion:
    return DataPlanVersion.from_dict(document)


@attrs.frozen(kw_only=True)
class LoadedDataPlan:
    """A data plan loaded from mParticle's export, with the rule for picking a version.

    ``version`` pins one version; otherwise each batch is validated against the version
    its ``context.data_plan.plan_version`` names, or else the latest version active in the
    batch's environment, as mParticle does.
    """

    versions: tuple[DataPlanVersion, ...]
    plan_id: str | None = None
    name: str | None = None
    version: int | None = None
    #: The file the plan was loaded from (what a mapping file names); not part of equality.
    source: str | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.versions:
            raise DataPlanError("a data plan needs at least one version")
        numbers = [v.version for v in self.versions if v.version is not None]
        if len(numbers) != len(set(numbers)):
            raise DataPlanError(f"the plan lists a version twice: {sorted(numbers)}")
        if self.version is not None and self.version not in numbers:
            raise DataPlanError(
                f"the plan has no version {self.version} (it has {', '.join(map(str, sorted(numbers))) or 'none numbered'})"
            )

    @classmethod
    def from_dict(cls, value: Mapping[str, Any], *, version: int | None = None) -> LoadedDataPlan:
        """A whole plan (``data_plan_versions``) or one version (``version_document``)."""
        value = _mapping(value, "data plan")
        if "data_plan_versions" in value:
            plan_id = value.get("data_plan_id")
            plan_id = plan_id if isinstance(plan_id, str) else None
            raw = value["data_plan_versions"]
            if not isinstance(raw, list):
                raise DataPlanError("data_plan_versions must be a list")
            versions = tuple(DataPlanVersion.from_dict(item, plan_id=plan_id) for item in raw)
            name = value.get("data_plan_name")
            return cls(
                versions=versions,
                plan_id=plan_id,
                name=name if isinstance(name, str) else None,
                version=version,
            )
        single = DataPlanVersion.from_dict(value)
        if version is not None and single.version is not None and version != single.version:
            raise DataPlanError(f"the file holds version {single.version}, not {version}")
        # One version is the version to use, whatever it is activated in.
        return cls(versions=(single,), plan_id=single.plan_id, version=single.version)

    def version_for(
        self, environment: Environment | str, plan_version: int | None = None
    ) -> DataPlanVersion:
        """The version that validates a batch in ``environment`` (tagged ``plan_version``)."""
        wanted = self.version if self.version is not None else plan_version
        if wanted is not None:
            for candidate in self.versions:
                if candidate.version == wanted:
                    return candidate
            raise DataPlanError(f"plan {self.plan_id!r} has no version {wanted}")
        if len(self.versions) == 1:
            return self.versions[0]
        active = [v for v in self.versions if v.is_active_in(environment)]
        if not active:
            raise DataPlanError(
                f"no version of plan {self.plan_id!r} is active in {Environment(environment).value}; "
                "activate one or pin a version"
            )
        return max(active, key=lambda v: v.version or 0)

    def _version_of(self, batch: Batch) -> DataPlanVersion:
        tagged = batch.context.data_plan if batch.context is not None else None
        plan_version = None
        if tagged is not None and tagged.plan_id in (self.plan_id, None):
            plan_version = tagged.plan_version
        # A batch without environment is production to mParticle.
        return self.version_for(batch.environment or Environment.PRODUCTION, plan_version)

    def tag(self, environment: Environment | str = Environment.DEVELOPMENT) -> DataPlan:
        """The ``context.data_plan`` for batches in ``environment``: the plan id and the version chosen."""
        return self.version_for(environment).tag()

    def validate(self, batch: Batch) -> list[Violation]:
        """Every way ``batch`` breaks the plan version that applies to it."""
        return self._version_of(batch).validate(batch)


def load_data_plan(path: str | Path, *, version: int | None = None) -> LoadedDataPlan:
    """Load a data plan exported from mParticle (a ``.json`` file: a whole plan or one version).

    ``version`` pins a version of a whole plan. Needs the ``dataplans`` extra.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataPlanError(f"cannot read data plan file {path}: {exc.strerror}") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DataPlanError(f"{path} is not valid JSON: {exc}") from None
    try:
        plan = LoadedDataPlan.from_dict(document, version=version)
    except DataPlanError as exc:
        raise DataPlanError(f"{path}: {exc}") from None
    return attrs.evolve(plan, source=str(path))
