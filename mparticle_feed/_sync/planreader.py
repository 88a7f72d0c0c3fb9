"""Reading plan files back (sync stage): every line checked, nothing taken on trust.

:meth:`~mparticle_feed._sync.planfile.Plan.read_jsonl` uses :class:`_PlanReader`; the file
format (written by ``Plan.write_jsonl``) is described on the sync page of the docs.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson

from .._delivery.packing import PackedBatch, Request, _Pieces, request_body
from .._delivery.routing import Endpoint
from .._delivery.status import OutcomeStatus
from .._errors import PayloadError, PlanFileError
from .._mapping.dataplan_step import RowViolation, violation_from_record
from .._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from .._wire.codec import from_dict, kept_bytes
from .records import _entry_from_list
from .state import StateEntry
from .status import _REJECTED, _UNCHANGED

__all__ = ["PLAN_FILE_FORMAT"]

#: The version of the plan file's last line; a reader refuses versions it does not know.
PLAN_FILE_FORMAT = 2
#: What a plan records for send's checks (see ``send_plan``), in the closing line.
_PLAN_CHECKS = ("plan_id", "created_at", "state_version", "next_seq", "historical_only")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _PlanReader:
    """Rebuilds a :class:`Plan` from its JSON Lines, refusing anything it cannot vouch for."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.line = 0

    def fail(self, reason: str, *, line: int | None = -1) -> PlanFileError:
        return PlanFileError(self.label, self.line if line == -1 else line, reason)

    def read(self, text: str) -> dict[str, Any]:
        """The keyword arguments of the :class:`Plan` the file holds."""
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
        settled = self._settled(rows_in, header["unchanged_rows"], requests, rejects, violations)
        return dict(
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
            **{key: header[key] for key in _PLAN_CHECKS},
        )

    def _settled(
        self,
        rows_in: int,
        unchanged: list[list[int]],
        requests: list[Request],
        rejects: list[RowProblem],
        violations: list[RowViolation],
    ) -> bytearray:
        """Each row's status before sending; every row must be sent, unchanged or rejected."""
        settled = bytearray(rows_in + 1)
        for first, last in unchanged:
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
        return settled

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
        endpoint = self._endpoint(record["endpoint"])
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
        packed = [
            self._batch(index, document, about)
            for index, (document, about) in enumerate(zip(documents, described, strict=True))
        ]
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
        entries = self._state(record.get("state", []), {row.row_number for row in rows})
        return Request(endpoint=endpoint, body=body, batches=tuple(packed)), entries

    def _endpoint(self, value: Any) -> Endpoint:
        try:
            return Endpoint(value)
        except (TypeError, ValueError):
            known = ", ".join(e.value for e in Endpoint)
            raise self.fail(f"unknown endpoint {value!r} (expected one of {known})") from None

    def _batch(self, index: int, document: Any, about: Any) -> PackedBatch:
        """One batch of a request: its body in ``body``, its rows in ``batches``."""
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
            body = kept_bytes(orjson.dumps(document))
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
        return PackedBatch(
            source_request_id=source_request_id,
            body=body,
            sourced=sourced,
            user_key=_Pieces(sourced).user_key,
        )

    def _state(self, state: Any, numbers: set[int]) -> dict[int, StateEntry]:
        """A request's state entries, each for one of the request's rows."""
        if not isinstance(state, list):
            raise self.fail("'state' must be a list")
        entries: dict[int, StateEntry] = {}
        for item in state:
            if not (
                isinstance(item, list)
                and len(item) in (4, 5)
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
                and (len(item) == 4 or isinstance(item[4], str))
            ):
                raise self.fail(
                    f"'state': {item!r} is not [row_number of this request, key, hash, "
                    "attributes(, source digest)]"
                )
            entries[item[0]] = _entry_from_list(item[1:])
        return entries

    def _reject(self, record: dict[str, Any]) -> RowProblem:
        if record.get("outcome") != OutcomeStatus.REJECTED:
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
        for key in ("name", "kind", "fingerprint", "environment", "plan_id"):
            if not isinstance(closing.get(key), str):
                raise self.fail(f"the closing 'plan' line needs a string {key!r}")
        created, version = closing.get("created_at"), closing.get("state_version")
        if (
            not (isinstance(created, (int, float)) and not isinstance(created, bool))
            or (version is not None and not _is_int(version))
            or not isinstance(closing.get("historical_only"), bool)
        ):
            raise self.fail("'created_at', 'state_version' or 'historical_only' is malformed")
        for key in ("rows_in", "unchanged", "next_seq"):
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
