"""Plans and plan files: the exact requests a sync would send, written out for review and sent later byte for byte."""

from __future__ import annotations

import hashlib
import html
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import attrs

from .._delivery.packing import Request
from .._delivery.status import OutcomeStatus
from .._errors import PlanFileError
from .._html import html_table
from .._mapping.dataplan_step import RowViolation, violation_record
from .._mapping.provenance import RowProblem, RowRef
from .planreader import _PLAN_CHECKS, PLAN_FILE_FORMAT, _PlanReader
from .records import _entry_list
from .report import (
    SyncReport,
    _open_target,
    batching_lines,
    events_per_batch,
    problem_record,
    violation_lines,
    violations_html,
)
from .send import DEFAULT_MAX_PLAN_AGE, Progress, Sender, StateArg, send_plan
from .state import MappingChange, StateEntry
from .status import _UNCHANGED

__all__ = ["Plan", "PlannedRequest"]


@attrs.frozen(kw_only=True)
class PlannedRequest:
    """One request of a plan: where it goes, its exact body, and the rows in it."""

    endpoint: str
    body: bytes = attrs.field(repr=lambda body: f"<{len(body)} bytes>")
    source_request_ids: tuple[str, ...]
    rows: tuple[RowRef, ...]

    def to_record(self) -> dict[str, Any]:
        """The request as a JSON-ready record; ``body`` is the parsed JSON document."""
        return {
            "endpoint": self.endpoint,
            "source_request_ids": list(self.source_request_ids),
            "rows": [[r.row_number, r.primary_key] for r in self.rows],
            "bytes": len(self.body),
            "body": json.loads(self.body),
        }


