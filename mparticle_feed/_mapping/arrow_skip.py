"""Mapping stage: the Arrow engine's share of skipping rows a sync's state holds unchanged.

Record batches lose their unchanged rows before the engine sees them; the engine's results
then carry positions in what it saw, which are turned back into the input's row numbers,
with each skipped row reported at its own place in between (see :mod:`.unchanged`). Rows
are digested from the values ``to_pylist`` gives, as the row path reads an Arrow source,
so both paths store the same digests (column by column: no dict per row).

A slice read before with the same content is not digested row by row again: its Arrow
bytes are hashed at once, and the digest of its rows' digests recorded then is compared
with the one the state's stored digests give now (see :meth:`.KnownRows.known_slice`).
Equal, every row of the slice is one the row-by-row check would skip.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

from .arrow import Result, Run
from .arrow_columns import normalised
from .pending import _with_event
from .provenance import RowRef
from .unchanged import (
    SKIP_CHUNK,
    KnownRows,
    SourceDigest,
    column_keys,
    keyed_column_digests,
    rows_digest,
    rows_text,
)

if TYPE_CHECKING:
    from .compile import CompiledMapping

__all__ = ["ArrowSkip"]

#: What the queue holds, in input order: a row the engine maps (its row number, None), or
#: consecutive rows left out (the first one's row number, their keys).
_Item = tuple[int, list[str] | None]


class ArrowSkip:
    """Filters an Arrow reader's unchanged rows out, then numbers the engine's results."""

    def __init__(
        self,
        compiled: CompiledMapping,
        digest: SourceDigest,
        known: KnownRows,
        on_skip: Callable[[int, list[str]], None],
    ) -> None:
        self._compiled = compiled
        self._digest = digest
        self._known = known
        self._on_skip = on_skip
        self._queue: deque[_Item] = deque()
        self._read = 0
        #: Rows handed to the engine and not yet numbered.
        self._unnumbered = 0
        #: Per schema (a reader's batches share one), what its slices' digests start with;
        #: None for a schema whose Arrow bytes do not hold every value.
        self._schemas: dict[Any, bytes | None] = {}

    def filtered(self, reader: Iterable[Any]) -> Iterator[Any]:
        """The record batches with their unchanged rows left out."""
        import pyarrow as pa

        for read in reader:
            for offset in range(0, read.num_rows, SKIP_CHUNK):
                part = normalised(pa, read.slice(offset, SKIP_CHUNK))
                kept = self._skip_slice(part)
                if not self._unnumbered:
                    # Every row before these was numbered: report the skipped ones now, so
                    # the queue stays short even when no row at all is mapped.
                    self._skip_until(None)
                if len(kept) == part.num_rows:
                    yield part
                elif kept:
                    yield part.take(pa.array(kept, pa.int64()))

    def _skip_slice(self, part: Any) -> list[int]:
        """Queue the slice's rows; the positions of those the engine maps."""
        names = tuple(part.schema.names)
        column = self._compiled.key_column
        if column is None or column not in names:
            return self._queue_slice([None] * part.num_rows, {}, part.num_rows)
        keys = _keys(part.column(names.index(column)), self._compiled)
        # A row the mapping rejects or always maps (no key) is digested and mapped as usual.
        sliced = None if None in keys else self._slice_digest(part)
        if sliced is None:
            stored = self._known.stored_sources([key for key in keys if key is not None])
        else:
            every = cast("list[str]", keys)
            recorded = self._known.known_slice(sliced)
            if recorded is not None and self._span_holds(every, recorded):
                return self._skip_whole(every, sliced, recorded)
            stored = self._known.stored_sources(every)
            if recorded is not None and recorded == rows_digest(rows_text(stored.items())):
                return self._skip_whole(every, sliced, recorded)
        columns = [column.to_pylist() for column in part.columns]
        digests = keyed_column_digests(names, columns, keys, self._digest)
        if sliced is not None and None not in digests:
            pairs = cast("list[tuple[str, str]]", digests)
            if len(dict(pairs)) == len(pairs):  # a key twice: not a slice to vouch for
                self._known.saw_slice(sliced, rows_digest(rows_text(pairs)))
        return self._queue_slice(digests, stored, part.num_rows)

    def _span_holds(self, keys: list[str], recorded: str) -> bool:
        """Whether the state's entries from the slice's least key to its greatest are
        exactly its keys, with the digests recorded (cheap where keys come in runs). A
        recorded slice has no key twice, nor has one with the same bytes."""
        span = self._known.stored_span(min(keys), max(keys), len(keys))
        return span is not None and rows_digest(span) == recorded

    def _skip_whole(self, keys: list[str], sliced: str, recorded: str) -> list[int]:
        """Every row of the slice is unchanged: queued as one run of skipped rows."""
        self._queue.append((self._read + 1, keys))
        self._read += len(keys)
        self._known.saw_slice(sliced, recorded)
        return []

    def _slice_digest(self, part: Any) -> str | None:
        """A digest of the slice's content and types, salted as the rows' digests are; None
        when its Arrow bytes do not hold all of it (a dictionary column's are indices)."""
        import pyarrow as pa

        schema = part.schema
        if schema not in self._schemas:
            if len(self._schemas) > 16:
                self._schemas.clear()
            # The Arrow version too: a new one may read the same bytes as other values.
            self._schemas[schema] = (
                None
                if any(_holds_dictionary(pa, field.type) for field in schema)
                else f"slice/1 pyarrow {pa.__version__}\n".encode()
                + schema.serialize().to_pybytes()
            )
        written = self._schemas[schema]
        if written is None:
            return None
        hasher = hashlib.blake2b(self._digest.salt, digest_size=16)
        hasher.update(written)
        hasher.update(part.serialize())
        return hasher.hexdigest()

    def _queue_slice(
        self, digests: list[tuple[str, str] | None], stored: Mapping[str, str], count: int
    ) -> list[int]:
        """Queue every row; the positions of those the engine maps."""
        kept: list[int] = []
        start = self._read
        queue = self._queue
        skipped: list[str] = []
        for index, pair in enumerate(digests):
            number = start + index + 1
            if pair is not None and stored.get(pair[0]) == pair[1]:
                if not skipped:
                    queue.append((number, skipped))
                skipped.append(pair[0])
                continue
            skipped = []
            queue.append((number, None))
            self._unnumbered += 1
            kept.append(index)
            if pair is not None:
                self._known.kept(number, pair[1])
        self._read += count
        return kept

    def numbered(self, results: Iterator[Result | Run]) -> Iterator[Result | Run]:
        """The engine's results with the input's row numbers; skipped rows reported between."""
        for item in results:
            if isinstance(item, Run):
                yield from self._numbered_run(item)
            else:
                ref, outcome = item
                yield self._number(ref), outcome
        self._skip_until(None)

    def _numbered_run(self, run: Run) -> Iterator[Run]:
        """``run`` numbered; cut where skipped rows fall between two of its rows, so that
        the rows before them are checked for repeated keys before the skipped ones are."""
        start = 0
        numbered: list[int] = []
        queue = self._queue
        for position, number in enumerate(run.numbers):
            if position > start and queue and queue[0][1] is not None:
                yield _part(run, start, position, numbered)
                start, numbered = position, []
            numbered.append(self._skip_until(number))
        yield _part(run, start, len(run.numbers), numbered)

    def _number(self, ref: RowRef) -> RowRef:
        number = self._skip_until(ref.row_number)
        # Until a row is skipped the engine's positions are the input's: no new reference.
        return ref if number == ref.row_number else RowRef(number, ref.primary_key)

    def _skip_until(self, position: int | None) -> int:
        """Report queued skipped rows up to the engine's next row (all of them: None);
        that row's input number."""
        queue = self._queue
        while queue:
            number, keys = queue.popleft()
            if keys is None:
                self._unnumbered -= 1
                return number
            self._on_skip(number, keys)  # consecutive rows, numbered from the first
        if position is not None:
            msg = f"the engine gave a row ({position}) that was not read"
            raise AssertionError(msg)
        return 0


def _keys(column: Any, compiled: CompiledMapping) -> list[str | None]:
    """:func:`column_keys` of an Arrow column; text without nulls is its own keys (Arrow
    text is valid UTF-8: nothing to check)."""
    import pyarrow as pa

    values = column.to_pylist()
    if column.null_count == 0 and (
        pa.types.is_string(column.type) or pa.types.is_large_string(column.type)
    ):
        return values  # type: ignore[no-any-return]
    return column_keys(values, compiled)


def _part(run: Run, start: int, end: int, numbers: list[int]) -> Run:
    """Rows ``start`` to ``end`` of ``run``, with these input row numbers."""
    if start == 0 and end == len(run.numbers):
        run.numbers = numbers
        return run
    first = run.first if start == 0 else _with_event(run.first, run.events[start])
    return Run(first, numbers, run.keys[start:end], run.events[start:end], run.cuts[start:end])


def _holds_dictionary(pa: Any, kind: Any) -> bool:
    """Whether an Arrow type is, or holds, a dictionary type."""
    if pa.types.is_dictionary(kind):
        return True
    return any(_holds_dictionary(pa, kind.field(index).type) for index in range(kind.num_fields))
