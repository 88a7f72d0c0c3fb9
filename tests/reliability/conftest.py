"""Fixtures of the fault-injection suite: servers, a fake clock, the scorecard, the secret watch."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The suite's helpers are plain modules beside this file (pytest runs with importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_kit import Scorecard, fake_server, secret_leaks

from mparticle_feed.testing import FakeClock, FakeEventsServer

_SCORECARD = Scorecard()


@pytest.fixture(scope="session")
def scorecard() -> Iterator[Scorecard]:
    """The session's scorecard; written to disk when the session ends."""
    yield _SCORECARD
    leaks = secret_leaks(_SCORECARD.to_json())
    assert not leaks, "the API secret reached the scorecard"
    _SCORECARD.write()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_server() -> Iterator[Callable[..., FakeEventsServer]]:
    """Build fake servers (see :func:`reliability_kit.fake_server`), closed when the test ends."""
    servers: list[FakeEventsServer] = []

    def make(**kwargs: Any) -> FakeEventsServer:
        server = fake_server(**kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def _secret_watch(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Every scenario runs with all loggers at DEBUG; nothing captured may hold the secret."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    # Hand the output back so a failing test still shows it.
    sys.stdout.write(out)
    sys.stderr.write(err)
    texts = [out, err]
    # caplog.records is only the current phase (teardown): read setup and call explicitly.
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    for record in records:
        texts.append(logging.Formatter().format(record))
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        texts.append(repr(record.__dict__))
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
            texts.append(str(record.exc_info[1]))
    leaked = [form for text in texts for form in secret_leaks(text)]
    assert not leaked, f"the API secret appeared in captured output or logs ({len(leaked)} times)"
