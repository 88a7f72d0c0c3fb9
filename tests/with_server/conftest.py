from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mparticle_feed import Batch, CustomEvent, UserIdentities
from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed.testing import FakeClock, FakeEventsServer

KEY = "test-key"
SECRET = "s3cr3t-never-shown"


@pytest.fixture
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer(api_key=KEY, api_secret=SECRET) as fake:
        yield fake


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(
    server: FakeEventsServer, clock: FakeClock
) -> Iterator[Callable[..., EventsClient]]:
    clients: list[EventsClient] = []

    def make(**options: Any) -> EventsClient:
        options.setdefault("base_url", server.url)
        options.setdefault("clock", clock)
        options.setdefault("sleep", clock.sleep)
        options.setdefault("timeout", 1.0)
        options.setdefault("retry", RetryPolicy(max_attempts=6, max_retry_after=600))
        options.setdefault("rate_limit", None)  # pacing has tests of its own
        client = EventsClient(KEY, SECRET, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


NOW = datetime.now(timezone.utc)


def batches(
    count: int, *, days_old: float = 1, users: int | None = None, prefix: str = "u"
) -> list[Batch]:
    return [
        Batch(
            events=[
                CustomEvent(
                    event_name=f"event-{number}",
                    custom_event_type="other",
                    timestamp_unixtime_ms=NOW - timedelta(days=days_old, seconds=number),
                )
            ],
            user_identities=UserIdentities(
                customer_id=f"{prefix}{number % users if users else number}"
            ),
        )
        for number in range(count)
    ]