@attrs.frozen(kw_only=True, eq=False)
class Plan:
    """The exact requests a sync would send, computed without sending anything.

    Review it (``repr`` in a terminal, a table in a notebook, :meth:`write_jsonl` for a
    file), then deliver it with :meth:`send` (or ``sync(..., plan=plan)``): the bodies
    sent are byte for byte the ones in ``requests``.
    """

    name: str
    kind: str
    fingerprint: str
    environment: str
    rows_in: int
    unchanged: int
    requests: tuple[Request, ...]
    rejects: tuple[RowProblem, ...]
    #: Per row number, the state entry to record once the row is accepted.
    entries: Mapping[int, StateEntry] = attrs.field(factory=dict, repr=False)
    #: Per row number, its settled status before sending (unchanged or rejected).
    settled: bytes = attrs.field(default=b"", repr=False)
    #: Data-plan violations, each with its row; with the ``block`` policy, ``dropped`` marks
    #: what mParticle would drop and the plan leaves out.
    violations: tuple[RowViolation, ...] = ()
    # Its id (sent again, it resumes), when it was made (epoch s), its state version (None:
    # no state), the next id sequence number, its routing mode: send checks them.
    plan_id: str = ""
    created_at: float = 0.0
    state_version: int | None = None
    next_seq: int = 0
    historical_only: bool = False
    #: The ``ORDER BY`` that would fill batches, when the row order left them thin.
    advice: str | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def events_per_batch(self) -> float:
        """Events per batch to send (mParticle's rate limit counts batches)."""
        return events_per_batch(self.requests)

    @property
    def planned(self) -> tuple[PlannedRequest, ...]:
        """The requests as :class:`PlannedRequest` (endpoint, body, ids, rows)."""
        out = []
        for request in self.requests:
            rows: dict[RowRef, None] = {}
            for packed in request.batches:
                rows.update(dict.fromkeys(packed.sourced.rows))
            out.append(
                PlannedRequest(
                    endpoint=str(request.endpoint),
                    body=request.body,
                    source_request_ids=tuple(p.source_request_id for p in request.batches),
                    rows=tuple(rows),
                )
            )
        return tuple(out)

    @property
    def rows_to_send(self) -> int:
        """Rows the plan would send (each row counted once)."""
        return self.rows_in - self.unchanged - self.rejected

    @property
    def rejected(self) -> int:
        """Rows turned away before sending (mapping, routing or packing)."""
        return len({p.row.row_number for p in self.rejects})

    def counts_by_endpoint(self) -> dict[str, dict[str, int]]:
        """Requests, batches and bytes per endpoint."""
        out: dict[str, dict[str, int]] = {}
        for request in self.requests:
            entry = out.setdefault(str(request.endpoint), {"requests": 0, "batches": 0, "bytes": 0})
            entry["requests"] += 1
            entry["batches"] += len(request.batches)
            entry["bytes"] += len(request.body)
        return out

    def write_jsonl(self, target: str | Path | IO[str]) -> int:
        """Write the plan as JSON Lines; return the number of lines written.

        One line per request (its ``endpoint``, ``rows``, ``bytes`` and ``body`` as JSON,
        plus what :meth:`read_jsonl` needs to rebuild it exactly: each batch's
        ``source_request_id`` and rows, the state entries to record, the body's SHA-256),
        then one line per rejected row (``"outcome": "rejected"``), one per data-plan
        violation (``"outcome": "violation"``), then one closing line
        under the key ``"plan"`` that describes the plan and holds a SHA-256 of the whole
        file, so that an edited or truncated file is refused when it is read back.
        """
        handle, owned = _open_target(target)
        digest = hashlib.sha256()
        count = 0

        def emit(line: str) -> None:
            nonlocal count
            digest.update(line.encode("utf-8") + b"\n")
            handle.write(line + "\n")
            count += 1

        try:
            written_entries: set[int] = set()
            for request, planned in zip(self.requests, self.planned, strict=True):
                record = planned.to_record()
                record["sha256"] = hashlib.sha256(request.body).hexdigest()
                record["batches"] = [
                    {
                        "source_request_id": packed.source_request_id,
                        "rows": _row_pairs(packed.sourced.rows),
                        "event_rows": _row_pairs(packed.sourced.event_rows),
                    }
                    for packed in request.batches
                ]
                state = []
                for row in planned.rows:
                    entry = self.entries.get(row.row_number)
                    if entry is not None and row.row_number not in written_entries:
                        written_entries.add(row.row_number)
                        state.append([row.row_number, *_entry_list(entry)])
                record["state"] = state
                emit(json.dumps(record, ensure_ascii=False))
            for problem in self.rejects:
                emit(json.dumps(problem_record(problem, OutcomeStatus.REJECTED)))
            for item in self.violations:
                emit(json.dumps(violation_record(item), ensure_ascii=False))
            unchanged_rows = [
                number for number, code in enumerate(self.settled) if code == _UNCHANGED
            ]
            closing = {
                "format": PLAN_FILE_FORMAT,
                "name": self.name,
                "kind": self.kind,
                "fingerprint": self.fingerprint,
                "environment": self.environment,
                "rows_in": self.rows_in,
                "unchanged": self.unchanged,
                "unchanged_rows": _ranges(unchanged_rows),
                **{key: getattr(self, key) for key in _PLAN_CHECKS},
                "requests": len(self.requests),
                "rejects": len(self.rejects),
            }
            if self.violations:  # absent otherwise: files without a plan read as before
                closing["violations"] = len(self.violations)
            # The digest also covers this line's own fields, so none can be edited unseen.
            digest.update(json.dumps(closing, sort_keys=True, ensure_ascii=False).encode("utf-8"))
            closing["sha256"] = digest.hexdigest()
            emit(json.dumps({"plan": closing}, ensure_ascii=False))
        finally:
            if owned:
                handle.close()
        return count

    @classmethod
    def read_jsonl(cls, source: str | os.PathLike[str] | IO[str]) -> Plan:
        """Read back a plan written by :meth:`write_jsonl`, exactly as it was written.

        The requests are rebuilt byte for byte (endpoint, body, each batch's
        ``source_request_id`` and rows) and checked against the digests in the file.
        Raises :class:`PlanFileError`, naming the line, when the file is malformed,
        truncated, or was edited after it was written.
        """
        if isinstance(source, (str, os.PathLike)):
            label = os.fspath(source)
            try:
                with open(source, encoding="utf-8", newline="") as handle:
                    text = handle.read()
            except UnicodeDecodeError as exc:
                raise PlanFileError(label, None, f"not UTF-8 text ({exc.reason})") from None
        else:
            label = str(getattr(source, "name", "<stream>"))
            text = source.read()
        return cls(**_PlanReader(label).read(text))

    def send(
        self,
        client: Sender,
        *,
        state: StateArg = None,
        on_mapping_change: MappingChange = "fail",
        stop: threading.Event | None = None,
        progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: datetime | None = None,
        max_plan_age: timedelta = DEFAULT_MAX_PLAN_AGE,
    ) -> SyncReport:
        """Send exactly these requests with ``client`` and return the report.

        ``state`` (a :class:`StateStore` or a path) records what was accepted; it should
        be the store the plan was computed with. The other options are :func:`sync`'s;
        a superseded, too old or re-routed plan raises :class:`PlanRefusedError`.
        """
        return send_plan(
            self,
            client,
            state=state,
            on_mapping_change=on_mapping_change,
            stop=stop,
            progress=progress,
            clock=clock,
            now=now,
            max_plan_age=max_plan_age,
        )

    def summary(self) -> str:
        """A few readable lines: what would be sent where, and what was turned away."""
        lines = [
            f"plan for sync {self.name!r} ({self.kind}, {self.environment}): {self.rows_in} rows in",
            f"  to send    {self.rows_to_send:>7}",
            f"  unchanged  {self.unchanged:>7}",
            f"  rejected   {self.rejected:>7}",
        ]
        for endpoint, c in sorted(self.counts_by_endpoint().items()):
            lines.append(
                f"  {endpoint}: {c['requests']} request(s), {c['batches']} batch(es), "
                f"{c['bytes']:,} bytes"
            )
        for problem in self.rejects[:10]:
            key = problem.row.primary_key if problem.row.primary_key is not None else "-"
            where = f" [{problem.field}]" if problem.field else ""
            lines.append(
                f"  rejected row {problem.row.row_number} (key {key}) at {problem.stage}"
                f"{where}: {problem.reason}"
            )
        if len(self.rejects) > 10:
            lines.append(f"  ... and {len(self.rejects) - 10} more")
        lines.extend(violation_lines(self.violations))
        lines.extend(batching_lines(self.events_per_batch, self.advice))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        overview = [
            ("rows in", str(self.rows_in)),
            ("to send", str(self.rows_to_send)),
            ("unchanged", str(self.unchanged)),
            ("rejected", str(self.rejected)),
        ]
        requests = []
        for number, planned in enumerate(self.planned[:100], start=1):
            keys = [r.primary_key or str(r.row_number) for r in planned.rows]
            shown = ", ".join(keys[:8]) + (f" … (+{len(keys) - 8})" if len(keys) > 8 else "")
            preview = planned.body[:300].decode("utf-8", "replace")
            requests.append(
                (
                    str(number),
                    planned.endpoint,
                    str(len(planned.source_request_ids)),
                    f"{len(planned.body):,}",
                    shown,
                    preview + ("…" if len(planned.body) > 300 else ""),
                )
            )
        problems = [
            (str(p.row.row_number), p.row.primary_key or "", str(p.stage), p.field or "", p.reason)
            for p in self.rejects[:100]
        ]
        return (
            f"<div><strong>plan for sync {html.escape(self.name)}</strong> "
            f"({html.escape(self.kind)}, {html.escape(self.environment)})"
            + html_table(overview, ("", "rows"))
            + html_table(requests, ("#", "endpoint", "batches", "bytes", "rows", "body"))
            + (html_table(problems, ("row", "key", "stage", "field", "reason")) if problems else "")
            + violations_html(self.violations)
            + "</div>"
        )


def _row_pairs(rows: Iterable[RowRef]) -> list[list[Any]]:
    return [[row.row_number, row.primary_key] for row in rows]


def _ranges(numbers: list[int]) -> list[list[int]]:
    """Sorted row numbers as inclusive ``[first, last]`` runs (unchanged rows come in runs)."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and runs[-1][1] == number - 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return runs
