"""The regroup window (mapping stage): a user's rows share batches even when not consecutive.

mParticle's limit is in batches a second, so events per batch decide how long a sync takes.
Rows ordered by time, or in no order, interleave users; grouping only consecutive rows gives
batches of one or two events. The window keeps the open batches of several users at once,
``window`` rows in all, and adds each mapped row to its user's open batch. A batch leaves
the window when it is full, when its user's next row cannot join it (user attributes that
change), or, oldest first, when the window is over its size. Each user's rows keep their
order, and every row keeps its row number and primary key: the window works on rows already
mapped, so rejects are unaffected.

The window knows nothing of how a batch is built: it works with any group that has
``accepts``/``add``/``add_event``/``flush``/``full``/``row_count``, so another engine can share it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .._errors import ConfigurationError
from .provenance import RowRef, SourcedBatch

__all__ = ["DEFAULT_GROUP_WINDOW", "RegroupWindow", "check_group_window"]

#: Rows held by default: enough for a user's rows spread over this many rows to share a
#: batch (measured in benchmarks/ceiling.py), for a few MB of mapped rows.
DEFAULT_GROUP_WINDOW = 10_000

Item = TypeVar("Item")
Item_contra = TypeVar("Item_contra", contravariant=True)


class Group(Protocol[Item_contra]):
    """The batch being filled for one user, as the window sees it."""

    def row_count(self) -> int: ...

    def accepts(self, item: Item_contra, limit: int) -> bool: ...

    def add(self, item: Item_contra, ref: RowRef) -> None: ...

    def add_event(self, event: Any, ref: RowRef) -> None: ...

    def add_events(
        self, events: Sequence[Any], numbers: Sequence[int], keys: Sequence[str | None]
    ) -> None: ...

    def start(
        self, first: Any, events: Sequence[Any], numbers: Sequence[int], keys: Sequence[str | None]
    ) -> None: ...

    def room(self, limit: int) -> int: ...

    def full(self, limit: int) -> bool: ...

    def flush(self) -> SourcedBatch: ...


G = TypeVar("G", bound=Group[Any])


def check_group_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        msg = f"group_window must be a number of rows, 0 or more, got {window!r}"
        raise ConfigurationError(msg)
    return window


def _slot(key: Any) -> int:
    """The key's hash, computed once: the window's dicts are keyed by it.

    Two users whose keys share a hash share a slot; that only ends a batch early, since a
    group refuses a row of another user (it compares the keys themselves).
    """
    try:
        return hash(key)
    except TypeError:
        # A batch-level field holding a dict: its repr tells equal values apart as well.
        return hash(repr(key))


class RegroupWindow(Generic[G]):
    """Open batches of several users, at most ``window`` rows besides the one just added.

    ``push`` adds a mapped row; the batches it completes wait in :attr:`ready` (take them
    with :meth:`take`). ``drain`` ends the input. A window of 0 or 1 groups consecutive
    rows only, as without a window.

    ``splits`` counts batches opened for a user whose previous batch the window had let go
    unfilled, recently: rows of a user further apart than the window.
    """

    def __init__(self, window: int, new_group: Callable[[], G], limit: int) -> None:
        self.window = check_group_window(window)
        self.limit = limit
        self.splits = 0
        self.ready: list[SourcedBatch] = []
        self._new_group = new_group
        self._groups: OrderedDict[int, G] = OrderedDict()
        self._held = 0
        # The group of the last row, while open: most rows continue it.
        self._last: G | None = None
        self._last_key: Any = None
        self._last_slot = 0
        # Users whose batch left unfilled, most recent last, for ``splits``.
        self._let_go: OrderedDict[int, None] = OrderedDict()
        self._let_go_cap = max(window, 1024)

    def push(self, key: Any, item: Any, ref: RowRef) -> None:
        group = self._last
        if (
            group is not None
            and (key is self._last_key or key == self._last_key)
            and group.accepts(item, self.limit)
        ):
            # The common case, kept short: the same user as the row before.
            group.add(item, ref)
            self._held += 1
            if group.full(self.limit):
                self._release(self._last_slot)
            elif self._held > self.window and len(self._groups) > 1:
                self._evict(self._last_slot)
            return
        self._push_other(key, item, ref)

    def push_next(self, event: Any, ref: RowRef) -> bool:
        """Add a row whose user part is that of the row pushed last (the next row of a run
        the Arrow engine mapped): to that row's batch, as ``push`` would, without comparing
        users. False when that batch has left the window (it filled): ``push`` the row."""
        group = self._last
        if group is None:
            return False
        group.add_event(event, ref)
        self._held += 1
        if group.full(self.limit):
            self._release(self._last_slot)
        elif self._held > self.window and len(self._groups) > 1:
            self._evict(self._last_slot)
        return True

    def push_more(
        self, events: Sequence[Any], numbers: Sequence[int], keys: Sequence[str | None], start: int
    ) -> int:
        """``push_next`` for ``events[start:]`` in one step, as many as the batch of the row
        pushed last takes; returns the position of the first row not added (``start`` when
        that batch has left the window: ``push`` that row).

        The same batches, in the same order, as ``push_next`` row by row: rows are only
        added to one batch, so the window lets go of the same oldest batches, once.
        """
        group = self._last
        if group is None:
            return start
        end = min(len(numbers), start + group.room(self.limit))
        if end <= start:
            return start
        group.add_events(events[start:end], numbers[start:end], keys[start:end])
        self._held += end - start
        if group.full(self.limit):
            # Row by row, the rows before the last one may have overfilled the window.
            self._held -= 1
            if self._held > self.window and len(self._groups) > 1:
                self._evict(self._last_slot)
            self._held += 1
            self._release(self._last_slot)
        elif self._held > self.window and len(self._groups) > 1:
            self._evict(self._last_slot)
        return end

    def push_run(
        self,
        key: Any,
        first: Any,
        events: Sequence[Any],
        numbers: Sequence[int],
        keys: Sequence[str | None],
    ) -> int:
        """``push`` of a run's first row (``first``, mapped) and ``push_more`` of the rows
        after it, in one step, for a user without an open batch; returns the rows added
        (0 when the user has one: ``push`` the rows then).

        The same batches, in the same order: letting the oldest batches go once, after the
        rows are added, lets go of those the two steps let go of in turn.
        """
        slot = _slot(key)
        if slot in self._groups:
            return 0
        count = min(len(numbers), self.limit)
        if count < len(numbers):
            events, numbers, keys = events[:count], numbers[:count], keys[:count]
        if slot in self._let_go:
            self.splits += 1
        group = self._groups[slot] = self._new_group()
        group.start(first, events, numbers, keys)
        self._held += count
        self._last, self._last_key, self._last_slot = group, key, slot
        if count == self.limit:
            # Full: as push_more, the window fits the rows before the last before it goes.
            self._held -= 1
            if self._held > self.window and len(self._groups) > 1:
                self._evict(slot)
            self._held += 1
            self._release(slot)
        elif self._held > self.window and len(self._groups) > 1:
            self._evict(slot)
        return count

    def _push_other(self, key: Any, item: Any, ref: RowRef) -> None:
        slot = _slot(key)
        group = self._groups.get(slot)
        if group is not None and not group.accepts(item, self.limit):
            self._release(slot)
            group = None
        if group is None:
            if slot in self._let_go:
                self.splits += 1
            group = self._groups[slot] = self._new_group()
        group.add(item, ref)
        self._held += 1
        self._last, self._last_key, self._last_slot = group, key, slot
        if group.full(self.limit):
            self._release(slot)
        elif self._held > self.window and len(self._groups) > 1:
            self._evict(slot)

    def _evict(self, keep: int) -> None:
        """Let the oldest batches go until the window fits (never the one just added to)."""
        groups = self._groups
        while self._held > self.window and len(groups) > 1:
            oldest, group = groups.popitem(last=False)
            if oldest == keep:
                groups[oldest] = group  # the newest now
                continue
            self._let_go_of(oldest, group)

    def _release(self, slot: int) -> None:
        """Let a filled batch (or one its user's next row cannot join) go."""
        self._flushed(self._groups.pop(slot))

    def _let_go_of(self, slot: int, group: G) -> None:
        """Let an unfilled batch go, taken out of the window already; its user is noted."""
        self._flushed(group)
        let_go = self._let_go
        let_go[slot] = None
        if len(let_go) > self._let_go_cap:
            let_go.popitem(last=False)

    def _flushed(self, group: G) -> None:
        """A batch out of the window, flushed into ``ready``."""
        if group is self._last:
            self._last = None
        self._held -= group.row_count()
        self.ready.append(group.flush())

    def take(self) -> list[SourcedBatch]:
        ready, self.ready = self.ready, []
        return ready

    def drain(self) -> Iterator[SourcedBatch]:
        """Every batch still open, oldest first, then the window is empty."""
        yield from self.take()
        while self._groups:
            _, group = self._groups.popitem(last=False)
            self._held -= group.row_count()
            yield group.flush()
        self._last = None
