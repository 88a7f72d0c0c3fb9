"""What a sync did (:class:`SyncReport`) and what it would do (:class:`Plan`).

The row invariant, checked whenever a report is built::

    rows_in == accepted + rejected + failed + pending

``accepted`` counts every row mParticle holds the current version of: rows sent and
answered 202 (``sent``) plus rows skipped because the state says mParticle already
accepted exactly this content (``unchanged``). ``pending`` is non-zero only for a run
that was stopped (``stopped`` says why): its rows were read but not settled, and the
next run sends them.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

from .._delivery.packing import Request
from .._delivery.status import OutcomeStatus
from .._errors import DeliveryError
from .._html import html_table
from .._mapping.dataplan_step import RowViolation, violation_record
from .._mapping.provenance import RowProblem

if TYPE_CHECKING:
    pass

__all__ = ["SyncReport", "problem_record", "violation_lines", "violations_html"]


def problem_record(problem: RowProblem, outcome: OutcomeStatus) -> dict[str, Any]:
    """One row problem as a JSON-ready record (one line of a rejects file)."""
    record: dict[str, Any] = {
        "outcome": outcome.value,
        "row_number": problem.row.row_number,
        "primary_key": problem.row.primary_key,
        "stage": str(problem.stage),
        "reason": problem.reason,
    }
    for key in ("field", "status", "body", "source_request_id"):
        value = getattr(problem, key)
        if value is not None:
            record[key] = value
    return record


def batching_lines(events_per_batch: float, advice: str | None) -> list[str]:
    """The summary lines on events per batch (what mParticle's limit counts) and advice."""
    lines = [f"  {events_per_batch:.1f} events a batch"] if events_per_batch else []
    return lines + ([f"  advice: {advice}"] if advice else [])


def events_per_batch(requests: Iterable[Request]) -> float:
    """Events per batch over the batches of ``requests``."""
    counts = [len(packed.sourced.event_rows) for r in requests for packed in r.batches]
    return sum(counts) / len(counts) if counts else 0.0


def violation_lines(violations: tuple[RowViolation, ...], limit: int = 10) -> list[str]:
    """Summary lines for data-plan violations: a count, then the first ``limit``."""
    if not violations:
        return []
    rows = len({item.row.row_number for item in violations})
    dropped = sum(item.dropped for item in violations)
    lines = [
        f"  data plan  {len(violations):>6} violation(s) in {rows} row(s)"
        + (f", {dropped} dropped before sending" if dropped else "")
    ]
    for item in violations[:limit]:
        key = item.row.primary_key if item.row.primary_key is not None else "-"
        where = f" [{item.field}]" if item.field else ""
        lines.append(
            f"  violation row {item.row.row_number} (key {key}){where}: {item.reason}"
            + (" (dropped)" if item.dropped else "")
        )
    if len(violations) > limit:
        lines.append(f"  ... and {len(violations) - limit} more violation(s)")
    return lines


def violations_html(violations: tuple[RowViolation, ...], limit: int = 100) -> str:
    """A table of data-plan violations for a notebook (empty without violations)."""
    if not violations:
        return ""
    rows = [
        (
            str(item.row.row_number),
            item.row.primary_key or "",
            str(item.violation.match),
            str(item.violation.error_type),
            item.field or "",
            str(item.violation.action),
            "dropped" if item.dropped else "sent",
            item.reason,
        )
        for item in violations[:limit]
    ]
    return html_table(
        rows, ("row", "key", "data point", "error", "field", "action", "data", "violation")
    )


def _open_target(target: str | Path | IO[str]) -> tuple[IO[str], bool]:
    if isinstance(target, (str, Path)):
        # Plans and rejects files hold user data (keys, e-mail addresses): a new file is
        # readable by its owner only.
        handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        return os.fdopen(handle, "w", encoding="utf-8"), True
    return target, False


@attrs.frozen(kw_only=True)
class SyncReport:
    """The outcome of one sync run, row by row.

    Counts are of input rows; ``batches`` and ``requests_sent`` count what went over
    the wire. ``rejects`` lists every rejected row and ``failures`` every failed row,
    each with primary key, stage and reason.
    """

    name: str
    kind: str
    rows_in: int
    sent: int
    unchanged: int
    rejected: int
    failed: int
    pending: int = 0
    #: Rows by endpoint and outcome, for rows that reached delivery: ``{"/v2/bulkevents": {"accepted": 9}}``.
    by_endpoint: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    #: Batches by outcome.
    batches: Mapping[str, int] = attrs.field(factory=dict)
    requests_sent: int = 0
    retries: Mapping[str, int] = attrs.field(factory=dict)
    rate_limit_wait_seconds: float = 0.0
    rate_limit_headers: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    elapsed_seconds: float = 0.0
    stopped: str | None = None
    #: True when the previous run of this sync did not finish; see ``resent_in_flight``.
    resumed: bool = False
    #: Batches the previous, interrupted run had in flight (their rows were sent again).
    resent_in_flight: int = 0
    mapping_changed: bool = False
    #: Batches an earlier run left unsettled in the outbox and this run replayed byte for
    #: byte, by outcome (their rows are not in ``rows_in``).
    replayed: Mapping[str, int] = attrs.field(factory=dict)
    rejects: tuple[RowProblem, ...] = ()
    failures: tuple[RowProblem, ...] = ()
    #: Data-plan violations, each with its row (a mapping that names a plan; see ``dropped``).
    violations: tuple[RowViolation, ...] = ()
    #: Events per batch the mapping produced (mParticle's rate limit counts batches).
    events_per_batch: float = 0.0
    #: The ``ORDER BY`` that would fill batches, when the row order left them thin.
    advice: str | None = None

    def __attrs_post_init__(self) -> None:
        settled = self.accepted + self.rejected + self.failed + self.pending
        if settled != self.rows_in:
            msg = (
                f"sync {self.name!r}: {self.rows_in} rows in but {settled} settled "
                f"(accepted {self.accepted}, rejected {self.rejected}, failed {self.failed}, "
                f"pending {self.pending}); please report this bug"
            )
            raise RuntimeError(msg)

    @property
    def accepted(self) -> int:
        """Rows mParticle holds: sent and answered 202, plus unchanged rows."""
        return self.sent + self.unchanged

    @property
    def replay_unsettled(self) -> int:
        """Replayed outbox batches still unsettled (failed or pending): the next run retries."""
        return int(self.replayed.get("failed", 0)) + int(self.replayed.get("pending", 0))

    @property
    def ok(self) -> bool:
        """True when every row was accepted (sent or unchanged) and the outbox is settled."""
        return self.accepted == self.rows_in and not self.replay_unsettled

    def raise_for_failures(self, *, allow_rejected: bool = False) -> None:
        """Raise :class:`DeliveryError` unless every row was accepted.

        For scheduled jobs that must fail loudly. Rejected rows are data problems that a rerun
        cannot fix; ``allow_rejected=True`` lets them pass while failed and pending rows
        still raise.
        """
        bad = self.failed + self.pending + (0 if allow_rejected else self.rejected)
        if not bad and not self.replay_unsettled:
            return
        problems = list(self.failures) + ([] if allow_rejected else list(self.rejects))
        shown = "; ".join(f"row {p.row.row_number} ({p.stage}): {p.reason}" for p in problems[:3])
        msg = (
            f"sync {self.name!r}: {bad} of {self.rows_in} rows not accepted "
            f"(rejected {self.rejected}, failed {self.failed}, pending {self.pending})"
            + (
                f"; {self.replay_unsettled} batch(es) replayed from the outbox are still unsettled"
                if self.replay_unsettled
                else ""
            )
            + (f"; first: {shown}" if shown else "")
        )
        statuses = {p.status for p in problems if p.status is not None}
        raise DeliveryError(
            msg,
            status=statuses.pop() if len(statuses) == 1 else None,
            source_request_ids=sorted(
                {p.source_request_id for p in problems if p.source_request_id is not None}
            ),
        )

    def historical_rows(self) -> int:
        """Rows accepted by the historical endpoint."""
        return int(self.by_endpoint.get("/v2/bulkevents/historical", {}).get("accepted", 0))

    def live_rows(self) -> int:
        """Rows accepted by the live endpoint."""
        return int(self.by_endpoint.get("/v2/bulkevents", {}).get("accepted", 0))

    def counts(self) -> dict[str, int]:
        """Row counts by outcome (``accepted`` includes ``unchanged``)."""
        return {
            "rows_in": self.rows_in,
            "accepted": self.accepted,
            "sent": self.sent,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "failed": self.failed,
            "pending": self.pending,
        }

    def problem_records(self) -> list[dict[str, Any]]:
        """Every rejected and failed row, then every data-plan violation, as JSON-ready records.

        A violation's record has ``"outcome": "violation"``, the row, the violation's
        fields under ``"violation"``, and ``"dropped"``; a row a block rejected also has its
        ``"rejected"`` record.
        """
        return (
            [problem_record(p, OutcomeStatus.REJECTED) for p in self.rejects]
            + [problem_record(p, OutcomeStatus.FAILED) for p in self.failures]
            + [violation_record(v) for v in self.violations]
        )

    def write_rejects(self, target: str | Path | IO[str]) -> int:
        """Write :meth:`problem_records` as JSON Lines; return the number of lines."""
        handle, owned = _open_target(target)
        try:
            records = self.problem_records()
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        finally:
            if owned:
                handle.close()
        return len(records)

    def summary(self) -> str:
        """A few readable lines: counts, endpoints, waits, and the first rejects."""
        lines = [
            f"sync {self.name!r} ({self.kind}): {self.rows_in} rows in",
            f"  accepted  {self.accepted:>7}  ({self.sent} sent, {self.unchanged} unchanged)",
            f"  rejected  {self.rejected:>7}",
            f"  failed    {self.failed:>7}",
        ]
        if self.pending or self.stopped:
            lines.append(f"  pending   {self.pending:>7}  (stopped: {self.stopped})")
        if self.stopped:
            # A stopped run never read the rest of its source; say so, so nobody reads
            # rows_in as the size of the query.
            lines.append(
                f"  stopped after reading {self.rows_in} rows; rows after those were not read, "
                "and the next run with the same state picks them up"
            )
        for endpoint, counts in sorted(self.by_endpoint.items()):
            shown = ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
            lines.append(f"  {endpoint}: {shown}")
        retries = sum(self.retries.values())
        lines.append(
            f"  {self.requests_sent} requests, {retries} retries, "
            f"{self.rate_limit_wait_seconds:.1f} s rate-limit wait, {self.elapsed_seconds:.2f} s"
        )
        lines.extend(batching_lines(self.events_per_batch, self.advice))
        if self.resumed:
            lines.append(
                f"  resumed an interrupted run ({self.resent_in_flight} batch(es) were in flight)"
            )
        if self.replayed:
            shown = ", ".join(f"{status} {n}" for status, n in sorted(self.replayed.items()))
            lines.append(f"  replayed from the outbox, byte for byte: {shown} batch(es)")
        problems = [("rejected", p) for p in self.rejects] + [("failed", p) for p in self.failures]
        for outcome, problem in problems[:10]:
            key = problem.row.primary_key if problem.row.primary_key is not None else "-"
            where = f" [{problem.field}]" if problem.field else ""
            lines.append(
                f"  {outcome} row {problem.row.row_number} (key {key}) at {problem.stage}"
                f"{where}: {problem.reason}"
            )
        if len(problems) > 10:
            lines.append(f"  ... and {len(problems) - 10} more (write_rejects() lists them all)")
        lines.extend(violation_lines(self.violations))
        return "\n".join(lines)

    def __repr__(self) -> str:
        pending = f", pending={self.pending}" if self.pending else ""
        return (
            f"SyncReport(name={self.name!r}, rows_in={self.rows_in}, accepted={self.accepted} "
            f"(sent={self.sent}, unchanged={self.unchanged}), rejected={self.rejected}, "
            f"failed={self.failed}{pending})"
        )

    def _repr_html_(self) -> str:
        counts = [(name, str(n)) for name, n in self.counts().items()]
        endpoints = [
            (endpoint, ", ".join(f"{s} {n}" for s, n in sorted(c.items())))
            for endpoint, c in sorted(self.by_endpoint.items())
        ]
        problems = [
            (
                outcome,
                str(p.row.row_number),
                p.row.primary_key or "",
                str(p.stage),
                p.field or "",
                p.reason,
            )
            for outcome, p in [("rejected", q) for q in self.rejects[:50]]
            + [("failed", q) for q in self.failures[:50]]
        ]
        return (
            f"<div><strong>sync {html.escape(self.name)}</strong> ({html.escape(self.kind)})"
            + html_table(counts, ("outcome", "rows"))
            + html_table(endpoints, ("endpoint", "rows"))
            + (
                html_table(problems, ("outcome", "row", "key", "stage", "field", "reason"))
                if problems
                else ""
            )
            + violations_html(self.violations)
            + "</div>"
        )
