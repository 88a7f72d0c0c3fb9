"""mparticle_feed.dask on a LocalCluster against FakeEventsServer on the driver.

Same acceptance as the Spark tests: the events and ids of one process at 2 and 8
partitions, Arrow dtypes keeping nullable integers and time zones, and a retried task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dask.dataframe")
pytest.importorskip("distributed")

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
from engine_support import (
    MAPPING,
    NOW,
    FailOnceAfterSending,
    budget_rows,
    canonical_batches,
    check_shared_budget,
)

import mparticle_feed.dask
from mparticle_feed import EventsClient, SyncReport
from mparticle_feed.testing import FakeEventsServer

pytestmark = pytest.mark.slow


def frame(data: list[dict[str, Any]]) -> Any:
    # Arrow dtypes from the start: a nullable int stays an int, a timestamp keeps its zone.
    table = pa.Table.from_pylist(data)
    return dd.from_pandas(table.to_pandas(types_mapper=pd.ArrowDtype), npartitions=3)


@pytest.mark.parametrize("partitions", [2, 8])
def test_dask_sends_the_events_and_ids_of_one_process(
    dask_client: Any,
    data: list[dict[str, Any]],
    reference: tuple[dict[str, bytes], SyncReport],
    server: FakeEventsServer,
    partitions: int,
) -> None:
    expected, single = reference
    ddf = frame(data)
    assert str(ddf.dtypes["amount"]) == "int64[pyarrow]"
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        result = mparticle_feed.dask.sync(ddf, MAPPING, client, partitions=partitions, now=NOW)

    assert canonical_batches(server) == expected
    assert set(server.accepted_ids().values()) == {1}
    assert result.now == NOW
    assert result.report.counts() == single.counts()
    assert result.report.by_endpoint == single.by_endpoint
    assert list(result.partitions["partition"]) == list(range(partitions))
    assert int(result.partitions["rows_in"].sum()) == len(data)
    assert sorted(result.problems["primary_key"]) == sorted(
        str(p.row.primary_key) for p in single.rejects
    )
    assert set(result.problems["field"]) == {"event_name"}


def test_a_dask_task_that_dies_after_sending_is_retried_without_loss_or_doubles(
    dask_client: Any,
    data: list[dict[str, Any]],
    reference: tuple[dict[str, bytes], SyncReport],
    server: FakeEventsServer,
    tmp_path: Path,
) -> None:
    expected, single = reference
    marker = tmp_path / "failed-once"
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        sender = FailOnceAfterSending(client, str(marker))
        result = mparticle_feed.dask.sync(
            frame(data), MAPPING, sender, partitions=2, now=NOW, retries=1
        )
    assert marker.exists()
    assert 2 in set(server.accepted_ids().values())
    assert canonical_batches(server) == expected
    assert result.report.counts() == single.counts()


def test_dask_tasks_share_one_budget_under_the_fakes_rate_limit(dask_client: Any) -> None:
    table = pa.Table.from_pylist(budget_rows())
    ddf = dd.from_pandas(table.to_pandas(types_mapper=pd.ArrowDtype), npartitions=2)
    check_shared_budget(mparticle_feed.dask.sync, ddf)
