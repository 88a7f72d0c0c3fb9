"""The engine-independent core of a distributed sync: partitions, tasks, combined reports.

No engine here: partitions are made by hand the way Spark and Dask make them (by a hash of
the user, then sorted by user and primary key), so the same-bytes property is checked on
every kind of row hypothesis draws. ``tests/distributed/`` runs the real engines.
"""

from __future__ import annotations

import functools
import pickle
import threading
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mparticle_feed import (
    Computed,
    ConfigurationError,
    Constant,
    CustomEventMapping,
    EventsClient,
    MappingError,
    SyncReport,
    TokenBucket,
    UserAttributeMapping,
    sync,
    to_dict,
)
from mparticle_feed._mapping.run import MappingRun
from mparticle_feed._sync.partition import arrow_source, check_run
from mparticle_feed.pipeline import (
    PartitionReport,
    PartitionTask,
    RemoteLimiter,
    RowProblem,
    RowRef,
    Stage,
    combine_reports,
    order_columns,
    shared_budget,
    sync_partition,
)
from mparticle_feed.testing import FakeEventsServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

EVENTS = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user", "email": "email"},
    event_name="name",
    timestamp_unixtime_ms="ts",
    custom_attributes={"amount": "amount", "row_id": "id"},
)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer(now=lambda: NOW) as fake:
        yield fake


def client_for(server: FakeEventsServer, **options: Any) -> EventsClient:
    return EventsClient("test-key", "test-secret", base_url=server.url, **options)


def canonical_batches(server: FakeEventsServer) -> dict[str, bytes]:
    """Accepted batches by id (once each, as mParticle de-duplicates), as canonical JSON."""
    return {
        str(batch.source_request_id): orjson.dumps(to_dict(batch), option=orjson.OPT_SORT_KEYS)
        for batch in server.accepted_batches()
    }


def sort_key(ordering: tuple[str, ...]) -> Any:
    # None first, as the engines sort (asc, nulls first).
    return lambda row: tuple((row[c] is not None, row[c] or "") for c in ordering)


def partitioned(rows: list[dict[str, Any]], count: int) -> list[list[dict[str, Any]]]:
    """Rows split the way an engine splits them: by a hash of the user, then sorted."""
    users, ordering = order_columns(EVENTS)
    parts: list[list[dict[str, Any]]] = [[] for _ in range(count)]
    for row in rows:
        user = "\x00".join(str(row[c]) for c in users)
        parts[zlib.crc32(user.encode()) % count].append(row)
    return [sorted(part, key=sort_key(ordering)) for part in parts]


row_strategy = st.builds(
    dict,
    user=st.sampled_from(["u1", "u2", "u3", "u4", "u5"]),
    email=st.sampled_from(["a@x.io", "b@x.io"]),
    name=st.one_of(st.none(), st.sampled_from(["View", "Buy"])),
    ts=st.integers(min_value=0, max_value=60 * 24 * 3600 * 1000).map(
        lambda back: int(NOW.timestamp() * 1000) - back
    ),
    amount=st.one_of(st.none(), st.integers(-(2**40), 2**40)),
)


@settings(max_examples=25)
@given(
    rows=st.lists(row_strategy, max_size=60).map(
        lambda rows: [{**row, "id": f"r{n:03d}"} for n, row in enumerate(rows)]
    ),
    count=st.integers(1, 5),
)
def test_partitions_send_the_events_and_ids_of_one_process(
    server: FakeEventsServer, rows: list[dict[str, Any]], count: int
) -> None:
    _, ordering = order_columns(EVENTS)
    server.clear()
    with client_for(server) as client:
        single = sync(sorted(rows, key=sort_key(ordering)), EVENTS, client, now=NOW)
    expected = canonical_batches(server)
    server.clear()
    task = PartitionTask(mapping=EVENTS, client=client_for(server), now=NOW)
    parts = [
        pickle.loads(pickle.dumps(task))(part, partition=number)
        for number, part in enumerate(partitioned(rows, count))
    ]
    combined = combine_reports(parts)
    assert canonical_batches(server) == expected
    assert combined.counts() == single.counts()
    assert combined.batches == single.batches
    assert combined.by_endpoint == single.by_endpoint
    # Row numbers become positions in the partitions, one after the other.
    assert sorted(p.row.primary_key for p in combined.rejects) == sorted(
        p.row.primary_key for p in single.rejects
    )
    positions = [
        (number, part)
        for number, partition in enumerate(partitioned(rows, count))
        for part in partition
    ]
    for problem in combined.rejects:
        assert positions[problem.row.row_number - 1][1]["id"] == problem.row.primary_key


def test_a_task_run_again_resends_the_same_bodies_under_the_same_ids(
    server: FakeEventsServer,
) -> None:
    rows = [
        {"id": f"r{n}", "user": f"u{n % 3}", "email": None, "name": "View", "ts": NOW, "amount": n}
        for n in range(30)
    ]
    _, ordering = order_columns(EVENTS)
    rows.sort(key=sort_key(ordering))
    server.clear()
    task = PartitionTask(mapping=EVENTS, client=client_for(server), now=NOW)
    first = task(rows, partition=0)
    bodies = [request.body for request in server.requests]
    second = task(rows, partition=0, attempt=1)
    assert [request.body for request in server.requests] == bodies * 2
    assert first.report.counts() == second.report.counts()
    assert all(count == 2 for count in server.accepted_ids().values())


