"""Mapping stage: the Arrow engine's share of skipping rows a sync's state holds unchanged.

Record batches lose their unchanged rows before the engine sees them; the engine's results
then carry positions in what it saw, which are turned back into the input's row numbers,
with each skipped row reported at its own place in between (see :mod:`.unchanged`). Rows
are digested from the values ``to_pylist`` gives, as the row path reads an Arrow source,
so both paths store the same digests (column by column: no dict per row).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .arrow import Result, Run
from .arrow_columns import normalised
from .provenance import RowRef
from .unchanged import (
    SKIP_CHUNK,
    KnownRows,
    SourceDigest,
    keyed_column_digests,
)

if TYPE_CHECKING:
    from .compile import CompiledMapping

__all__ = ["ArrowSkip"]

#: What the queue holds per input row, in order: its row number, and the key of a row
#: left out (or None for a row the engine maps).
_Item = tuple[int, str | None]


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

    def filtered(self, reader: Iterable[Any]) -> Iterator[Any]:
        """The record batches with their unchanged rows left out."""
        import pyarrow as pa

        for read in reader:
            for offset in range(0, read.num_rows, SKIP_CHUNK):
                part = normalised(pa, read.slice(offset, SKIP_CHUNK))
                kept = self._queue_slice(self._digests(part), part.num_rows)
                if not self._unnumbered:
                    # Every row before these was numbered: report the skipped ones now, so
                    # the queue stays short even when no row at all is mapped.
                    self._skip_until(None)
                if len(kept) == part.num_rows:
                    yield part
                elif kept:
                    yield part.take(pa.array(kept, pa.int64()))

    def _digests(self, part: Any) -> list[tuple[str, str] | None]:
        """The slice's keys and digests, from its columns as ``to_pylist`` gives them (the
        names are distinct: a source naming two columns alike is refused before any row)."""
        columns = [column.to_pylist() for column in part.columns]
        return keyed_column_digests(tuple(part.schema.names), columns, self._compiled, self._digest)

    def _queue_slice(self, digests: list[tuple[str, str] | None], count: int) -> list[int]:
        """Queue every row; the positions of those the engine maps."""
        stored = self._known.stored_sources([pair[0] for pair in digests if pair is not None])
        kept: list[int] = []
        start = self._read
        for index, pair in enumerate(digests):
            number = start + index + 1
            if pair is not None and stored.get(pair[0]) == pair[1]:
                self._queue.append((number, pair[0]))
                continue
            self._queue.append((number, None))
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
                item.refs = [self._number(ref) for ref in item.refs]
                yield item
            else:
                ref, outcome = item
                yield self._number(ref), outcome
        self._skip_until(None)

    def _number(self, ref: RowRef) -> RowRef:
        number = self._skip_until(ref.row_number)
        # Until a row is skipped the engine's positions are the input's: no new reference.
        return ref if number == ref.row_number else RowRef(number, ref.primary_key)

    def _skip_until(self, position: int | None) -> int:
        """Report queued skipped rows up to the engine's next row (all of them: None);
        that row's input number."""
        queue = self._queue
        keys: list[str] = []
        first = 0
        while queue:
            number, key = queue.popleft()
            if key is None:
                if keys:
                    self._on_skip(first, keys)  # consecutive rows: numbered from the first
                self._unnumbered -= 1
                return number
            if not keys:
                first = number
            keys.append(key)
        if keys:
            self._on_skip(first, keys)
        if position is not None:
            msg = f"the engine gave a row ({position}) that was not read"
            raise AssertionError(msg)
        return 0
