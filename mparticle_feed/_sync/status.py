"""Row outcomes during a sync, one byte per input row."""

from __future__ import annotations

# One byte per row: its outcome so far. Higher is worse; a row in several batches ends
# with the worst outcome of them.
_UNSEEN, _UNCHANGED, _ACCEPTED, _PENDING, _FAILED, _REJECTED = range(6)


_STATUS_CODE = {
    "accepted": _ACCEPTED,
    "pending": _PENDING,
    "failed": _FAILED,
    "rejected": _REJECTED,
}