def test_events_client_pickles_by_its_settings_without_its_secret_in_sight(
    server: FakeEventsServer,
) -> None:
    server.clear()
    original = client_for(server, max_workers=2, timeout=5.0)
    copy = pickle.loads(pickle.dumps(original))
    assert copy is not original
    assert copy._pool is not original._pool
    assert (copy.base_url, copy.max_workers, copy.max_batches) == (original.base_url, 2, 100)
    assert "test-secret" not in repr(copy)
    assert "test-secret" not in repr(copy._settings)
    assert "test-secret" not in repr(PartitionTask(mapping=EVENTS, client=copy, now=NOW))
    original.close()
    # The copy is open and authenticates with the same credentials.
    with copy:
        report = sync(
            [{"id": "r1", "user": "u1", "email": None, "name": "View", "ts": NOW, "amount": 1}],
            EVENTS,
            copy,
            now=NOW,
        )
    assert report.sent == 1
    assert [r.status for r in server.requests] == [202]


def test_a_closed_client_pickles_into_an_open_one(server: FakeEventsServer) -> None:
    client = client_for(server)
    client.close()
    with pickle.loads(pickle.dumps(client)) as copy:
        assert "closed" not in repr(copy)


def test_order_columns_come_from_the_identities_then_the_key() -> None:
    assert order_columns(EVENTS) == (("user", "email"), ("user", "email", "id"))
    profiles = UserAttributeMapping(
        user_identities={"customer_id": "user"},
        mpid="mpid",
        user_attributes={"plan": "plan"},
    )
    # The key defaults to the customer id: already a user column.
    assert order_columns(profiles) == (("user", "mpid"), ("user", "mpid"))
    assert order_columns(EVENTS, by=["user", "user"]) == (("user",), ("user", "id"))


def test_order_columns_refuse_identities_computed_by_code() -> None:
    computed = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": Computed(lambda row: row["a"] + row["b"])},
        event_name=Constant("View"),
        timestamp_unixtime_ms="ts",
    )
    with pytest.raises(ConfigurationError, match=r"computed by code.*by="):
        order_columns(computed)
    assert order_columns(computed, by=["a", "b"]) == (("a", "b"), ("a", "b", "id"))
    with pytest.raises(ConfigurationError, match="at least one column"):
        order_columns(computed, by=[])


def report(name: str, rows_in: int, rejects: tuple[int, ...] = ()) -> SyncReport:
    problems = tuple(
        RowProblem(row=RowRef(n, f"k{n}"), stage=Stage.MAPPING, reason="bad", field="f")
        for n in rejects
    )
    return SyncReport(
        name=name,
        kind="custom_event",
        rows_in=rows_in,
        sent=rows_in - len(rejects),
        unchanged=0,
        rejected=len(rejects),
        failed=0,
        batches={"accepted": 1},
        rejects=problems,
    )


def test_combined_reports_add_up_and_number_rows_across_partitions() -> None:
    parts = [
        PartitionReport(partition=1, report=report("s", 4, rejects=(2,))),
        PartitionReport(partition=0, report=report("s", 3, rejects=(1, 3))),
        PartitionReport(partition=2, report=report("s", 0)),
    ]
    combined = combine_reports(parts)
    assert combined.counts()["rows_in"] == 7
    assert combined.rejected == 3
    assert combined.batches == {"accepted": 3}
    assert [p.row.row_number for p in combined.rejects] == [1, 3, 5]
    records = parts[0].problem_records()
    assert records == [
        {
            "partition": 1,
            "row_number": 2,
            "primary_key": "k2",
            "outcome": "rejected",
            "stage": "mapping",
            "field": "f",
            "reason": "bad",
            "status": None,
            "source_request_id": None,
        }
    ]
    assert parts[0].counts_record()["rejected"] == 1


def test_combining_refuses_doubled_partitions_and_mixed_syncs() -> None:
    with pytest.raises(ConfigurationError, match=r"partitions \[0\] reported more than once"):
        combine_reports([PartitionReport(partition=0, report=report("s", 1))] * 2)
    with pytest.raises(ConfigurationError, match="different syncs"):
        combine_reports(
            [
                PartitionReport(partition=0, report=report("s", 1)),
                PartitionReport(partition=1, report=report("t", 1)),
            ]
        )
    with pytest.raises(ConfigurationError, match="no partition"):
        combine_reports([])


def test_sync_partition_needs_an_aware_now(server: FakeEventsServer) -> None:
    with client_for(server) as client, pytest.raises(ConfigurationError, match="timezone-aware"):
        sync_partition([], EVENTS, client, now=NOW.replace(tzinfo=None))
    with client_for(server) as client:
        empty = sync_partition([], EVENTS, client, now=NOW - timedelta(days=1), partition=3)
    assert (empty.partition, empty.report.rows_in) == (3, 0)


