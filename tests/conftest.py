from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

# Helpers beside this file are plain modules (pytest runs with importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import schema_oracle  # noqa: E402
from sync_data import NOW  # noqa: E402

from mparticle_feed import EventsClient  # noqa: E402
from mparticle_feed.testing import FakeEventsServer  # noqa: E402

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
# CI explores a fixed sequence of examples, so a landing never hinges on a lucky draw;
# local runs stay random and keep finding new cases.
settings.register_profile(
    "ci", parent=settings.get_profile("default"), max_examples=100, derandomize=True
)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """mParticle's published schemas and sample (see ``tests/schema_oracle.py``)."""
    return schema_oracle.reference_dir_or_skip()


@pytest.fixture(scope="session")
def schema_problems(reference_dir: Path) -> Any:
    """``schema_problems(doc, "2026" | "2021") -> list[str]``: [] when the document is valid."""
    return schema_oracle.SchemaOracle(reference_dir).problems


@pytest.fixture(scope="session")
def postgres_dsn() -> Any:
    """A throwaway PostgreSQL server for the session (see ``tests/postgres_server.py``)."""
    import postgres_server

    with postgres_server.running_server() as dsn:
        yield dsn


# The fake and the one-worker client most sync tests share; a module with other needs (a
# rate limit, more workers, another clock) defines its own ``server``/``client``.
@pytest.fixture
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer(now=lambda: NOW) as fake:
        yield fake


@pytest.fixture
def client(server: FakeEventsServer) -> Iterator[EventsClient]:
    with EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as events:
        yield events
