"""What became of a row or a batch: the one status type (delivery stage).

The client reports a batch's status; a sync keeps, per input row, the worst status of the
batches holding it (one byte a row, :attr:`OutcomeStatus.code`); reports and plan files
write the status's string value.
"""

from __future__ import annotations

import enum
from typing import Literal

from .._errors import ConfigurationError

__all__ = ["BATCH_STATUSES", "NO_OUTCOME", "OutcomeStatus", "StatusName", "as_status"]


class OutcomeStatus(str, enum.Enum):
    """A row's or a batch's outcome; each member equals its old string (``== "accepted"``).

    Members are in order of severity: a row in several batches ends with the worst.
    """

    #: A sync row whose data had not changed since it was last accepted (never a batch's).
    UNCHANGED = "unchanged"
    #: mParticle answered 202 (accepted, not necessarily processed).
    ACCEPTED = "accepted"
    #: Never settled: the run stopped first.
    PENDING = "pending"
    #: Retries exhausted, the deadline passed, or the request could not be sent.
    FAILED = "failed"
    #: Refused by mParticle (4xx) or turned away locally.
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value

    @property
    def code(self) -> int:
        """The byte a sync keeps per row: higher is worse; 0 (:data:`NO_OUTCOME`) is none."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> OutcomeStatus | None:
        """The status of a row's byte; None for :data:`NO_OUTCOME`."""
        return None if code == NO_OUTCOME else _BY_CODE[code]


#: A row's byte before any outcome.
NO_OUTCOME = 0
_CODES = {status: number for number, status in enumerate(OutcomeStatus, start=1)}
_BY_CODE = {number: status for status, number in _CODES.items()}

#: The statuses a batch can end with, in the order reports show them.
BATCH_STATUSES = (
    OutcomeStatus.ACCEPTED,
    OutcomeStatus.REJECTED,
    OutcomeStatus.FAILED,
    OutcomeStatus.PENDING,
)

#: A status as the strings older code passes (still accepted wherever a status is).
StatusName = Literal["unchanged", "accepted", "pending", "failed", "rejected"]


def as_status(value: OutcomeStatus | StatusName) -> OutcomeStatus:
    """``value`` as an :class:`OutcomeStatus`; :class:`ConfigurationError` for an unknown one."""
    try:
        return OutcomeStatus(value)
    except ValueError:
        known = ", ".join(status.value for status in OutcomeStatus)
        msg = f"unknown outcome status {value!r}; expected one of {known}"
        raise ConfigurationError(msg) from None
