"""Mapping stage: tag mapped batches with the mapping's data plan and validate them, row by row.

A mapping that names a plan (``data_plan=``) gets its batches tagged with
``context.data_plan`` (the plan id and the version chosen for the mapping's environment),
and every batch validated against that version as it leaves the mapping. The sync's
policy decides what a violation does:

* ``report``: the batch goes out as mapped; each violation is listed with its row.
* ``block``: what mParticle would do, done before sending. A blocked event rejects its
  row, a blocked batch every row of the batch (the violation is the reason); a blocked
  attribute is left out of the batch and its row, still accepted, lists the violation.
* ``strict``: the first violation raises :class:`DataPlanViolationError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import attrs
import orjson

from .._dataplan._blocking import apply_blocks
from .._dataplan._plan import DataPlanVersion, LoadedDataPlan, load_data_plan
from .._dataplan._types import DataPlanMatch, Violation, ViolationAction, ViolationType
from .._errors import ConfigurationError, DataPlanError, DataPlanViolationError
from .._wire.common import Context
from .._wire.enums import Environment
from .._wire.models import Batch
from .provenance import RowProblem, RowRef, SourcedBatch, Stage, part_rows

__all__ = [
    "DATA_PLAN_POLICIES",
    "DataPlanPolicy",
    "DataPlanStep",
    "RowViolation",
    "as_data_plan",
    "data_plan_fingerprint",
    "violation_from_record",
    "violation_record",
]

#: What a violation does to a sync: list it, do what mParticle would do, or stop.
DataPlanPolicy = Literal["report", "block", "strict"]
DATA_PLAN_POLICIES: tuple[str, ...] = ("report", "block", "strict")


@attrs.frozen(kw_only=True)
class RowViolation:
    """A data-plan violation and the input row whose data broke the plan.

    ``dropped`` is True when the sync's policy was ``block`` and the data was left out of
    what is sent (the row's event, the attribute, or the whole batch), as mParticle would.
    A batch-level violation (user attributes, identities) is listed for every row of the batch.
    """

    row: RowRef
    violation: Violation
    dropped: bool = False

    @property
    def field(self) -> str | None:
        """The violation's place as a field path (``custom_attributes.coupon``), None for a whole event."""
        return field_path(self.violation.pointer)

    @property
    def reason(self) -> str:
        """The violation in words, for this row (without the event's index in its batch)."""
        return row_text(self.violation)

    def __str__(self) -> str:
        dropped = " (dropped)" if self.dropped else ""
        return f"row {self.row.row_number}: {self.reason}{dropped}"


def row_text(violation: Violation) -> str:
    """``str(violation)`` without ``events[i] ``: a row has one event, its batch index says nothing."""
    text = str(violation)
    if violation.event_index is not None:
        text = text.removeprefix(f"events[{violation.event_index}] ")
    return text


def field_path(pointer: str) -> str | None:
    """``#/data/custom_attributes/a~1b`` → ``custom_attributes.a/b``; ``#`` → None."""
    if pointer in ("", "#"):
        return None
    parts = [part.replace("~1", "/").replace("~0", "~") for part in pointer[2:].split("/")]
    if parts and parts[0] == "data":
        parts = parts[1:]  # an event's fields are its data's: mapping fields are named so
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() and path else (f".{part}" if path else part)
    return path or None


def violation_record(item: RowViolation) -> dict[str, Any]:
    """One row's violation as a JSON-ready record (a line of a rejects or plan file)."""
    violation = item.violation
    return {
        "outcome": "violation",
        "row_number": item.row.row_number,
        "primary_key": item.row.primary_key,
        "stage": str(Stage.DATA_PLAN),
        "reason": item.reason,
        "field": item.field,
        "dropped": item.dropped,
        "violation": {
            "event_index": violation.event_index,
            "match": {"type": violation.match.type, "criteria": dict(violation.match.criteria)},
            "error_type": str(violation.error_type),
            "pointer": violation.pointer,
            "keyword": violation.keyword,
            "expected": violation.expected,
            "actual": violation.actual,
            "action": str(violation.action),
        },
    }


def as_data_plan(value: Any) -> LoadedDataPlan | None:
    """The mapping's ``data_plan``: a loaded plan, one version, a file path, or ``{path, version}``."""
    if value is None or isinstance(value, LoadedDataPlan):
        return value
    if isinstance(value, DataPlanVersion):
        return LoadedDataPlan(versions=(value,), plan_id=value.plan_id, version=value.version)
    if isinstance(value, (str, PathLike)):
        return load_data_plan(Path(value))
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"path", "version"})
        if unknown:
            raise DataPlanError(
                f"data_plan: unknown key(s) {', '.join(unknown)}; expected path and version"
            )
        path, version = value.get("path"), value.get("version")
        if not isinstance(path, (str, PathLike)):
            raise DataPlanError("data_plan.path must be the plan file's path (text)")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise DataPlanError(f"data_plan.version is {version!r}, expected an integer")
        return load_data_plan(Path(path), version=version)
    raise DataPlanError(
        f"data_plan is a {type(value).__name__}; expected a plan from load_data_plan(), "
        "a DataPlanVersion, a file path or {path, version}"
    )


