"""Spark and Dask syncs against a TableState (issue 17): incremental runs, dead jobs.

"Held" is what mParticle keeps: the accepted batches de-duplicated by id. Acceptance:
the second run from table state sends exactly the changed rows; a job that dies after its
tasks sent (the commit never happens) is neither lost nor doubled by the next run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

pytest.importorskip("pyarrow")

from engine_support import (
    MAPPING,
    NOW,
    SPARK_SCHEMA,
    DiesAfterSending,
    FailOnceAfterSending,
    rows,
    sort_key,
)

from mparticle_feed import EventsClient, StateStore, TableState, sync, table_to_sqlite
from mparticle_feed._sync import tablerun
from mparticle_feed.testing import FakeEventsServer

pytestmark = pytest.mark.slow

NAME = "custom_event"


class KilledError(Exception):
    """The driver dying between the job and its commit."""


@pytest.fixture(scope="module")
def data() -> list[dict[str, Any]]:
    return rows(1500, users=200)


@pytest.fixture(scope="module")
def single_entries(data: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The entries one process with a SQLite state records for the same rows (without the
    source digests, which a table state does not keep: its tasks map every row)."""
    path = tmp_path_factory.mktemp("single") / "state.sqlite"
    with (
        FakeEventsServer(now=lambda: NOW) as server,
        EventsClient("test-key", "test-secret", base_url=server.url) as client,
        StateStore(path) as store,
    ):
        sync(sorted(data, key=sort_key), MAPPING, client, state=store, now=NOW)
        return [attrs.evolve(entry, source=None) for entry in store.entries(NAME)]


