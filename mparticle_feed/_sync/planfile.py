"""Plans and plan files: the exact requests a sync would send, written out for review and sent later byte for byte."""

from __future__ import annotations

import hashlib
import html
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs
import orjson

from .._delivery.packing import PackedBatch, Request, _Pieces, request_body
from .._delivery.routing import Endpoint
from .._errors import PayloadError, PlanFileError
from .._html import html_table
from .._mapping.dataplan_step import RowViolation, violation_from_record, violation_record
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from .._wire.codec import from_dict
from .report import SyncReport, _open_target, problem_record, violation_lines, violations_html
from .send import Progress, Sender, StateArg, send_plan
from .state import MappingChange, StateEntry
from .status import _REJECTED, _UNCHANGED

__all__ = ["Plan", "PlannedRequest"]


#: The version of the plan file's last line; a reader refuses versions it does not know.
PLAN_FILE_FORMAT = 1


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
                        attributes = None if entry.attributes is None else dict(entry.attributes)
                        state.append([row.row_number, entry.key, entry.hash, attributes])
                record["state"] = state
                emit(json.dumps(record, ensure_ascii=False))
            for problem in self.rejects:
                emit(json.dumps(problem_record(problem, "rejected")))
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
        return _PlanReader(label).read(text)

    def send(
        self,
        client: Sender,
        *,
        state: StateArg = None,
        on_mapping_change: MappingChange = "fail",
        stop: threading.Event | None = None,
        progress: Callable[[Progress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> SyncReport:
        """Send exactly these requests with ``client`` and return the report.

        ``state`` (a :class:`StateStore` or a path) records what was accepted; it should
        be the store the plan was computed with. The other options are :func:`sync`'s.
        """
        report = send_plan(
            self,
            client,
            state=state,
            on_mapping_change=on_mapping_change,
            stop=stop,
            progress=progress,
            clock=clock,
        )
        return attrs.evolve(report, violations=self.violations) if self.violations else report

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _PlanReader:
    """Rebuilds a :class:`Plan` from its JSON Lines, refusing anything it cannot vouch for."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.line = 0

    def fail(self, reason: str, *, line: int | None = -1) -> PlanFileError:
        return PlanFileError(self.label, self.line if line == -1 else line, reason)

    def read(self, text: str) -> Plan:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        digest = hashlib.sha256()
        requests: list[Request] = []
        entries: dict[int, StateEntry] = {}
        rejects: list[RowProblem] = []
        violations: list[RowViolation] = []
        closing: dict[str, Any] | None = None
        for self.line, raw in enumerate(lines, start=1):
            line = raw.removesuffix("\r")
            if closing is not None:
                raise self.fail("a line follows the closing 'plan' line")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise self.fail(f"not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict):
                raise self.fail("not a JSON object")
            if "plan" in record:
                if not isinstance(record["plan"], dict):
                    raise self.fail("'plan' must be an object")
                closing = record["plan"]
                continue
            digest.update(line.encode("utf-8") + b"\n")
            if "endpoint" in record:
                if rejects or violations:
                    raise self.fail("a request follows the rejected rows")
                request, request_entries = self._request(record)
                requests.append(request)
                entries.update(request_entries)
            elif record.get("outcome") == "violation":
                try:
                    violations.append(violation_from_record(record))
                except ValueError as exc:
                    raise self.fail(f"data-plan violation: {exc}") from None
            elif "outcome" in record:
                if violations:
                    raise self.fail("a rejected row follows the data-plan violations")
                rejects.append(self._reject(record))
            else:
                raise self.fail("neither a request, a rejected row nor the closing 'plan' line")
        if closing is None:
            raise self.fail(
                "the file ends without its closing 'plan' line: it is truncated, empty, "
                "or was written by an older version (write the plan again)",
                line=None,
            )
        self.line = len(lines)
        fields = {key: value for key, value in closing.items() if key != "sha256"}
        digest.update(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        header = self._closing(closing, len(requests), len(rejects), digest.hexdigest())
        if closing.get("violations", 0) != len(violations):
            raise self.fail(
                f"the file holds {len(violations)} data-plan violation(s), but was written with "
                f"{closing.get('violations', 0)!r}: lines were removed or added"
            )
        rows_in = int(header["rows_in"])
        settled = bytearray(rows_in + 1)
        for first, last in header["unchanged_rows"]:
            settled[first : last + 1] = bytes([_UNCHANGED]) * (last + 1 - first)
        for problem in rejects:
            self._check_row(problem.row, rows_in)
            settled[problem.row.row_number] = _REJECTED
        for item in violations:
            self._check_row(item.row, rows_in)
        sent_rows = {r.row_number for q in requests for b in q.batches for r in b.sourced.rows}
        for number in sent_rows:
            if number > rows_in:
                raise self.fail(f"row {number} is in a request, but the plan has {rows_in} rows")
        missing = [n for n in range(1, rows_in + 1) if not settled[n] and n not in sent_rows]
        if missing:
            raise self.fail(
                f"{len(missing)} row(s), first row {missing[0]}, are neither sent, unchanged "
                "nor rejected"
            )
        return Plan(
            name=header["name"],
            kind=header["kind"],
            fingerprint=header["fingerprint"],
            environment=header["environment"],
            rows_in=rows_in,
            unchanged=int(header["unchanged"]),
            requests=tuple(requests),
            rejects=tuple(rejects),
            entries=entries,
            settled=bytes(settled),
            violations=tuple(violations),
        )

    def _check_row(self, row: RowRef, rows_in: int) -> None:
        if row.row_number > rows_in:
            raise self.fail(f"row {row.row_number} is beyond the plan's {rows_in} rows")

    def _rows(self, value: Any, what: str) -> tuple[RowRef, ...]:
        if not isinstance(value, list):
            raise self.fail(f"{what} must be a list of [row_number, primary_key] pairs")
        rows = []
        for item in value:
            if not (
                isinstance(item, list)
                and len(item) == 2
                and _is_int(item[0])
                and item[0] >= 1
                and (item[1] is None or isinstance(item[1], str))
            ):
                raise self.fail(f"{what}: {item!r} is not a [row_number, primary_key] pair")
            rows.append(RowRef(item[0], item[1]))
        return tuple(rows)

    def _request(self, record: dict[str, Any]) -> tuple[Request, dict[int, StateEntry]]:

        try:
            endpoint = Endpoint(record["endpoint"])
        except (TypeError, ValueError):
            known = ", ".join(e.value for e in Endpoint)
            raise self.fail(
                f"unknown endpoint {record['endpoint']!r} (expected one of {known})"
            ) from None
        documents = record.get("body")
        if not isinstance(documents, list) or not documents:
            raise self.fail("'body' must be a non-empty JSON array of batches")
        described = record.get("batches")
        if not isinstance(described, list):
            raise self.fail(
                "no 'batches' list: the file was written by an older version (write the plan again)"
            )
        if len(described) != len(documents):
            raise self.fail(
                f"the body holds {len(documents)} batch(es) but 'batches' describes {len(described)}"
            )
        packed: list[PackedBatch] = []
        for index, (document, about) in enumerate(zip(documents, described, strict=True)):
            if not isinstance(document, dict) or not isinstance(about, dict):
                raise self.fail(f"batch {index}: expected a JSON object in 'body' and in 'batches'")
            source_request_id = about.get("source_request_id")
            if not isinstance(source_request_id, str) or (
                document.get("source_request_id") != source_request_id
            ):
                raise self.fail(
                    f"batch {index}: the body's source_request_id "
                    f"{document.get('source_request_id')!r} does not match {source_request_id!r}"
                )
            try:
                body = orjson.dumps(document)
                batch = from_dict(document)
            except orjson.JSONEncodeError as exc:
                raise self.fail(f"batch {index} cannot be written as JSON: {exc}") from None
            except PayloadError as exc:
                shown = "; ".join(exc.problems[:3])
                raise self.fail(f"batch {index} is not a valid batch: {shown}") from None
            try:
                sourced = SourcedBatch(
                    batch=batch,
                    event_rows=self._rows(about.get("event_rows"), f"batch {index} event_rows"),
                    rows=self._rows(about.get("rows"), f"batch {index} rows"),
                )
            except ValueError as exc:
                raise self.fail(f"batch {index}: {exc}") from None
            packed.append(
                PackedBatch(
                    source_request_id=source_request_id,
                    body=body,
                    sourced=sourced,
                    user_key=_Pieces(sourced).user_key,
                )
            )
        body = request_body(packed)
        if record.get("bytes") != len(body) or record.get("sha256") != (
            hashlib.sha256(body).hexdigest()
        ):
            raise self.fail(
                "the body is not the one the plan was written with (its size or SHA-256 "
                "differs): it was edited after the plan was made"
            )
        rows = tuple(dict.fromkeys(row for b in packed for row in b.sourced.rows))
        if self._rows(record.get("rows"), "rows") != rows:
            raise self.fail("'rows' does not match the rows of the request's batches")
        entries: dict[int, StateEntry] = {}
        numbers = {row.row_number for row in rows}
        state = record.get("state", [])
        if not isinstance(state, list):
            raise self.fail("'state' must be a list")
        for item in state:
            if not (
                isinstance(item, list)
                and len(item) == 4
                and item[0] in numbers
                and isinstance(item[1], str)
                and isinstance(item[2], str)
                and (
                    item[3] is None
                    or (
                        isinstance(item[3], dict)
                        and all(isinstance(v, str) for v in item[3].values())
                    )
                )
            ):
                raise self.fail(
                    f"'state': {item!r} is not [row_number of this request, key, hash, attributes]"
                )
            entries[item[0]] = StateEntry(key=item[1], hash=item[2], attributes=item[3])
        return Request(endpoint=endpoint, body=body, batches=tuple(packed)), entries

    def _reject(self, record: dict[str, Any]) -> RowProblem:
        if record.get("outcome") != "rejected":
            raise self.fail(f"outcome {record.get('outcome')!r}; a plan holds only 'rejected' rows")
        (row,) = self._rows([[record.get("row_number"), record.get("primary_key")]], "rejected row")
        try:
            stage = Stage(record.get("stage"))
        except ValueError:
            raise self.fail(f"unknown stage {record.get('stage')!r}") from None
        reason = record.get("reason")
        if not isinstance(reason, str):
            raise self.fail("a rejected row needs a 'reason'")
        optional: dict[str, Any] = {}
        for key, kind in (
            ("field", str),
            ("status", int),
            ("body", str),
            ("source_request_id", str),
        ):
            value = record.get(key)
            if value is not None and not isinstance(value, kind):
                raise self.fail(f"'{key}' must be a {kind.__name__}")
            optional[key] = value
        return RowProblem(row=row, stage=stage, reason=reason, **optional)

    def _closing(
        self, closing: dict[str, Any], requests: int, rejects: int, sha256: str
    ) -> dict[str, Any]:
        version = closing.get("format")
        if version != PLAN_FILE_FORMAT:
            raise self.fail(
                f"plan format {version!r}; this version of mparticle_feed reads format "
                f"{PLAN_FILE_FORMAT}"
            )
        for key in ("name", "kind", "fingerprint", "environment"):
            if not isinstance(closing.get(key), str):
                raise self.fail(f"the closing 'plan' line needs a string {key!r}")
        for key in ("rows_in", "unchanged"):
            value: Any = closing.get(key)
            if not _is_int(value) or value < 0:
                raise self.fail(f"the closing 'plan' line needs a count {key!r}")
        runs = closing.get("unchanged_rows")
        if not isinstance(runs, list) or not all(
            isinstance(run, list)
            and len(run) == 2
            and all(_is_int(n) for n in run)
            and 1 <= run[0] <= run[1] <= closing["rows_in"]
            for run in runs
        ):
            raise self.fail("'unchanged_rows' must list [first, last] runs of row numbers")
        if closing.get("requests") != requests or closing.get("rejects") != rejects:
            raise self.fail(
                f"the file holds {requests} request(s) and {rejects} rejected row(s), but was "
                f"written with {closing.get('requests')!r} and {closing.get('rejects')!r}: "
                "lines were removed or added"
            )
        if closing.get("sha256") != sha256:
            raise self.fail(
                "the file is not the one the plan was written as (its SHA-256 differs): "
                "it was edited after the plan was made"
            )
        return closing