def chosen_version(plan: LoadedDataPlan, environment: Environment) -> DataPlanVersion:
    """The version a mapping in ``environment`` tags and validates with (it must be taggable)."""
    version = plan.version_for(environment)
    version.tag()  # no data_plan_id: nothing to tag, and mParticle would not validate
    return version


def data_plan_fingerprint(plan: LoadedDataPlan, environment: Environment) -> dict[str, Any]:
    """What of the plan counts for a mapping's fingerprint: the tag and the version's content.

    Not the file's path: moving the file changes nothing that is sent.
    """
    version = chosen_version(plan, environment)
    document = orjson.dumps(version.to_dict(), option=orjson.OPT_SORT_KEYS)
    return {
        "plan_id": version.plan_id,
        "version": version.version,
        "sha256": hashlib.sha256(document).hexdigest(),
    }


def _tagged(batch: Batch, context: Context) -> Batch:
    return attrs.evolve(batch, context=context)


class DataPlanStep:
    """Tags and validates mapped batches; see the module docstring for the policies.

    ``on_reject`` receives each row a block rejects; ``violations`` lists every violation
    found, in order, with its row.
    """

    def __init__(
        self,
        plan: LoadedDataPlan,
        environment: Environment,
        *,
        policy: str = "report",
        on_reject: Callable[[RowProblem], None],
        on_drop: Callable[[], None] = lambda: None,
    ) -> None:
        if policy not in DATA_PLAN_POLICIES:
            raise ConfigurationError(
                f"data_plan_policy is {policy!r}; expected one of {', '.join(DATA_PLAN_POLICIES)}"
            )
        self.version = chosen_version(plan, environment)
        self.tag = self.version.tag()
        self.policy = policy
        self.on_reject = on_reject
        self.on_drop = on_drop
        self.violations: list[RowViolation] = []

    def __call__(self, batches: Iterable[SourcedBatch]) -> Iterator[SourcedBatch]:
        tag = self.tag
        tag_only = Context(data_plan=tag)  # frozen: one for every batch without a context
        validate = self.version.validate
        for sourced in batches:
            batch = sourced.batch
            context = batch.context
            if context is None:
                context = tag_only
            elif context.data_plan != tag:
                context = attrs.evolve(context, data_plan=tag)
            batch = _tagged(batch, context)
            violations = validate(batch)
            if not violations:
                yield SourcedBatch(batch=batch, event_rows=sourced.event_rows, rows=sourced.rows)
                continue
            tagged = SourcedBatch(batch=batch, event_rows=sourced.event_rows, rows=sourced.rows)
            if self.policy == "strict":
                first = violations[0]
                row = self._rows_of(tagged, first)[0]
                raise DataPlanViolationError(
                    first, row_number=row.row_number, primary_key=row.primary_key
                )
            block = self.policy == "block"
            for violation in violations:
                for row in self._rows_of(tagged, violation):
                    self.violations.append(
                        RowViolation(
                            row=row, violation=violation, dropped=block and violation.blocked
                        )
                    )
            if not block:
                yield tagged
                continue
            kept = self._block(tagged, violations)
            if kept is None:
                self.on_drop()
            else:
                yield kept

    @staticmethod
    def _rows_of(sourced: SourcedBatch, violation: Violation) -> tuple[RowRef, ...]:
        if violation.event_index is None:
            return sourced.rows
        return (sourced.event_rows[violation.event_index],)

    def _reject(self, row: RowRef, violation: Violation) -> None:
        self.on_reject(
            RowProblem(
                row=row,
                stage=Stage.DATA_PLAN,
                reason=f"blocked by the data plan: {row_text(violation)}",
                field=field_path(violation.pointer),
            )
        )

    def _block(self, sourced: SourcedBatch, violations: list[Violation]) -> SourcedBatch | None:
        blocking = [v for v in violations if v.blocked]
        if not blocking:
            return sourced
        for violation in blocking:
            if violation.action is ViolationAction.BLOCK_BATCH:
                for row in sourced.rows:
                    self._reject(row, violation)
                return None
        batch = sourced.batch
        events = batch.events or ()
        reasons: dict[int, Violation] = {}
        for violation in blocking:
            if (
                violation.action is ViolationAction.BLOCK_EVENT
                and violation.event_index is not None
            ):
                reasons.setdefault(violation.event_index, violation)
        kept = apply_blocks(batch, violations)
        assert kept is not None  # only a blocked batch is dropped whole
        if len(kept.events or ()) != len(events) - len(reasons):
            # Removing an unplanned attribute the model needs leaves an event that cannot
            # stand; mParticle would drop it, so its row goes with the attribute as reason.
            for index, event in enumerate(events):
                if index in reasons:
                    continue
                own = [v for v in blocking if v.event_index == index]
                alone = apply_blocks(
                    Batch(events=(event,)), [attrs.evolve(v, event_index=0) for v in own]
                )
                if own and (alone is None or not alone.events):
                    reasons[index] = own[0]
        for index, violation in sorted(reasons.items()):
            self._reject(sourced.event_rows[index], violation)
        if not reasons:
            return SourcedBatch(batch=kept, event_rows=sourced.event_rows, rows=sourced.rows)
        kept_rows = tuple(row for i, row in enumerate(sourced.event_rows) if i not in reasons)
        rows = part_rows(sourced, kept_rows)
        if not rows:
            return None
        if not kept_rows:
            # Only rows that gave user data are left: their batch goes without events.
            kept = attrs.evolve(kept, events=None)
        return SourcedBatch(batch=kept, event_rows=kept_rows, rows=rows)


