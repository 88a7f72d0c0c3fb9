"""Row outcomes during a sync, one byte per input row (sync stage).

The byte is :attr:`OutcomeStatus.code <mparticle_feed.OutcomeStatus.code>`, named here once
for the sync's hot loops; 0 is a row with no outcome yet. Higher is worse: a row in several
batches ends with the worst outcome of them.
"""

from __future__ import annotations

from .._delivery.status import NO_OUTCOME, OutcomeStatus

_UNSEEN = NO_OUTCOME
_UNCHANGED = OutcomeStatus.UNCHANGED.code
_ACCEPTED = OutcomeStatus.ACCEPTED.code
_PENDING = OutcomeStatus.PENDING.code
_FAILED = OutcomeStatus.FAILED.code
_REJECTED = OutcomeStatus.REJECTED.code
