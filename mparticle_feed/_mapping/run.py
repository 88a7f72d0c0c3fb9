"""Running a compiled mapping: rows in, batches out (one user each), every row accounted for.

Each row goes through the mapping's compiled closures (:mod:`.compile`); an Arrow source goes
through the Arrow engine (:mod:`.arrow`) instead, which gives the same results. A bad value
rejects the row, naming the field path, and the run goes on. Only the batch being filled is
held in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .._errors import ConfigurationError, RowError, type_name
from .._source.rows import RowSource
from .._source.sources import rows_from
from .._wire.values import utf8_text
from .arrow import ArrowEngine, Result, Run, arrow_source_reader
from .arrow_skip import ArrowSkip
from .columns import check_columns
from .compile import CompiledMapping, _Mapped
from .dataplan_step import DATA_PLAN_POLICIES, DataPlanPolicy, DataPlanStep, RowViolation
from .pending import _Pending, _with_event, _WrittenPending
from .provenance import RowProblem, RowRef, SourcedBatch, Stage
from .regroup import DEFAULT_GROUP_WINDOW, RegroupWindow, check_group_window
from .rejects import _Reject
from .sources import SyncKind
from .spec import RowMapping
from .unchanged import KnownRows, SourceDigest, check_each, digestible, skip_known

__all__ = ["MappingRun", "map_rows"]

logger = logging.getLogger(__name__)


class MappingRun(Iterator[SourcedBatch]):
    """An iterator of batches with live counts of what happened to every row.

    ``rows_in == rows_mapped + rows_rejected + rows_unchanged`` holds whenever the run is not
    inside ``next()``; ``rows_unchanged`` counts rows a sync's state holds as they are, left
    unmapped (always 0 for :func:`map_rows`).
    ``rejected`` lists each rejected row's :class:`RowProblem` (stage ``mapping``).
    ``values_truncated`` counts event names cut to 256 characters. With a mapping that
    names a data plan, ``violations`` lists each :class:`RowViolation` found, and rows a
    ``block`` policy turns away are among the rejected (stage ``data_plan``).
    ``events_out`` counts the events of the batches mapped, ``split_users`` the batches
    opened for a user whose earlier batch the regroup window had let go unfilled (see
    :func:`map_rows`).
    """

    def __init__(
        self,
        rows: RowSource,
        mapping: RowMapping,
        *,
        strict: bool = False,
        on_reject: Callable[[RowProblem], None] | None = None,
        max_events_per_batch: int = 100,
        data_plan_policy: DataPlanPolicy = "report",
        chunk_size: int = 1000,
        key_check: Callable[[str, int], int | None] | None = None,
        group_window: int = DEFAULT_GROUP_WINDOW,
        known: KnownRows | None = None,
        run_check: Callable[[list[str], int], dict[int, int]] | None = None,
    ) -> None:
        if max_events_per_batch < 1:
            raise ConfigurationError(
                f"max_events_per_batch must be at least 1, got {max_events_per_batch}"
            )
        if data_plan_policy not in DATA_PLAN_POLICIES:
            raise ConfigurationError(
                f"data_plan_policy is {data_plan_policy!r}; expected one of "
                + ", ".join(DATA_PLAN_POLICIES)
            )
        self.mapping = mapping
        self.strict = strict
        self.on_reject = on_reject
        self.max_events_per_batch = max_events_per_batch
        self.key_check = key_check
        #: ``key_check`` for a run of keys (positions seen before → first rows), if faster.
        self.run_check = run_check
        self.group_window = check_group_window(group_window)
        self.events_out = 0
        self._batches_made = 0
        self._window: RegroupWindow[_Pending] | None = None
        self.rows_in = 0
        self.rows_mapped = 0
        self.rows_rejected = 0
        self.rows_unchanged = 0
        self.batches_out = 0
        self.values_truncated = 0
        self.rejected: list[RowProblem] = []
        self._compiled: CompiledMapping = mapping._compiled
        #: Which engine maps the rows: ``"rows"``, or ``"arrow"`` for an Arrow source.
        self.engine = "rows"
        reader = arrow_source_reader(rows)
        self._written: type[Any] | None = None
        if reader is not None:
            self.engine = "arrow"
            self._batches = self._arrow_batches(reader, known, data_plan_policy)
        else:
            source = rows_from(rows, chunk_size=chunk_size)
            # The source's columns are known before its first row: a mapping that reads a
            # column the source lacks is one error now, not one rejected row per row.
            columns = source.columns
            if columns is not None:
                check_columns(self._compiled, columns)
            rows_to_map: Iterator[Any] = source
            if known is not None and digestible(mapping):
                rows_to_map = self._unskipped(source, known, data_plan_policy)
            self._batches = self._run(rows_to_map)
        self._data_plan: DataPlanStep | None = None
        if mapping.data_plan is not None:
            self._data_plan = DataPlanStep(
                mapping.data_plan,
                mapping.environment,
                policy=data_plan_policy,
                on_reject=self._reject_mapped,
                on_drop=self._drop_batch,
            )
            self._batches = self._data_plan(self._batches)

    @property
    def violations(self) -> list[RowViolation]:
        """Every data-plan violation found so far, with its row (empty without a plan)."""
        return self._data_plan.violations if self._data_plan is not None else []

    def _reject_mapped(self, problem: RowProblem) -> None:
        # A row the data plan turns away was mapped; it now counts as rejected.
        self.rows_mapped -= 1
        self.rows_rejected += 1
        self.rejected.append(problem)
        if self.strict:
            raise RowError(
                row_number=problem.row.row_number,
                primary_key=problem.row.primary_key,
                field=problem.field or "row",
                reason=problem.reason,
            )
        if self.on_reject is not None:
            self.on_reject(problem)

    def _drop_batch(self) -> None:
        self.batches_out -= 1

    @property
    def events_per_batch(self) -> float:
        """Events per batch mapped so far (0.0 before the first batch)."""
        made = self._batches_made
        return self.events_out / made if made else 0.0

    @property
    def split_users(self) -> int:
        """Batches opened for a user whose previous batch had left the window unfilled."""
        return self._window.splits if self._window is not None else 0

    def __iter__(self) -> MappingRun:
        return self

    def __next__(self) -> SourcedBatch:
        return next(self._batches)

    def __repr__(self) -> str:
        return (
            f"<MappingRun {self.mapping.kind.value}: rows_in={self.rows_in} "
            f"rows_mapped={self.rows_mapped} rows_rejected={self.rows_rejected} "
            f"batches_out={self.batches_out}>"
        )

    def _reject(self, ref: RowRef, field: str | None, reason: str) -> None:
        problem = RowProblem(row=ref, stage=Stage.MAPPING, reason=reason, field=field)
        self.rows_rejected += 1
        self.rejected.append(problem)
        if self.strict:
            raise RowError(
                row_number=ref.row_number,
                primary_key=ref.primary_key,
                field=field or "row",
                reason=reason,
            )
        if self.on_reject is not None:
            self.on_reject(problem)

    def _reject_duplicate(self, ref: RowRef, first: int) -> None:
        self._reject(ref, "primary_key", f"duplicate primary key, first seen at row {first}")

    def _unsendable(self, key: str) -> bool:
        """Reject the row when its (non-ASCII) primary key holds a lone surrogate.

        Undecodable bytes read leniently give one; it cannot be sent, hashed or stored.
        """
        if utf8_text(key):
            return False
        self._reject(
            RowRef(self.rows_in, key.encode("utf-8", "backslashreplace").decode()),
            "primary_key",
            "the primary key is not valid Unicode text (a lone surrogate)",
        )
        return True

    def _mapped(self, row: Any) -> tuple[_Mapped, RowRef] | None:
        """One row mapped with its reference, or None once it was rejected."""
        if row.__class__ is not dict and not isinstance(row, Mapping):
            self._reject(
                RowRef(self.rows_in),
                None,
                f"a row must be a mapping of column → value, got {type_name(row)}",
            )
            return None
        compiled = self._compiled
        try:
            key = compiled.primary_key(row)
        except _Reject as exc:
            self._reject(RowRef(self.rows_in), exc.field, exc.reason)
            return None
        if key is not None and not key.isascii() and self._unsendable(key):
            return None
        ref = RowRef(self.rows_in, key)
        try:
            mapped = compiled.map_row(row)
        except _Reject as exc:
            self._reject(ref, exc.field, exc.reason)
            return None
        if key is not None and self.key_check is not None:
            first = self.key_check(key, self.rows_in)
            if first is not None:
                self._reject_duplicate(ref, first)
                return None
        self.values_truncated += mapped.truncated
        return mapped, ref

    def _arrow_batches(
        self, reader: Any, known: KnownRows | None, data_plan_policy: str
    ) -> Iterator[SourcedBatch]:
        check_columns(self._compiled, reader.schema.names)
        engine = ArrowEngine(self._compiled)
        if engine.fallback is None and engine.written_batches:
            self._written = self._compiled.event_cls
        if known is None or not digestible(self.mapping):
            return self._run_results(engine.results(reader))
        skip = ArrowSkip(
            self._compiled,
            self._source_digest(data_plan_policy),
            known,
            lambda first, keys: self._skip_rows(first, keys, known),
        )
        return self._run_results(skip.numbered(engine.results(skip.filtered(reader))))

    def _source_digest(self, data_plan_policy: str) -> SourceDigest:
        # The policy decides which rows a data plan turns away: part of what a digest vouches for.
        return SourceDigest(f"{self.mapping.fingerprint()} {data_plan_policy}")

    def _skip_rows(self, first: int, keys: list[str], known: KnownRows) -> None:
        """Count consecutive rows left unmapped (their digests are the stored ones), numbered
        from ``first``, at their place in the run."""
        self.rows_in += len(keys)
        if self.run_check is not None:
            seen_at = self.run_check(keys, first)
        elif self.key_check is not None:
            seen_at = check_each(self.key_check, keys, first)
        else:
            seen_at = {}
        numbers: Sequence[int] = range(first, first + len(keys))
        unchanged = keys
        if seen_at:
            listed: list[int] = []
            numbers = listed
            unchanged = []
            for position, key in enumerate(keys):
                number = first + position
                if position in seen_at:
                    # Mapped, it would map as before, then be turned away as mapping does.
                    ref = RowRef(number, key)
                    self._reject_duplicate(ref, seen_at[position])
                    continue
                listed.append(number)
                unchanged.append(key)
        self.rows_unchanged += len(numbers)
        known.skipped(numbers, unchanged)

    def _unskipped(
        self, rows: Iterator[Any], known: KnownRows, data_plan_policy: str
    ) -> Iterator[Any]:
        """``rows`` less those ``known`` holds unchanged, which are counted here instead."""

        def on_skip(keys: list[str]) -> None:
            self._skip_rows(self.rows_in + 1, keys, known)

        def on_keep(value: str) -> None:
            known.kept(self.rows_in + 1, value)  # the row _run numbers next

        digest = self._source_digest(data_plan_policy)
        return skip_known(rows, self._compiled, digest, known, on_skip=on_skip, on_keep=on_keep)

    def _out(self, sourced: SourcedBatch) -> SourcedBatch:
        self.batches_out += 1
        self._batches_made += 1
        self.events_out += sourced._event_count()
        return sourced

    def _run(self, rows: Iterator[Any]) -> Iterator[SourcedBatch]:
        environment = self.mapping.environment
        if self.mapping.kind is SyncKind.USER_ATTRIBUTES:
            # One batch per row: nothing to regroup.
            for row in rows:
                self.rows_in += 1
                item = self._mapped(row)
                if item is not None:
                    single = _Pending(environment)
                    single.add(*item)
                    self.rows_mapped += 1
                    yield self._out(single.flush())
            self._log()
            return
        window = self._window = RegroupWindow(
            self.group_window, lambda: _Pending(environment), self.max_events_per_batch
        )
        compiled = self._compiled
        push = window.push
        for row in rows:
            self.rows_in += 1
            # _mapped() inlined: this loop runs once per row.
            if row.__class__ is not dict and not isinstance(row, Mapping):
                self._mapped(row)  # rejects it
                continue
            try:
                key = compiled.primary_key(row)
            except _Reject as exc:
                self._reject(RowRef(self.rows_in), exc.field, exc.reason)
                continue
            if key is not None and not key.isascii() and self._unsendable(key):
                continue
            ref = RowRef(self.rows_in, key)
            try:
                mapped = compiled.map_row(row)
            except _Reject as exc:
                self._reject(ref, exc.field, exc.reason)
                continue
            if key is not None and self.key_check is not None:
                first = self.key_check(key, self.rows_in)
                if first is not None:
                    self._reject_duplicate(ref, first)
                    continue
            self.values_truncated += mapped.truncated
            push(mapped.user_key, mapped, ref)
            # Count the row before yielding, so the counters add up while the caller holds a batch.
            self.rows_mapped += 1
            if window.ready:
                for sourced in window.take():
                    yield self._out(sourced)
        for sourced in window.drain():
            yield self._out(sourced)
        self._log()

    def _log(self) -> None:
        logger.info(
            "mapped %d rows: %d mapped into %d batches (%.1f events a batch), %d rejected, "
            "%d unchanged (not mapped)",
            self.rows_in,
            self.rows_mapped,
            self.batches_out,
            self.events_per_batch,
            self.rows_rejected,
            self.rows_unchanged,
        )

    def _duplicate(self, ref: RowRef) -> bool:
        """Reject (and count) an Arrow row whose primary key was seen earlier in the run."""
        if ref.primary_key is None or self.key_check is None:
            return False
        first = self.key_check(ref.primary_key, ref.row_number)
        if first is None:
            return False
        self.rows_in += 1
        self._reject_duplicate(ref, first)
        return True

    def _runs(self, results: Iterator[Result | Run]) -> Iterator[Run]:
        """The Arrow engine's results as runs; a rejected row is recorded here."""
        for item in results:
            if isinstance(item, Run):
                yield item
                continue
            ref, outcome = item
            if isinstance(outcome, _Reject):
                self.rows_in += 1
                self._reject(ref, outcome.field, outcome.reason)
                continue
            yield Run(outcome, (ref.row_number,), (ref.primary_key,), [None], [outcome.truncated])

    def _run_results_windowed(self, results: Iterator[Result | Run]) -> Iterator[SourcedBatch]:
        """The Arrow engine's rows through the regroup window, one by one as ``_run`` does."""
        environment, written = self.mapping.environment, self._written
        new_group: Callable[[], _Pending] = (
            (lambda: _Pending(environment))
            if written is None
            else (lambda: _WrittenPending(environment, written))
        )
        window = self._window = RegroupWindow(
            self.group_window, new_group, self.max_events_per_batch
        )
        push, push_next = window.push, window.push_next
        for run in self._runs(results):
            first = run.first
            key = first.user_key
            numbers, keys, events = run.numbers, run.keys, run.events
            count = len(numbers)
            if self.key_check is None:
                self.rows_in += count
                self.rows_mapped += count
                self.values_truncated += sum(run.cuts)
                _push_whole(window, run)
            else:
                # Each row's key checked first, in order (a repeated key is rejected and
                # counted where it falls); with none repeated, the run goes in whole.
                kept: list[int] = []
                for position in range(count):
                    if self._duplicate(RowRef(numbers[position], keys[position])):
                        continue
                    self.rows_in += 1
                    self.rows_mapped += 1
                    self.values_truncated += run.cuts[position]
                    kept.append(position)
                if len(kept) == count:
                    _push_whole(window, run)
                else:
                    pushed = False  # a row of this run was pushed last: the next joins its batch
                    for position in kept:
                        ref = RowRef(numbers[position], keys[position])
                        if not (pushed and push_next(events[position], ref)):
                            row = first if position == 0 else _with_event(first, events[position])
                            push(key, row, ref)
                            pushed = True
            if window.ready:
                for sourced in window.take():
                    yield self._out(sourced)
        for sourced in window.drain():
            yield self._out(sourced)
        self._log()

    def _run_results(self, results: Iterator[Result | Run]) -> Iterator[SourcedBatch]:
        """``_run``'s batching over rows the Arrow engine has mapped (or rejected) already."""
        if self.mapping.kind is not SyncKind.USER_ATTRIBUTES:
            yield from self._run_results_windowed(results)
            return
        # One batch per row, as _run does.
        environment, written = self.mapping.environment, self._written
        for run in self._runs(results):
            first = run.first
            for position in range(len(run.numbers)):
                ref = RowRef(run.numbers[position], run.keys[position])
                if self._duplicate(ref):
                    continue
                self.rows_in += 1
                single = _Pending(environment, written)
                single.add(
                    first if position == 0 else _with_event(first, run.events[position]), ref
                )
                self.rows_mapped += 1
                self.values_truncated += run.cuts[position]
                yield self._out(single.flush())
        self._log()


