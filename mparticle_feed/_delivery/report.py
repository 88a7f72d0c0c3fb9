"""What became of every batch of an upload.

mParticle answers ``202 Accepted`` to a bulk request even when some of its batches fail
later, so a 202 is reported as *accepted*, never as delivered.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Mapping

import attrs

from .._html import html_table
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch
from .routing import Endpoint
from .status import BATCH_STATUSES, OutcomeStatus, StatusName, as_status

__all__ = ["BatchOutcome", "OutcomeStatus", "UploadReport"]

#: The batch statuses as report keys, in the order reports show them.
STATUSES = tuple(status.value for status in BATCH_STATUSES)


@attrs.frozen(kw_only=True)
class BatchOutcome:
    """The final outcome of one batch in one run."""

    #: One of :data:`~mparticle_feed.BATCH_STATUSES` (a string is converted).
    status: OutcomeStatus = attrs.field(converter=as_status)
    endpoint: Endpoint
    source_request_id: str
    rows: tuple[RowRef, ...]
    http_status: int | None = None
    #: The response body (capped in size) for a rejection or failure.
    response_body: str | None = None
    reason: str | None = None
    attempts: int = 0
    sourced: SourcedBatch | None = attrs.field(default=None, repr=False, eq=False)


def _copy_headers(value: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    # A typed function, not converter=dict, so mypy checks the field's type.
    return dict(value)


@attrs.frozen(kw_only=True)
class UploadReport:
    """Every batch's outcome, the rows turned away before sending, and how the run went."""

    outcomes: tuple[BatchOutcome, ...] = ()
    #: Rows turned away locally by routing or packing (never sent).
    problems: tuple[RowProblem, ...] = ()
    #: Retries by cause: "timeout", "connection", "status 503", "status 429", ...
    retries: Mapping[str, int] = attrs.field(factory=dict)
    #: Seconds the client paused all its workers because of 429 answers.
    rate_limit_wait_seconds: float = 0.0
    #: Distinct values of every ``X-mp-rate-limit-*`` response header seen.
    rate_limit_headers: Mapping[str, tuple[str, ...]] = attrs.field(
        factory=dict, converter=_copy_headers
    )
    requests_sent: int = 0
    elapsed_seconds: float = 0.0
    #: Why the run stopped before sending everything (its unsent batches are "pending").
    stopped: str | None = None

    def count(self, status: OutcomeStatus | StatusName, endpoint: Endpoint | None = None) -> int:
        """How many batches ended with ``status`` (on ``endpoint``, if given)."""
        return sum(
            1
            for outcome in self.outcomes
            if outcome.status == status and (endpoint is None or outcome.endpoint == endpoint)
        )

    @property
    def counts(self) -> dict[str, int]:
        """Batches by outcome status."""
        found = Counter(outcome.status for outcome in self.outcomes)
        return {status.value: found[status] for status in BATCH_STATUSES}

    @property
    def counts_by_endpoint(self) -> dict[str, dict[str, int]]:
        """Batches by endpoint path, then by status."""
        result: dict[str, dict[str, int]] = {}
        for outcome in self.outcomes:
            per = result.setdefault(outcome.endpoint.value, dict.fromkeys(STATUSES, 0))
            per[outcome.status] += 1
        return result

    @property
    def attempts_total(self) -> int:
        """HTTP attempts made, including retries and bisected sub-requests."""
        return self.requests_sent

    @property
    def ok(self) -> bool:
        """True when every batch was accepted and no row was turned away."""
        return not self.problems and all(o.status is OutcomeStatus.ACCEPTED for o in self.outcomes)

    @property
    def events_per_batch(self) -> float:
        """Events per batch over the batches sent (mParticle's rate limit counts batches)."""
        counts = [len(o.sourced.event_rows) for o in self.outcomes if o.sourced is not None]
        return sum(counts) / len(counts) if counts else 0.0

    def _repr_html_(self) -> str:
        """A notebook view: batches by endpoint and outcome, then the first problems."""
        by_endpoint = [
            [endpoint, *(str(per[status]) for status in STATUSES)]
            for endpoint, per in sorted(self.counts_by_endpoint.items())
        ]
        stopped = f"; stopped: {html.escape(self.stopped)}" if self.stopped else ""
        parts = [
            f"<p><b>UploadReport</b>: {self.requests_sent} requests, "
            f"{sum(self.retries.values())} retries, "
            f"{self.rate_limit_wait_seconds:.1f} s rate-limit wait, "
            f"{self.events_per_batch:.1f} events a batch, "
            f"{self.elapsed_seconds:.2f} s{stopped}</p>",
            html_table(by_endpoint, ("endpoint", *STATUSES)),
        ]
        unsettled = [o for o in self.outcomes if o.status is not OutcomeStatus.ACCEPTED][:20]
        if unsettled:
            parts.append(
                html_table(
                    [
                        [
                            o.status.value,
                            o.endpoint.value,
                            "" if o.http_status is None else str(o.http_status),
                            o.reason or "",
                            o.source_request_id,
                        ]
                        for o in unsettled
                    ],
                    ("outcome", "endpoint", "HTTP status", "reason", "source_request_id"),
                )
            )
        if self.problems:
            parts.append(
                html_table(
                    [
                        [str(p.row.row_number), p.row.primary_key or "", str(p.stage), p.reason]
                        for p in self.problems[:20]
                    ],
                    ("row", "primary key", "stage", "reason"),
                )
            )
        return "".join(parts)

    def __repr__(self) -> str:
        counts = ", ".join(f"{status}={n}" for status, n in self.counts.items())
        retries = sum(self.retries.values())
        stopped = f", stopped={self.stopped!r}" if self.stopped else ""
        return (
            f"UploadReport({counts}, row_problems={len(self.problems)}, "
            f"requests_sent={self.requests_sent}, retries={retries}, "
            f"rate_limit_wait_seconds={self.rate_limit_wait_seconds:.1f}{stopped})"
        )