def violation_from_record(record: Mapping[str, Any]) -> RowViolation:
    """Read back what :func:`violation_record` wrote; raises ValueError naming what is wrong."""
    number, key = record.get("row_number"), record.get("primary_key")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise ValueError(f"row_number {number!r} is not a row number")
    if key is not None and not isinstance(key, str):
        raise ValueError(f"primary_key {key!r} is not text")
    found = record.get("violation")
    if not isinstance(found, Mapping):
        raise ValueError("a violation record needs a 'violation' object")
    match = found.get("match")
    if not isinstance(match, Mapping) or not isinstance(match.get("type"), str):
        raise ValueError("'violation.match' needs a 'type'")
    criteria = match.get("criteria") or {}
    index = found.get("event_index")
    texts = {name: found.get(name) for name in ("keyword", "expected", "actual")}
    if (
        not isinstance(criteria, Mapping)
        or not (index is None or (isinstance(index, int) and not isinstance(index, bool)))
        or not isinstance(found.get("pointer"), str)
        or not all(value is None or isinstance(value, str) for value in texts.values())
        or not isinstance(record.get("dropped", False), bool)
    ):
        raise ValueError("'violation' has a field of the wrong type")
    violation = Violation(
        event_index=index,
        match=DataPlanMatch(type=match["type"], criteria=criteria),
        error_type=ViolationType(found.get("error_type")),
        pointer=found["pointer"],
        action=ViolationAction(found.get("action")),
        **texts,
    )
    return RowViolation(
        row=RowRef(number, key), violation=violation, dropped=bool(record.get("dropped"))
    )