def _push_whole(window: RegroupWindow[Any], run: Run) -> None:
    """A run's rows into the window in as few steps as it takes: its first row's batch
    started with all it holds (``push_run``), the rest ``push_more`` and ``push`` as a batch
    fills."""
    first, numbers, keys, events = run.first, run.numbers, run.keys, run.events
    key = first.user_key
    count = len(numbers)
    position = window.push_run(key, first, events, numbers, keys)
    if not position:
        window.push(key, first, RowRef(numbers[0], keys[0]))
        position = 1
    while position < count:
        position = window.push_more(events, numbers, keys, position)
        if position < count:
            window.push(
                key, _with_event(first, events[position]), RowRef(numbers[position], keys[position])
            )
            position += 1


def _column(source: Any) -> str | None:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else None


def ordering_advice(run: MappingRun) -> str | None:
    """What to change when the row order cost batches; None when it did not.

    A run whose batches were split off a user's earlier batch (let go by the window unfilled)
    in a fifth or more of its batches gets the ``ORDER BY`` that keeps each user together.
    """
    splits = run.split_users
    if run.batches_out < 20 or splits * 5 < run.batches_out:
        return None
    mapping = run.mapping
    users = [s for _, s in mapping.user_identities] + [s for _, s in mapping.device_identities]
    if mapping.mpid is not None:
        users.append(mapping.mpid)
    columns = [c for c in (_column(s) for s in users[:1]) if c is not None]
    stamp = _column(getattr(mapping, "timestamp_unixtime_ms", None))
    if stamp is not None:
        columns.append(stamp)
    order = f"ORDER BY {', '.join(columns)}" if columns else "an ORDER BY on the user's identity"
    return (
        f"{splits:,} of {run.batches_out:,} batches hold rows of a user whose earlier batch had "
        f"already left the regroup window unfilled (group_window={run.group_window:,} rows, "
        f"shared by every user's open batch; {run.events_per_batch:.1f} events a batch). "
        f"mParticle's limit counts batches: {order} in the query (or a larger group_window) "
        "fills batches and shortens the sync."
    )


