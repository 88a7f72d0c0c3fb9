"""The state a sync keeps, as a protocol (sync stage): what the sync core calls.

:class:`SyncState` lists exactly the calls :func:`~mparticle_feed.sync`, the differ and the
delivery make on a state. :class:`~mparticle_feed.StateStore` (one SQLite file) is one
implementation; :class:`~mparticle_feed.TableState` (Parquet files under a directory, for
Spark and Dask) is another. A state of your own passes to ``sync(..., state=...)`` when it
keeps the same promises: an outbox request is durable before the call returns (it is sent
next), an outcome is recorded only against an outbox batch, and an accepted batch's entries
are what :meth:`SyncState.get_many` returns on the next run.

Two more calls are optional, as :class:`~mparticle_feed.StateStore` offers them: with
``sources(name, keys)`` (the keys that have an entry, each with its entry's ``source``
digest or None), a run skips, unmapped, every row whose digest is the one stored; with
``record_sources(name, entries)`` it stores the new digests of rows whose mapped content
was unchanged. A state without them works as well: every row is mapped and compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol, runtime_checkable

from .._delivery.status import OutcomeStatus, StatusName
from .records import InFlightRequest, OutboxBatch, OutboxRequest, StateEntry, SyncStart
from .state import MappingChange

__all__ = ["SyncState"]


@runtime_checkable
class SyncState(Protocol):
    """What a sync needs of its incremental state and outbox (see :class:`StateStore`)."""

    def run_lock(self, name: str) -> AbstractContextManager[None]:
        """Hold sync ``name``'s exclusive lock for a run."""

    def begin_sync(
        self,
        name: str,
        *,
        kind: str,
        fingerprint: str,
        on_mapping_change: MappingChange = "fail",
        plan: str | None = None,
        outbox: Sequence[tuple[str, Sequence[OutboxBatch]]] = (),
        next_seq: int = 0,
    ) -> SyncStart:
        """Start a run: check the mapping, mark it running; what earlier runs left."""

    def finish_sync(self, name: str, *, status: Literal["finished", "stopped"]) -> None:
        """Record how a run ended (a table state commits here)."""

    def fingerprint(self, name: str) -> str | None:
        """The mapping fingerprint ``name`` last ran with, or None."""

    def last_mapping(self, name: str) -> tuple[str, str] | None:
        """The sync kind and mapping fingerprint ``name`` last ran with, or None."""

    def version(self, name: str) -> tuple[int, int]:
        """``(run version, next id sequence number)`` of ``name``."""

    def current_plan(self, name: str) -> str | None:
        """The id of the plan the last run of ``name`` sent, if any."""

    def get_many(self, name: str, keys: Iterable[str]) -> dict[str, StateEntry]:
        """The last accepted entries of those ``keys`` that have one."""

    def outbox_add(
        self,
        name: str,
        requests: Iterable[tuple[str, Sequence[OutboxBatch]]],
        *,
        next_seq: int = 0,
        settled: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Make requests durable before they are sent, with outcomes received since."""

    def outbox(self, name: str) -> list[OutboxRequest]:
        """Unsettled outbox requests of ``name``, oldest first: replayed before mapping."""

    def settle(
        self,
        name: str,
        *,
        source_request_id: str,
        outcome: OutcomeStatus | StatusName,
    ) -> bool:
        """Record one outbox batch's outcome; False when it is not in the outbox."""

    def settle_many(self, name: str, outcomes: Sequence[tuple[str, str]]) -> int:
        """Record ``(source_request_id, outcome)`` pairs; how many left the outbox."""

    def in_flight(self, name: str) -> list[InFlightRequest]:
        """Batches of ``name`` in the outbox whose outcome is unknown."""

    def close(self) -> None:
        """Release what the state holds open."""
