"""The retry policy (``mparticle_feed._delivery.retry``): the waits and ``Retry-After``.

How the client applies it against a server is in ``tests/with_server/test_client.py``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._delivery.retry import RETRYABLE_STATUSES, classify, parse_retry_after

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@given(
    initial=st.floats(0.001, 10),
    cap=st.floats(0.001, 100),
    retry=st.integers(1, 10_000),
    draw=st.floats(0, 1),
)
def test_backoff_is_full_jitter_under_a_capped_exponential(
    initial: float, cap: float, retry: int, draw: float
) -> None:
    policy = mpf.RetryPolicy(initial_backoff=initial, max_backoff=cap)
    bound = policy.backoff_bound(retry)
    assert bound == min(cap, initial * 2.0 ** min(retry - 1, 64))
    assert math.isfinite(bound)
    assert 0 <= policy.backoff(retry, lambda: draw) == draw * bound <= cap


def test_the_bound_doubles_until_the_cap() -> None:
    policy = mpf.RetryPolicy(initial_backoff=0.5, max_backoff=3.0)
    assert [policy.backoff_bound(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"initial_backoff": 0},
        {"max_backoff": -1},
        {"deadline": 0},
        {"max_retry_after": -0.5},
        {"max_stall": 0},
    ],
)
def test_a_policy_out_of_range_is_a_configuration_error(options: dict[str, float]) -> None:
    with pytest.raises(mpf.ConfigurationError) as caught:
        mpf.RetryPolicy(**options)  # type: ignore[arg-type]
    assert next(iter(options)) in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_every_5xx_408_and_429_are_retryable_and_nothing_else() -> None:
    assert {408, 429} | set(range(500, 600)) == RETRYABLE_STATUSES
    assert not {400, 401, 403, 404, 413} & RETRYABLE_STATUSES


@given(st.floats(0, 1e9, allow_nan=False))
def test_retry_after_seconds(seconds: float) -> None:
    assert parse_retry_after(repr(seconds)) == seconds
    assert parse_retry_after(f"  {int(seconds)} ") == int(seconds)


@given(st.integers(0, 10 * 86_400))
def test_retry_after_http_date(seconds: int) -> None:
    when = format_datetime(NOW + timedelta(seconds=seconds), usegmt=True)
    assert parse_retry_after(when, now=NOW) == seconds


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("-5", 0.0),
        ("-inf", 0.0),
        ("inf", math.inf),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
    ],
)
def test_retry_after_edge_cases(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("status", "certificate_problem", "batch_count", "verdict"),
    [
        (None, False, 1, "retry"),
        (None, True, 1, "untrusted server"),
        (202, False, 3, "accepted"),
        (401, False, 3, "refused credentials"),
        (403, False, 1, "refused credentials"),
        (429, False, 3, "retry"),
        (503, False, 3, "retry"),
        (408, False, 1, "retry"),
        (400, False, 2, "bisect"),
        (413, False, 2, "bisect"),
        (400, False, 1, "rejected"),
        (404, False, 5, "rejected"),
        (302, False, 5, "rejected"),
    ],
)
def test_classify_says_what_an_answer_means(
    status: int | None, certificate_problem: bool, batch_count: int, verdict: str
) -> None:
    found = classify(status, certificate_problem=certificate_problem, batch_count=batch_count)
    assert found == verdict