def map_rows(
    rows: RowSource,
    mapping: RowMapping,
    *,
    strict: bool = False,
    on_reject: Callable[[RowProblem], None] | None = None,
    max_events_per_batch: int = 100,
    data_plan_policy: DataPlanPolicy = "report",
    chunk_size: int = 1000,
    key_check: Callable[[str, int], int | None] | None = None,
    group_window: int = DEFAULT_GROUP_WINDOW,
) -> MappingRun:
    """Map rows from any source :func:`rows_from` reads into batches, streaming.

    Rows of the same user (same identities, device ids, mpid and batch-level fields) share
    a batch of at most ``max_events_per_batch`` events, in row order, while it is open in the
    regroup window: ``group_window`` rows in all (default 10,000) held in the open batches
    of every user, the oldest batch let go first when the window is over (0 groups
    consecutive rows only). A user-attribute mapping makes one batch per row. A row that
    cannot be mapped is recorded in ``run.rejected`` (and passed to ``on_reject``) and the run goes on; with
    ``strict=True`` the first such row raises :class:`RowError` instead. A source that
    declares its columns (a cursor, a DataFrame, Arrow) is checked against the mapping first:
    a column the mapping reads and the source lacks raises :class:`MappingError` before any
    row is read.

    When the mapping names a data plan, batches are tagged with it and validated as they
    are made; ``data_plan_policy`` says what a violation does: ``"report"`` (default: list
    it in ``run.violations``), ``"block"`` (leave out what mParticle would block; rows whose
    event or batch is blocked are rejected) or ``"strict"`` (raise
    :class:`DataPlanViolationError`).

    ``key_check(key, row_number)`` returns the row a primary key was first seen at
    (rejecting this row as a duplicate), or None; sync and plan pass one that keeps the
    keys on disk.
    """
    return MappingRun(
        rows,
        mapping,
        strict=strict,
        on_reject=on_reject,
        max_events_per_batch=max_events_per_batch,
        data_plan_policy=data_plan_policy,
        chunk_size=chunk_size,
        key_check=key_check,
        group_window=group_window,
    )
