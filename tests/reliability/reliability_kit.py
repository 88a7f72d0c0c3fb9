"""What every reliability scenario shares: the fake server, the scorecard, the secret.

A scenario runs, then calls :func:`Scorecard.record` with its :class:`Figures`; the
session writes all rows to ``$MPF_SCORECARD`` (default ``scorecard.json`` at the repo
root) and ``print_scorecard.py`` prints them as a table.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builders import NOW

from mparticle_feed.testing import FakeClock, FakeEventsServer, Reply

__all__ = [
    "API_KEY",
    "API_SECRET",
    "SECRET_FORMS",
    "Figures",
    "Scorecard",
    "fake_server",
    "scorecard_path",
    "secret_leaks",
]

ROOT = Path(__file__).resolve().parents[2]

API_KEY = "us1-reliability-key"
#: Unmistakable, so a search for it cannot match anything by chance.
API_SECRET = "S3cr3t-ZQX9-never-print-me-41f7"
#: The secret as it could leak: plain, or inside a Basic Authorization header.
SECRET_FORMS: tuple[str, ...] = (
    API_SECRET,
    base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode(),
    base64.b64encode(f":{API_SECRET}".encode()).decode()[4:],
)


def secret_leaks(text: str) -> list[str]:
    """The forms of the secret found in ``text`` (empty when it is clean)."""
    return [form for form in SECRET_FORMS if form in text]


def fake_server(
    *, script: Sequence[Reply | int] = (), start: bool = True, **options: Any
) -> FakeEventsServer:
    """A fake Events API that knows the suite's credentials; ``script`` queues replies.

    Its ``now`` is the scenarios' fixed :data:`builders.NOW`. With ``start=False`` it
    refuses connections until ``start()``.
    """
    options.setdefault("now", lambda: NOW)
    server = FakeEventsServer(api_key=API_KEY, api_secret=API_SECRET, **options)
    server.script(*script)
    return server.start() if start else server


@dataclass
class Figures:
    """One scorecard row: what a scenario put in and what became of it."""

    scenario: str
    rows_in: int
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    pending: int = 0
    requests_sent: int = 0
    attempts_total: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    sleeps: int = 0
    slept_seconds: float = 0.0
    ids_sent_more_than_once: int = 0
    unique_ids_at_server: int = 0
    max_request_bytes: int = 0
    max_batch_bytes: int = 0
    open_connections_after: int = 0
    note: str = ""

    @property
    def invariant_holds(self) -> bool:
        """rows in = accepted + rejected + failed + pending."""
        return self.rows_in == self.accepted + self.rejected + self.failed + self.pending

    def with_server(self, server: FakeEventsServer) -> Figures:
        """Fill the figures the server measured (requests, ids, sizes, connections)."""
        requests = server.requests
        counts = server.received_ids()
        self.requests_sent = len(requests)
        self.unique_ids_at_server = len(counts)
        self.ids_sent_more_than_once = sum(1 for n in counts.values() if n > 1)
        self.max_request_bytes = max((len(r.body) for r in requests), default=0)
        self.max_batch_bytes = max((s for r in requests for s in r.batch_sizes), default=0)
        self.open_connections_after = server.wait_for_open_connections(0)
        return self

    def with_clock(self, clock: FakeClock) -> Figures:
        self.sleeps = len(clock.sleeps)
        self.slept_seconds = round(clock.slept, 3)
        return self

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["invariant_holds"] = self.invariant_holds
        return row


def scorecard_path() -> Path:
    """Where the scorecard goes: ``$MPF_SCORECARD`` or ``scorecard.json`` at the repo root."""
    configured = os.environ.get("MPF_SCORECARD")
    return Path(configured) if configured else ROOT / "scorecard.json"


class Scorecard:
    """The rows recorded during one pytest session."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def record(self, figures: Figures) -> Figures:
        """Add a scenario's row, asserting the invariant first so a broken run cannot score."""
        assert figures.invariant_holds, (
            f"{figures.scenario}: rows in {figures.rows_in} != accepted {figures.accepted}"
            f" + rejected {figures.rejected} + failed {figures.failed} + pending {figures.pending}"
        )
        with self._lock:
            self._rows[figures.scenario] = figures.as_row()
        return figures

    @property
    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._rows[k] for k in sorted(self._rows, key=_scenario_order)]

    def to_json(self) -> str:
        return json.dumps({"scenarios": self.rows}, indent=2, sort_keys=False)

    def write(self, path: Path | None = None) -> Path:
        target = path or scorecard_path()
        if not self.rows:
            return target
        # Merge with rows a previous partial run wrote (e.g. `pytest -k R4`), newest wins.
        existing: dict[str, dict[str, Any]] = {}
        if target.is_file():
            try:
                for row in json.loads(target.read_text(encoding="utf-8")).get("scenarios", []):
                    existing[row["scenario"]] = row
            except (ValueError, KeyError, TypeError, AttributeError):
                existing = {}
        for row in self.rows:
            existing[row["scenario"]] = row
        merged = [existing[k] for k in sorted(existing, key=_scenario_order)]
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps({"scenarios": merged}, indent=2) + "\n", encoding="utf-8")
        tmp.replace(target)
        return target


def _scenario_order(name: str) -> tuple[int, str]:
    head = name.split(maxsplit=1)[0].split("-", 1)[0].split("_", 1)[0]
    if head.startswith("R") and head[1:].isdigit():
        return int(head[1:]), name
    return 1_000, name


def count_outcomes(
    statuses: Iterable[str], weights: Iterable[int] | None = None
) -> Mapping[str, int]:
    """Tally outcome statuses, each weighted by its row count when ``weights`` is given."""
    tally: dict[str, int] = {"accepted": 0, "rejected": 0, "failed": 0, "pending": 0}
    ws = list(weights) if weights is not None else None
    for i, status in enumerate(statuses):
        tally[status] = tally.get(status, 0) + (ws[i] if ws is not None else 1)
    return tally