def test_an_engine_checks_its_arguments_and_columns_before_the_job() -> None:
    columns = ["id", "user", "email", "name", "ts", "amount"]
    assert check_run(EVENTS, columns, by=None, partitions=4) == (
        ("user", "email"),
        ("user", "email", "id"),
    )
    with pytest.raises(MappingError, match=r"column 'name' is not in the source.*'nmae'"):
        check_run(
            EVENTS,
            ["nmae" if c == "name" else c for c in columns],
            by=None,
            partitions=None,
        )
    with pytest.raises(ConfigurationError, match="no column 'tenant'"):
        check_run(EVENTS, columns, by=["tenant"], partitions=None)
    with pytest.raises(ConfigurationError, match="partitions must be at least 1"):
        check_run(EVENTS, columns, by=None, partitions=0)


def test_a_tasks_record_batches_are_mapped_by_the_arrow_engine_with_the_same_bytes(
    server: FakeEventsServer,
) -> None:
    pa = pytest.importorskip("pyarrow")
    rows = [
        {
            "id": f"r{n:03d}",
            "user": f"u{n % 7}",
            "email": None,
            "name": "View",
            "ts": NOW,
            "amount": None if n % 3 else n,
        }
        for n in range(120)
    ]
    _, ordering = order_columns(EVENTS)
    rows.sort(key=sort_key(ordering))
    table = pa.Table.from_pylist(rows)
    assert MappingRun(arrow_source(table.to_batches(max_chunksize=16)), EVENTS).engine == "arrow"
    assert arrow_source([]) == []
    task = PartitionTask(mapping=EVENTS, client=client_for(server), now=NOW)
    server.clear()
    by_rows = task(rows, partition=0)
    expected = canonical_batches(server)
    server.clear()
    by_arrow = task(arrow_source(table.to_batches(max_chunksize=16)), partition=0)
    assert canonical_batches(server) == expected
    assert by_arrow.report.counts() == by_rows.report.counts()


def test_shared_budget_serves_the_clients_limiter_to_every_task(
    server: FakeEventsServer,
) -> None:
    with client_for(server, rate_limit=100.0) as client:
        with shared_budget(client, tasks=4) as make:
            assert make is not None
            one, other = make(), pickle.loads(pickle.dumps(make))()
            assert isinstance(one, RemoteLimiter)
            one.rate_limited(1.0)  # a 429 in one task...
            assert other.acquire(1) > 0.5  # ...holds the others
            one.close()
            other.close()
        with shared_budget(client, tasks=4, shared=False) as make:
            assert make is not None
            split = make()
            assert isinstance(split, TokenBucket)
            assert split.rate == 25.0
    with client_for(server, rate_limit=None) as unpaced, shared_budget(unpaced, tasks=2) as make:
        assert make is None
    with (
        pytest.raises(ConfigurationError, match="tasks must be at least 1"),
        shared_budget(client, tasks=0),
    ):
        pass


class CountingBucket(TokenBucket):
    """The client's limiter, counting the batches metered through it (thread-safe)."""

    def __init__(self, rate: float) -> None:
        super().__init__(rate)
        self.metered = 0
        self._count_lock = threading.Lock()

    def acquire(self, batches: int) -> float:
        with self._count_lock:
            self.metered += batches
        return super().acquire(batches)


def four_threads(parts: list[list[dict[str, Any]]], *, shared: bool) -> tuple[bool, int, int]:
    """Four tasks in threads against a fake allowing 300 batches a second: whether all
    was accepted, the batches delivered and how many the client's own limiter metered."""
    results: list[PartitionReport] = []
    budget = CountingBucket(240.0)
    with (
        FakeEventsServer(now=lambda: NOW, rate_limit=300.0, rate_limit_burst=100) as server,
        client_for(server, rate_limit=budget, max_batches=10) as client,
        shared_budget(client, tasks=4) as make,
    ):
        # Not shared: a static split, each task its own quarter of the rate.
        split = functools.partial(TokenBucket, 60.0)
        task = PartitionTask(
            mapping=EVENTS, client=client, now=NOW, limiter=make if shared else split
        )
        threads = [
            threading.Thread(target=lambda n=n: results.append(task(parts[n], partition=n)))
            for n in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        delivered = len(canonical_batches(server))
    return combine_reports(results).ok, delivered, budget.metered


def test_four_tasks_on_one_shared_budget_all_meter_through_the_clients_limiter() -> None:
    # Whether the shared budget holds the fake's rate is a question of speed, which
    # benchmarks/spark_budget.py measures; this checks the wiring, without timing.
    rows = [
        {
            "id": f"r{n:04d}",
            "user": f"u{n:04d}",
            "email": None,
            "name": "View",
            "ts": NOW,
            "amount": n,
        }
        for n in range(600)
    ]
    parts = partitioned(rows, 4)
    # One budget: every task's batches pass through the client's one limiter...
    ok, delivered, metered = four_threads(parts, shared=True)
    assert (ok, delivered) == (True, 600)
    assert metered >= 600  # a batch answered 429 is metered again for its retry
    # ...where tasks on a static split each pace with their own, leaving it untouched.
    assert four_threads(parts, shared=False) == (True, 600, 0)
