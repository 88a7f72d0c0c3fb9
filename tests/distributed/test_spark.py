"""mparticle_feed.spark on a local[2] Spark against FakeEventsServer on the driver.

Acceptance: the events (canonical JSON after de-duplication by id) and the ids equal a
single-process sync of the same rows ordered by (user, key) with the same ``now``, at 2 and
8 partitions; a task that dies after sending is retried, and nothing is lost or doubled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")

from engine_support import (
    MAPPING,
    NOW,
    SPARK_SCHEMA,
    FailOnceAfterSending,
    budget_rows,
    canonical_batches,
    check_shared_budget,
)

import mparticle_feed.spark
from mparticle_feed import (
    Computed,
    ConfigurationError,
    Constant,
    CustomEventMapping,
    DeliveryError,
    EventsClient,
    SyncReport,
)
from mparticle_feed.testing import FakeEventsServer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("partitions", [2, 8])
def test_spark_sends_the_events_and_ids_of_one_process(
    spark: Any,
    data: list[dict[str, Any]],
    reference: tuple[dict[str, bytes], SyncReport],
    server: FakeEventsServer,
    partitions: int,
) -> None:
    expected, single = reference
    frame = spark.createDataFrame(data, SPARK_SCHEMA)
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        result = mparticle_feed.spark.sync(frame, MAPPING, client, partitions=partitions, now=NOW)

    assert canonical_batches(server) == expected
    assert set(server.accepted_ids().values()) == {1}
    report = result.report
    assert result.now == NOW
    assert report.counts() == single.counts()
    assert report.by_endpoint == single.by_endpoint
    assert report.historical_rows() > 0
    assert report.live_rows() > 0

    counts = result.partitions.orderBy("partition").collect()
    assert [row["partition"] for row in counts] == list(range(partitions))
    assert sum(row["rows_in"] for row in counts) == len(data)
    assert sum(row["batches_accepted"] for row in counts) == len(expected)

    problems = result.problems.collect()
    assert sorted(row["primary_key"] for row in problems) == sorted(
        str(p.row.primary_key) for p in single.rejects
    )
    assert {(row["outcome"], row["stage"], row["field"]) for row in problems} == {
        ("rejected", "mapping", "event_name")
    }
    with pytest.raises(DeliveryError, match="not accepted"):
        result.raise_for_failures()
    result.raise_for_failures(allow_rejected=True)


def test_a_task_that_dies_after_sending_is_retried_without_loss_or_doubles(
    spark: Any,
    data: list[dict[str, Any]],
    reference: tuple[dict[str, bytes], SyncReport],
    server: FakeEventsServer,
    tmp_path: Path,
) -> None:
    expected, single = reference
    marker = tmp_path / "failed-once"
    frame = spark.createDataFrame(data, SPARK_SCHEMA)
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        sender = FailOnceAfterSending(client, str(marker))
        result = mparticle_feed.spark.sync(frame, MAPPING, sender, partitions=2, now=NOW)

    assert marker.exists()
    retried = [part for part in result.parts if part.attempt > 0]
    assert [part.attempt for part in retried] == [1]
    # The retry resent the failed attempt's batches under the same ids; mParticle (and
    # the fake) keep one of each, so the events equal one process's.
    sent_twice = [i for i, n in server.accepted_ids().items() if n == 2]
    assert len(sent_twice) == retried[0].report.batches["accepted"]
    assert set(server.accepted_ids().values()) == {1, 2}
    assert canonical_batches(server) == expected
    assert result.report.counts() == single.counts()


def test_spark_groups_by_the_given_columns_when_an_identity_is_code(
    spark: Any, server: FakeEventsServer
) -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": Computed(customer)},
        event_name=Constant("View"),
        timestamp_unixtime_ms="ts",
    )
    data = [
        {"id": f"r{n:02d}", "tenant": f"t{n % 2}", "user": f"u{n % 5}", "ts": NOW}
        for n in range(40)
    ]
    frame = spark.createDataFrame(data, "id string, tenant string, user string, ts timestamp")
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        with pytest.raises(ConfigurationError, match="computed by code"):
            mparticle_feed.spark.sync(frame, mapping, client, now=NOW)
        with pytest.raises(ConfigurationError, match="no column 'region'"):
            mparticle_feed.spark.sync(frame, mapping, client, by=["region"], now=NOW)
        result = mparticle_feed.spark.sync(frame, mapping, client, by=["tenant", "user"], now=NOW)

    assert result.ok
    result.raise_for_failures()
    # Spark chose the number of tasks (adaptive execution may coalesce the 4 of the fixture).
    counts = result.partitions.collect()
    assert 1 <= len(counts) <= 4
    assert sum(row["rows_in"] for row in counts) == 40
    assert result.problems.count() == 0
    # One batch per (tenant, user): ten users, each whole in one task.
    assert len(server.accepted_batches()) == 10


def customer(row: Any) -> str:
    return f"{row['tenant']}/{row['user']}"


def test_spark_tasks_share_one_budget_under_the_fakes_rate_limit(spark: Any) -> None:
    data = [(row["id"], row["user"], row["ts"]) for row in budget_rows()]
    frame = spark.createDataFrame(data, "id string, user string, ts timestamp")
    check_shared_budget(mparticle_feed.spark.sync, frame)
