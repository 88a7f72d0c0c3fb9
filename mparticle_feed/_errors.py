"""The exceptions mparticle_feed raises: one tree, in this one module.

Every exception a caller can catch derives from :class:`MParticleFeedError`; errors in what
the caller passed are also :class:`ValueError`, so ``except ValueError`` works too::

    MParticleFeedError
    ├── ModelError (ValueError)            a model was built with values mParticle would refuse
    ├── PayloadError (ValueError)          loads/from_dict found problems; .problems lists them
    ├── MappingError (ValueError)          a mapping or its source is wrong (built, loaded, run)
    ├── RowError (ValueError)              one row could not be mapped (strict mode)
    ├── ConfigurationError (ValueError)    bad settings; .status for refused credentials
    │   └── UploadConfigurationError       an upload stopped on one; .report says what it did
    ├── PlanFileError (ValueError)         a saved plan file is malformed or was edited
    ├── DataPlanError (ValueError)         a data plan file is malformed or unsupported, or the
    │                                      dataplans extra is missing
    ├── DataPlanViolationError (ValueError)  a row broke the data plan (``strict`` policy)
    ├── PlanRefusedError (ValueError)      a plan is superseded, too old, or would now route elsewhere
    ├── StateError                         the state store is unreadable or does not match
    │   └── StateLockedError               another run of the same sync holds the state's lock
    └── DeliveryError                      SyncReport.raise_for_failures: rows did not arrive

A broken internal invariant (a bug in this package) raises AssertionError or RuntimeError
instead, so that no ``except MParticleFeedError`` hides it. docs/exceptions.md says what to
catch where. Messages never contain the API secret or payload bodies beyond what a caller needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._delivery.report import UploadReport

__all__ = [
    "ConfigurationError",
    "DataPlanError",
    "DataPlanViolationError",
    "DeliveryError",
    "MParticleFeedError",
    "MappingError",
    "ModelError",
    "PayloadError",
    "RowError",
    "PlanFileError",
    "PlanRefusedError",
    "StateError",
    "StateLockedError",
    "UploadConfigurationError",
    "type_name",
]


class MParticleFeedError(Exception):
    """The root of every exception this package raises."""


class ModelError(MParticleFeedError, ValueError):
    """A wire model was given a value mParticle would refuse."""


class PayloadError(MParticleFeedError, ValueError):
    """A JSON document is not a valid Events API batch.

    ``problems`` holds every problem found, each as ``"$.path: message"``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(f"{len(self.problems)} problem(s) in the payload:\n  {shown}{more}")


class MappingError(MParticleFeedError, ValueError):
    """A mapping definition is wrong: an unknown field, a missing primary key, ..."""


class RowError(MParticleFeedError, ValueError):
    """One input row could not be mapped (raised only in strict mode)."""

    def __init__(
        self, *, row_number: int, primary_key: str | None, field: str, reason: str
    ) -> None:
        self.row_number = row_number
        self.primary_key = primary_key
        self.field = field
        self.reason = reason
        key = f" (primary key {primary_key!r})" if primary_key is not None else ""
        super().__init__(f"row {row_number}{key}, field {field}: {reason}")


class ConfigurationError(MParticleFeedError, ValueError):
    """Settings or credentials are wrong; retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class DeliveryError(MParticleFeedError):
    """An upload could not complete; carries the HTTP status, body and ``source_request_id`` values.

    :meth:`EventsClient.upload` and :func:`sync` do not raise it: they end each batch
    rejected or failed in their report. :meth:`SyncReport.raise_for_failures` raises it, for
    jobs (Airflow, cron) that must fail when rows did not reach mParticle.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str | None = None,
        source_request_ids: Sequence[str] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.source_request_ids = tuple(source_request_ids)
        super().__init__(message)


class StateError(MParticleFeedError):
    """The incremental-state store is corrupt, or belongs to a different mapping."""


class StateLockedError(StateError):
    """Another run of the same sync holds the state file's lock (the message names it)."""


class PlanRefusedError(MParticleFeedError, ValueError):
    """A plan file is well formed but may not be sent now.

    A later run superseded it, it is older than the allowed age, or one of its batches
    would now go to the other endpoint. Make a new plan.
    """


class PlanFileError(MParticleFeedError, ValueError):
    """A plan file cannot be sent: malformed, truncated, or changed after it was written.

    ``line`` is the 1-based line at fault (``None`` when the problem is the whole file).
    """

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source = source
        self.line = line
        self.reason = reason
        where = f"{source}, line {line}" if line is not None else source
        super().__init__(f"plan file {where}: {reason}")


class UploadConfigurationError(ConfigurationError):
    """An upload stopped on a configuration problem retrying cannot fix.

    Raised when mParticle refuses the key and secret (``status`` 401 or 403) or the server's
    TLS certificate cannot be verified (``status`` None). ``report`` holds what the run did
    before it stopped: the batches of the refused request end failed, and those not yet sent
    end pending.
    """

    def __init__(self, message: str, *, status: int | None, report: UploadReport) -> None:
        super().__init__(message, status=status)
        self.report = report


class DataPlanError(MParticleFeedError, ValueError):
    """A data plan document is malformed or uses what mParticle's plan format does not allow.

    Also raised when a plan is used without the ``dataplans`` extra installed.
    """


class DataPlanViolationError(MParticleFeedError, ValueError):
    """A batch broke the data plan and the sync's policy is ``strict``.

    ``violation`` is the first :class:`~mparticle_feed.Violation` found; ``row_number`` and
    ``primary_key`` name the row when the batch came from a mapped row.
    """

    def __init__(
        self,
        violation: object,
        *,
        row_number: int | None = None,
        primary_key: str | None = None,
    ) -> None:
        self.violation = violation
        self.row_number = row_number
        self.primary_key = primary_key
        where = ""
        if row_number is not None:
            key = f" (primary key {primary_key!r})" if primary_key is not None else ""
            where = f"row {row_number}{key}: "
        super().__init__(f"{where}{violation}")


def type_name(value: object) -> str:
    """A value's type as error messages name it: ``null`` for None, else the class name."""
    return "null" if value is None else type(value).__name__
