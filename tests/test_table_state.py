"""TableState (issue 17): the state as Parquet files, in one process (pyarrow only).

The distributed runs against it are in ``tests/distributed``. "Held" is what mParticle
keeps: accepted batches de-duplicated by ``source_request_id``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_data import NOW

pytest.importorskip("pyarrow")

from mparticle_feed import (
    CustomEventMapping,
    EventsClient,
    StateError,
    StateStore,
    SyncState,
    TableState,
    UserAttributeMapping,
    sqlite_to_table,
    sync,
    table_to_sqlite,
)
from mparticle_feed._delivery.report import BatchOutcome, UploadReport
from mparticle_feed._errors import StateLockedError
from mparticle_feed._sync.records import StateEntry
from mparticle_feed._sync.tablelog import read_logs
from mparticle_feed.testing import FakeEventsServer

EVENTS = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name="name",
    timestamp_unixtime_ms="ts",
    custom_attributes={"row_id": "id"},
)
PROFILES = UserAttributeMapping(
    primary_key="user",
    user_identities={"customer_id": "user"},
    user_attributes={"plan": "plan", "city": "city"},
)


def rows(count: int = 60, *, changed: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    stamp = int((NOW - timedelta(hours=1)).timestamp() * 1000)
    return [
        {
            "id": f"r{n:03d}",
            "user": f"u{n % 7}",
            "name": "Changed" if n in changed else "View",
            "ts": stamp - n,
        }
        for n in range(count)
    ]


def event_keys(server: FakeEventsServer) -> list[str]:
    """The ``row_id`` of every event mParticle holds (once per accepted batch id)."""
    return sorted(
        str(event.custom_attributes["row_id"])  # type: ignore[union-attr,index]
        for batch in server.accepted_batches()
        for event in batch.events or ()
    )


def test_both_stores_are_sync_states(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite") as store:
        assert isinstance(store, SyncState)
    assert isinstance(TableState(tmp_path / "t"), SyncState)


def test_second_run_sends_exactly_the_changed_rows(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    state = TableState(tmp_path / "state")
    first = sync(rows(), EVENTS, client, state=state, now=NOW)
    assert first.sent == 60
    assert state.count("custom_event") == 60
    server.clear()
    second = sync(rows(changed=frozenset({3, 40})), EVENTS, client, state=state, now=NOW)
    assert (second.sent, second.unchanged) == (2, 58)
    assert event_keys(server) == ["r003", "r040"]
    server.clear()
    third = sync(rows(changed=frozenset({3, 40})), EVENTS, client, state=state, now=NOW)
    assert (third.sent, third.unchanged) == (0, 60)
    assert server.accepted_batches() == []


def test_entries_equal_those_of_the_sqlite_store(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    table = TableState(tmp_path / "state")
    with StateStore(tmp_path / "s.sqlite") as store:
        for state in (table, store):
            sync(rows(), PROFILES, client, state=state, now=NOW, name="profiles")
        assert list(table.entries("profiles")) == list(store.entries("profiles"))
    assert table.version("profiles")[0] == 1


def test_layout_is_a_manifest_and_one_entries_file(tmp_path: Path, client: EventsClient) -> None:
    import pyarrow.parquet as pq

    state = TableState(tmp_path / "state")
    for changed in (frozenset(), frozenset({1})):
        sync(rows(changed=changed), EVENTS, client, state=state, now=NOW)
    folder = Path(state.folder("custom_event"))
    files = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))
    assert files[-1] == "manifest.json"
    assert [f for f in files if f.endswith(".parquet")] == [
        Path(state.entries_path("custom_event") or "").name
    ]
    assert not (folder / "jobs").exists() or not any((folder / "jobs").iterdir())
    table = pq.read_table(state.entries_path("custom_event"))
    assert table.column_names == ["key", "hash", "attributes"]
    assert table.num_rows == 60


class DieAfterSending:
    """Sends everything, then dies before the run can record an outcome or commit."""

    def __init__(self, client: EventsClient) -> None:
        self.client = client
        for name in (
            "historical_after",
            "historical_min_age",
            "max_batches",
            "max_request_bytes",
            "max_batch_bytes",
        ):
            setattr(self, name, getattr(client, name))

    def send(self, requests: Any, *, on_outcome: Any = None) -> UploadReport:
        def swallow(outcome: BatchOutcome) -> None:
            del outcome  # the answers are lost with the process

        self.client.send(requests, on_outcome=swallow)
        raise KeyboardInterrupt


def test_run_that_dies_after_sending_neither_loses_nor_doubles(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    state = TableState(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        sync(rows(), EVENTS, DieAfterSending(client), state=state, now=NOW)  # type: ignore[arg-type]
    assert state.count("custom_event") == 0
    first_ids = set(server.accepted_ids())
    again = TableState(tmp_path / "state")
    report = sync(rows(changed=frozenset({5})), EVENTS, client, state=again, now=NOW)
    # The dead run's batches went again under their ids; then only the changed row.
    assert report.resent_in_flight == len(first_ids)
    assert event_keys(server).count("r005") == 2
    assert len(event_keys(server)) == 61
    assert again.count("custom_event") == 60
    assert report.sent == 1


def test_accepted_outcomes_of_a_dead_run_are_kept_without_resending(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    state = TableState(tmp_path / "state")

    def refuse_commit(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    state.commit = refuse_commit  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sync(rows(), EVENTS, client, state=state, now=NOW)
    state.close()
    sent = len(server.requests)
    again = TableState(tmp_path / "state")
    report = sync(rows(), EVENTS, client, state=again, now=NOW)
    assert len(server.requests) == sent
    assert (report.sent, report.unchanged, report.resent_in_flight) == (0, 60, 0)


def test_a_second_run_is_refused_while_one_holds_the_lock(tmp_path: Path) -> None:
    state = TableState(tmp_path / "state")
    other = TableState(tmp_path / "state")
    with (
        state.run_lock("custom_event"),
        pytest.raises(StateLockedError),
        other.run_lock("custom_event"),
    ):
        pass


def test_changed_mapping_fails_unless_told(
    tmp_path: Path, client: EventsClient, server: FakeEventsServer
) -> None:
    state = TableState(tmp_path / "state")
    sync(rows(), EVENTS, client, state=state, now=NOW)
    other = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    )
    with pytest.raises(StateError, match="different mapping"):
        sync(rows(), other, client, state=state, now=NOW)
    server.clear()
    report = sync(rows(), other, client, state=state, now=NOW, on_mapping_change="resend")
    assert report.sent == 60
    assert state.count("custom_event") == 60


def test_a_torn_last_line_is_ignored_and_a_torn_middle_is_an_error(tmp_path: Path) -> None:
    log = tmp_path / "p.jsonl"
    log.write_bytes(b'{"t":"seq","next":4}\n{"t":"request","endpo')
    assert read_logs([str(log)]).next_seq == 4
    log.write_bytes(b'{"t":"seq","ne\n{"t":"seq","next":4}\n')
    with pytest.raises(StateError, match="line 1"):
        read_logs([str(log)])


def test_files_are_private(tmp_path: Path, client: EventsClient) -> None:
    state = TableState(tmp_path / "state")
    sync(rows(), EVENTS, client, state=state, now=NOW)
    manifest = os.path.join(state.folder("custom_event"), "manifest.json")
    assert os.stat(manifest).st_mode & 0o077 == 0


def test_conversion_refuses_unsettled_batches(tmp_path: Path, client: EventsClient) -> None:
    state = TableState(tmp_path / "state")
    with pytest.raises(KeyboardInterrupt):
        sync(rows(), EVENTS, DieAfterSending(client), state=state, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(StateError, match="unsettled"):
        table_to_sqlite(TableState(tmp_path / "state"), tmp_path / "s.sqlite")


def test_converted_state_sends_exactly_the_changed_rows(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    with StateStore(tmp_path / "first.sqlite") as store:
        sync(rows(), EVENTS, client, state=store, now=NOW)
    assert sqlite_to_table(tmp_path / "first.sqlite", tmp_path / "table") == {"custom_event": 60}
    server.clear()
    report = sync(
        rows(changed=frozenset({7})), EVENTS, client, state=TableState(tmp_path / "table"), now=NOW
    )
    assert (report.sent, report.unchanged) == (1, 59)
    assert table_to_sqlite(tmp_path / "table", tmp_path / "back.sqlite") == {"custom_event": 60}
    server.clear()
    report = sync(
        rows(changed=frozenset({7, 8})), EVENTS, client, state=tmp_path / "back.sqlite", now=NOW
    )
    assert event_keys(server) == ["r008"]
    assert report.unchanged == 59


keys = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=12)
digests = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
entry_lists = st.dictionaries(
    keys,
    st.tuples(digests, st.none() | st.dictionaries(keys, digests, max_size=3)),
    max_size=30,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=entry_lists, next_seq=st.integers(0, 2**40), user_attributes=st.booleans())
def test_conversion_round_trips(
    tmp_path_factory: pytest.TempPathFactory,
    entries: dict[str, tuple[str, dict[str, str] | None]],
    next_seq: int,
    user_attributes: bool,
) -> None:
    folder = tmp_path_factory.mktemp("convert")
    wanted = sorted(
        (
            StateEntry(key=k, hash=h, attributes=a if user_attributes else None)
            for k, (h, a) in entries.items()
        ),
        key=lambda e: e.key,
    )
    with StateStore(folder / "a.sqlite") as store:
        kind = "user_attributes" if user_attributes else "custom_event"
        store.begin_sync("s", kind=kind, fingerprint="f" * 64)
        store.outbox_add("s", [], next_seq=next_seq)
        store.record_accepted("s", wanted)
        store.finish_sync("s", status="finished")
    sqlite_to_table(folder / "a.sqlite", folder / "t")
    table = TableState(folder / "t")
    assert sorted(table.entries("s"), key=lambda e: e.key) == wanted
    assert (table.kind("s"), table.fingerprint("s"), table.version("s")[1]) == (
        kind,
        "f" * 64,
        next_seq,
    )
    table_to_sqlite(table, folder / "b.sqlite")
    with StateStore(folder / "b.sqlite") as back:
        assert sorted(back.entries("s"), key=lambda e: e.key) == wanted
        assert back.version("s")[1] == next_seq
        assert back.fingerprint("s") == "f" * 64


class DiesAfterSendingError(RuntimeError):
    """A task attempt lost after it sent (its outcomes were never written)."""


def test_tasks_commit_after_the_job_and_a_failed_attempt_is_superseded(
    tmp_path: Path, server: FakeEventsServer, client: EventsClient
) -> None:
    import pyarrow as pa

    from mparticle_feed._sync.partition import PartitionTask
    from mparticle_feed._sync.tablerun import table_run
    from mparticle_feed._sync.tabletask import STATE_ATTRIBUTES, STATE_HASH, STATE_KEY

    state = TableState(tmp_path / "state")
    data = sorted(rows(), key=lambda row: (row["user"], row["id"]))

    def reader(extra: dict[str, list[Any]] | None = None, source: Any = None) -> Any:
        table = pa.Table.from_pylist(data if source is None else source)
        for column, values in (extra or {}).items():
            table = table.append_column(column, pa.array(values, pa.string()))
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=16))

    class Dies(DieAfterSending):
        def send(self, requests: Any, *, on_outcome: Any = None) -> UploadReport:
            self.client.send(requests, on_outcome=lambda outcome: None)
            raise DiesAfterSendingError

    with table_run(
        state, name="custom_event", mapping=EVENTS, client=client, on_mapping_change="fail"
    ) as (run, succeeded):
        failing = PartitionTask(
            mapping=EVENTS, client=Dies(client), now=NOW, name="custom_event", state=run.job
        )
        # The lost attempt read other content (input that changed between attempts): its
        # batches have ids no later attempt settles.
        other = [{**row, "name": "Earlier"} for row in data]
        with pytest.raises(DiesAfterSendingError):
            failing(reader(source=other), partition=0, attempt=0)
        task = PartitionTask(
            mapping=EVENTS, client=client, now=NOW, name="custom_event", state=run.job
        )
        part = task(reader(), partition=0, attempt=1)
        assert part.state_log is not None
        # The finished task compacted its log: no body of a settled batch is left.
        assert b'"body"' not in Path(part.state_log).read_bytes()
        succeeded.add(part.state_log)
    assert part.report.sent == 60
    # The failed attempt's unsettled batches are not kept for a replay: the retry sent them.
    assert state.in_flight("custom_event") == []
    assert state.count("custom_event") == 60

    server.clear()
    entries = {e.key: e for e in state.entries("custom_event")}
    data[10] = {**data[10], "name": "Changed"}
    joined = {
        STATE_KEY: [row["id"] for row in data],
        STATE_HASH: [entries[row["id"]].hash for row in data],
        STATE_ATTRIBUTES: [None for _ in data],
    }
    with table_run(
        state, name="custom_event", mapping=EVENTS, client=client, on_mapping_change="fail"
    ) as (run, succeeded):
        task = PartitionTask(
            mapping=EVENTS, client=client, now=NOW, name="custom_event", state=run.job
        )
        part = task(reader(joined), partition=0)
        succeeded.add(str(part.state_log))
    assert (part.report.sent, part.report.unchanged) == (1, 59)
    assert event_keys(server) == [data[10]["id"]]


def test_compacting_a_log_keeps_what_it_adds_up_to(tmp_path: Path) -> None:
    from mparticle_feed._sync.records import OutboxBatch
    from mparticle_feed._sync.tablelog import OutboxLog, compact

    def batch(n: int) -> OutboxBatch:
        return OutboxBatch(
            source_request_id=f"id-{n}",
            body=b'{"n":%d}' % n,
            rows=((n, f"k{n}"),),
            event_rows=((n, f"k{n}"),),
            entries=(StateEntry(key=f"k{n}", hash=f"{n:032x}"),),
        )

    path = str(tmp_path / "p.jsonl")
    log = OutboxLog(path, clock=lambda: 1.0)
    open_ids: set[str] = set()
    log.add([("/v2/bulkevents", [batch(1), batch(2)])], next_seq=3, track=open_ids)
    log.add(
        [("/v2/bulkevents", [batch(3)])], next_seq=4, settled=[("id-1", "accepted")], track=open_ids
    )
    log.settle([("id-3", "rejected"), ("id-9", "accepted")], known=open_ids)
    log.close()
    assert open_ids == {"id-2"}
    before = read_logs([path])
    compact(path)
    assert read_logs([path]) == before
    assert [e.key for e in before.accepted] == ["k1"]
    assert [b.source_request_id for r in before.unsettled for b in r.batches] == ["id-2"]
    assert before.next_seq == 4
    assert b'{"n":1}' not in Path(path).read_bytes()


def test_a_failed_attempt_does_not_hide_what_the_kept_attempt_left_open(tmp_path: Path) -> None:
    # Attempt 0 sent batch X and died; attempt 1 (kept) sent X again and ended with X
    # still open: X stays unsettled, to be replayed under its id.
    from mparticle_feed._sync.records import OutboxBatch
    from mparticle_feed._sync.tablelog import OutboxLog

    batch = OutboxBatch(
        source_request_id="id-x",
        body=b'{"n":1}',
        rows=((1, "k1"),),
        event_rows=((1, "k1"),),
        entries=(StateEntry(key="k1", hash=f"{1:032x}"),),
    )
    paths = [str(tmp_path / "p0-a0.jsonl"), str(tmp_path / "p0-a1.jsonl")]
    for path in paths:
        log = OutboxLog(path, clock=lambda: 1.0)
        log.add([("/v2/bulkevents", [batch])], next_seq=2, track=set())
        log.close()
    kept = paths[1:]
    summary = read_logs(paths, replay=kept)
    assert [b.source_request_id for r in summary.unsettled for b in r.batches] == ["id-x"]
    assert read_logs(paths, replay=kept) == read_logs(kept)