def changed(data: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
    """Every 37th mappable row with a new amount; the ids of the rows changed."""
    out, ids = [], set()
    for n, row in enumerate(data):
        if n % 37 == 1 and row["name"] is not None:
            ids.add(row["id"])
            out.append({**row, "amount": 777_777})
        else:
            out.append(row)
    return out, ids


def held_row_ids(server: FakeEventsServer) -> list[str]:
    """The row id of every event mParticle holds, once per batch id."""
    return sorted(
        str(event.custom_attributes["row_id"])  # type: ignore[union-attr,index]
        for batch in server.accepted_batches()
        for event in batch.events or ()
    )


def quiet(state: TableState, idle: Callable[[], bool], *, seconds: float = 2.0) -> None:
    """Wait until the failed job's tasks have stopped: engines stop the other tasks of a
    failed job asynchronously (Dask lets them run on), and one still sending would overlap
    the next run. Idle, and the task logs unchanged for ``seconds``."""
    jobs = os.path.join(state.folder(NAME), "jobs")
    last, still = None, 0.0
    deadline = time.monotonic() + 120
    while still < seconds and time.monotonic() < deadline:
        sizes = sorted(
            (path, os.path.getsize(os.path.join(root, path)))
            for root, _, files in os.walk(jobs)
            for path in files
        )
        still = still + 0.25 if sizes == last and idle() else 0.0
        last = sizes
        time.sleep(0.25)


def spark_run(spark: Any) -> Callable[..., Any]:
    import mparticle_feed.spark

    def run(data: list[dict[str, Any]], client: Any, **options: Any) -> Any:
        frame = spark.createDataFrame(data, SPARK_SCHEMA)
        return mparticle_feed.spark.sync(frame, MAPPING, client, now=NOW, **options)

    run.idle = lambda: not spark.sparkContext.statusTracker().getActiveStageIds()  # type: ignore[attr-defined]
    return run


def dask_run(dask_client: Any) -> Callable[..., Any]:
    import dask.dataframe as dd
    import pandas as pd
    import pyarrow as pa

    import mparticle_feed.dask

    def run(data: list[dict[str, Any]], client: Any, **options: Any) -> Any:
        table = pa.Table.from_pylist(data)
        frame = dd.from_pandas(table.to_pandas(types_mapper=pd.ArrowDtype), npartitions=3)
        if isinstance(client, FailOnceAfterSending):
            options["retries"] = 1
        return mparticle_feed.dask.sync(frame, MAPPING, client, now=NOW, **options)

    def idle() -> bool:
        # A task of a failed compute goes on running on its worker (a thread cannot be
        # stopped) after the scheduler forgot it: ask the workers what they still execute.
        # The scheduler may also start a task of it late (its inputs came in after).
        executing = dask_client.run(lambda dask_worker: len(dask_worker.state.executing))
        known = dask_client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
        return not known and not any(executing.values())

    # The fixture made the LocalCluster the active scheduler.
    run.idle = idle  # type: ignore[attr-defined]
    return run


@pytest.fixture(params=["spark", "dask"])
def engine(request: pytest.FixtureRequest) -> Callable[..., Any]:
    if request.param == "spark":
        pytest.importorskip("pyspark")
        return spark_run(request.getfixturevalue("spark"))
    pytest.importorskip("distributed")
    return dask_run(request.getfixturevalue("dask_client"))


def test_the_second_run_from_table_state_sends_exactly_the_changed_rows(
    engine: Callable[..., Any],
    data: list[dict[str, Any]],
    single_entries: Any,
    server: FakeEventsServer,
    tmp_path: Path,
) -> None:
    state = TableState(tmp_path / "state")
    marker = tmp_path / "failed-once"
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        # A task dies after sending and is retried: its failed attempt's log is superseded.
        first = engine(data, FailOnceAfterSending(client, str(marker)), partitions=4, state=state)
        assert marker.exists()
        assert list(state.entries(NAME)) == single_entries
        accepted = first.report.accepted
        assert first.report.sent == accepted == state.count(NAME)

        server.clear()
        second_data, ids = changed(data)
        second = engine(second_data, client, partitions=3, state=state)
    assert held_row_ids(server) == sorted(ids)
    assert (second.report.sent, second.report.unchanged) == (len(ids), accepted - len(ids))
    assert state.count(NAME) == accepted
    jobs = os.path.join(state.folder(NAME), "jobs")
    assert not os.path.isdir(jobs) or os.listdir(jobs) == []

    # The state converts to a SQLite file from which one process sees nothing changed.
    table_to_sqlite(state, tmp_path / "back.sqlite")
    server.clear()
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        again = sync(second_data, MAPPING, client, state=tmp_path / "back.sqlite", now=NOW)
    assert (again.sent, again.unchanged) == (0, accepted)


def test_a_job_killed_before_its_commit_is_neither_lost_nor_doubled(
    engine: Callable[..., Any],
    data: list[dict[str, Any]],
    server: FakeEventsServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = TableState(tmp_path / "state")

    def kill(*args: Any, **kwargs: Any) -> Any:
        raise KilledError

    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        with monkeypatch.context() as patch:
            patch.setattr(tablerun, "_superseded", kill)
            with pytest.raises(KilledError):
                engine(data, client, partitions=3, state=state)
        assert state.count(NAME) == 0
        sent = held_row_ids(server)
        requests = len(server.requests)
        again = engine(data, client, partitions=2, state=TableState(tmp_path / "state"))
    report = again.report
    # The tasks' logs showed every batch accepted: recorded, nothing sent again.
    assert len(server.requests) == requests
    assert (report.sent, report.unchanged, report.resent_in_flight) == (0, report.accepted, 0)
    assert len(set(sent)) == len(sent) == report.accepted == state.count(NAME)


def test_a_job_whose_tasks_died_after_sending_is_neither_lost_nor_doubled(
    engine: Callable[..., Any],
    data: list[dict[str, Any]],
    server: FakeEventsServer,
    tmp_path: Path,
) -> None:
    state = TableState(tmp_path / "state")
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        # Every attempt of every task sends, then dies before recording any answer.
        with pytest.raises(Exception, match="died after sending"):
            engine(
                data, DiesAfterSending(client, str(tmp_path / "unused")), partitions=3, state=state
            )
        quiet(state, engine.idle)  # type: ignore[attr-defined]
        assert state.count(NAME) == 0
        sent = held_row_ids(server)
        ids = set(server.accepted_ids())
        again = engine(data, client, partitions=2, state=TableState(tmp_path / "state"))
    report = again.report
    # Every batch the dead job logged went again under its id (mParticle keeps one): those
    # it sent, and any a task logged but did not get out before it died. Rows of tasks the
    # engine never started (it gives up on the first failed task) went as new batches.
    assert report.resent_in_flight >= len(ids)
    # The report counts the driver's replay of the dead job's batches, as one process does.
    assert report.replayed.get("accepted", 0) >= len(ids) > 0
    assert ids <= set(server.accepted_ids())
    held = held_row_ids(server)
    assert len(set(held)) == len(held) == report.accepted == state.count(NAME)
    assert set(sent) <= set(held)
    assert report.sent <= len(held) - len(sent)
