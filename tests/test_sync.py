from __future__ import annotations

import io
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_data import (
    EVENTS,
    NOW,
    PROFILES,
    DiesAfterAccept,
    check_invariant,
    event_rows,
    ms,
    profile_rows,
    sent_keys,
)

from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._errors import ConfigurationError, DeliveryError, StateError
from mparticle_feed._mapping.sources import Constant
from mparticle_feed._mapping.spec import CustomEventMapping, UserAttributeMapping
from mparticle_feed._sync.run import plan, sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as store:
        yield store


# --- acceptance: incremental ----------------------------------------------------------------


def test_second_run_over_unchanged_data_sends_nothing(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(30, users=7)
    first = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert first.sent == 30
    assert first.ok
    before = len(server.requests)
    second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert len(server.requests) == before
    assert second.sent == 0
    assert second.unchanged == 30
    assert second.accepted == 30
    assert second.ok
    check_invariant(second)


def test_changing_one_row_sends_exactly_that_row(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(30, users=7)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    before = len(server.requests)
    rows[12] = {**rows[12], "value": 9999}
    report = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert sent_keys(server, start=before) == ["r0012"]
    assert report.sent == 1
    assert report.unchanged == 29
    check_invariant(report)


def test_user_attributes_send_only_changes_and_deletions(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = profile_rows()
    sync(rows, PROFILES, client, state=state, name="profiles", now=NOW)
    before = len(server.requests)
    rows[2] = {**rows[2], "city": None}  # the attribute disappears
    rows[4] = {**rows[4], "plan": "enterprise"}  # one attribute changes
    report = sync(rows, PROFILES, client, state=state, name="profiles", now=NOW)
    assert report.sent == 2
    assert report.unchanged == 4
    batches = [b for r in server.requests[before:] for b in r.batches or ()]
    by_user = {b.user_identities.customer_id: b for b in batches}  # type: ignore[union-attr]
    assert set(by_user) == {"u2", "u4"}
    assert by_user["u2"].deleted_user_attributes == ("city",)
    assert not by_user["u2"].user_attributes
    assert by_user["u4"].user_attributes == {"plan": "enterprise"}
    assert by_user["u4"].deleted_user_attributes is None
    # And the state now knows: a third run sends nothing.
    again = sync(rows, PROFILES, client, state=state, name="profiles", now=NOW)
    assert again.sent == 0
    assert again.unchanged == 6


def test_rejected_rows_are_sent_again_next_run(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(5)
    rows.append({"id": "bad", "user": "u9", "ts": "not a time", "value": 1})
    first = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert first.rejected == 1
    assert first.rejects[0].row.primary_key == "bad"
    assert first.rejects[0].field == "timestamp_unixtime_ms"
    rows[-1] = {**rows[-1], "ts": ms(NOW)}
    second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert second.sent == 1
    assert second.unchanged == 5


def test_text_json_cannot_carry_rejects_only_its_row_and_the_users_other_rows_are_sent(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    # Undecodable bytes read leniently (surrogateescape) give a lone surrogate; one user's
    # six rows share a batch, and only the row holding it is turned away.
    rows = event_rows(6, users=1)
    rows[3] = {**rows[3], "value": "caf\udce9"}
    first = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert (first.accepted, first.rejected) == (5, 1)
    (problem,) = first.rejects
    assert (problem.row.primary_key, problem.field) == ("r0003", "custom_attributes.value")
    assert "surrogates not allowed" in problem.reason
    assert sorted(sent_keys(server)) == ["r0000", "r0001", "r0002", "r0004", "r0005"]
    check_invariant(first)
    rows[3] = {**rows[3], "value": "café"}
    second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert (second.sent, second.unchanged) == (1, 5)


# --- acceptance: crash and resume -------------------------------------------------------------


def test_crash_then_resume_loses_nothing_and_resends_only_in_flight(
    server: FakeEventsServer, state: StateStore
) -> None:
    rows = event_rows(60)  # one user per row: 60 batches
    with EventsClient(
        "test-key", "test-secret", base_url=server.url, max_workers=1, max_batches=10
    ) as client:
        crashing = DiesAfterAccept(client, after=25)
        with pytest.raises(KeyboardInterrupt):
            sync(rows, EVENTS, crashing, state=state, name="things", now=NOW)
        crashed_at = len(server.requests)
        assert crashed_at == 3  # batches 21-30 were in the request that was in flight
        assert state.count("things") == 25
        report = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert report.resumed
    assert report.resent_in_flight >= 1
    # The outbox replayed the 15 batches committed but unsettled at the crash (byte for
    # byte), so their rows are unchanged now; the 20 never handed out are sent.
    assert report.replayed == {"accepted": 15}
    assert report.unchanged == 40
    assert report.sent == 20
    check_invariant(report)
    everything = Counter(sent_keys(server))
    # Nothing missing at the server.
    assert set(everything) == {row["id"] for row in rows}
    # Only the rows of the request in flight at the crash were sent twice...
    twice = {key for key, n in everything.items() if n > 1}
    in_flight_request = {
        str(e.custom_attributes["row_id"])
        for b in server.requests[2].batches or ()
        for e in b.events or ()
    }  # type: ignore[attr-defined,index]
    assert twice <= in_flight_request
    assert len(twice) == 5  # rows 26-30: accepted by the server, unrecorded at the crash
    # ...and they carried the same source_request_id, so mParticle deduplicates them.
    ids = server.accepted_ids()
    assert crashing.crashed_ids[0] in ids
    assert ids[crashing.crashed_ids[0]] == 2
    assert len(server.accepted_batches()) == 60


def test_stop_leaves_rows_pending_and_the_next_run_sends_them(
    server: FakeEventsServer, state: StateStore
) -> None:
    rows = event_rows(40)
    stop = threading.Event()
    with EventsClient(
        "test-key", "test-secret", base_url=server.url, max_workers=1, max_batches=10
    ) as client:

        def progress(info: Any) -> None:
            if info.batches_accepted >= 10:
                stop.set()

        first = sync(
            rows, EVENTS, client, state=state, name="things", now=NOW, stop=stop, progress=progress
        )
        assert first.stopped
        assert first.pending > 0
        check_invariant(first)
        second = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert second.resumed
    assert second.unchanged == first.sent
    assert second.sent == 40 - first.sent
    assert set(sent_keys(server)) == {row["id"] for row in rows}


# --- acceptance: plan -----------------------------------------------------------------------


def test_plan_then_send_is_byte_identical(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(250, users=40)
    old = event_rows(20, age=timedelta(days=40))  # historical
    rows += [{**row, "id": f"old-{row['id']}"} for row in old]
    reviewed = plan(rows, EVENTS, state=state, name="things", now=NOW)
    assert len(server.requests) == 0
    assert state.count("things") == 0  # plan writes nothing
    report = reviewed.send(client, state=state, now=NOW)
    assert [r.body for r in server.requests] == [r.body for r in reviewed.requests]
    assert [r.path for r in server.requests] == [str(r.endpoint) for r in reviewed.requests]
    assert report.sent == 270
    assert report.historical_rows() == 20
    # The state was updated: syncing the same rows sends nothing.
    again = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert again.sent == 0


def test_plan_reflects_state_and_is_readable(client: EventsClient, state: StateStore) -> None:
    rows = event_rows(10, users=3)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    rows[0] = {**rows[0], "value": -1}
    rows.append({"id": "bad", "user": None, "ts": ms(NOW), "value": 1})
    reviewed = plan(rows, EVENTS, state=state, name="things", now=NOW)
    assert reviewed.rows_to_send == 1
    assert reviewed.unchanged == 9
    assert reviewed.rejected == 1
    text = repr(reviewed)
    assert "to send" in text
    assert "bad" in text
    html = reviewed._repr_html_()
    assert "<table>" in html
    buffer = io.StringIO()
    assert reviewed.write_jsonl(buffer) == 3
    first, second, closing = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert closing["plan"]["rows_in"] == 11
    assert first["endpoint"] == "/v2/bulkevents"
    assert first["rows"] == [[1, "r0000"]]
    assert first["body"][0]["events"][0]["data"]["custom_attributes"]["value"] == -1
    assert second["outcome"] == "rejected"
    assert second["primary_key"] == "bad"


def test_sync_with_a_plan_argument(server: FakeEventsServer, client: EventsClient) -> None:
    reviewed = plan(event_rows(5), EVENTS, now=NOW)
    report = sync(None, EVENTS, client, plan=reviewed, now=NOW)
    assert report.sent == 5
    assert [r.body for r in server.requests] == [r.body for r in reviewed.requests]


# --- mapping changes ------------------------------------------------------------------------

CHANGED = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=Constant("Thing Happened"),
    timestamp_unixtime_ms="ts",
    custom_attributes={"value": "value", "row_id": "id", "source": Constant("warehouse")},
)


def test_changed_mapping_fails_by_default(client: EventsClient, state: StateStore) -> None:
    rows = event_rows(4)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    with pytest.raises(StateError, match="different mapping"):
        sync(rows, CHANGED, client, state=state, name="things", now=NOW)
    with pytest.raises(StateError, match="different mapping"):
        plan(rows, CHANGED, state=state, name="things", now=NOW)


def test_plan_and_sync_count_a_changed_sync_kind_as_a_changed_mapping(
    client: EventsClient, state: StateStore
) -> None:
    # The state says the sync last ran as another kind with this very fingerprint.
    state.begin_sync("things", kind="user_attributes", fingerprint=EVENTS.fingerprint())
    state.finish_sync("things", status="finished")
    assert state.last_mapping("things") == ("user_attributes", EVENTS.fingerprint())
    rows = event_rows(2)
    with pytest.raises(StateError, match=r"kind user_attributes.*now kind custom_event"):
        plan(rows, EVENTS, state=state, name="things", now=NOW)
    with pytest.raises(StateError, match=r"kind user_attributes.*now kind custom_event"):
        sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    kept = plan(rows, EVENTS, state=state, name="things", now=NOW, on_mapping_change="keep")
    assert kept.rows_in == 2


def test_plan_and_sync_refuse_an_unknown_on_mapping_change(
    client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(2)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    unknown: Any = "x"
    with pytest.raises(ConfigurationError, match="on_mapping_change must be"):
        plan(rows, EVENTS, state=state, name="things", now=NOW, on_mapping_change=unknown)
    with pytest.raises(ConfigurationError, match="on_mapping_change must be"):
        sync(rows, EVENTS, client, state=state, name="things", now=NOW, on_mapping_change=unknown)


def test_changed_mapping_resend_sends_every_row(client: EventsClient, state: StateStore) -> None:
    rows = event_rows(4)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    report = sync(
        rows, CHANGED, client, state=state, name="things", now=NOW, on_mapping_change="resend"
    )
    assert report.sent == 4
    assert report.mapping_changed


def test_changed_mapping_keep_sends_only_changed_output(
    client: EventsClient, state: StateStore
) -> None:
    rows = event_rows(4)
    sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    # A new fingerprint whose output is identical (only the order of the definition differs).
    same_output = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name=Constant("Thing Happened"),
        timestamp_unixtime_ms="ts",
        custom_attributes={"row_id": "id", "value": "value"},
        custom_flags={},
    )
    if same_output.fingerprint() == EVENTS.fingerprint():
        pytest.skip("the fingerprint ignores this difference")
    report = sync(
        rows, same_output, client, state=state, name="things", now=NOW, on_mapping_change="keep"
    )
    assert report.sent == 0
    assert report.unchanged == 4


# --- reports --------------------------------------------------------------------------------


def test_report_counts_endpoints_and_rejects(
    server: FakeEventsServer, client: EventsClient, tmp_path: Path
) -> None:
    rows = event_rows(10) + event_rows(5, age=timedelta(days=60))
    rows = [{**row, "id": f"{row['id']}-{n}"} for n, row in enumerate(rows)]
    rows.append({"id": "young-but-historical", "user": "u1", "ts": "yesterday", "value": 0})
    report = sync(rows, EVENTS, client, now=NOW)
    assert report.rows_in == 16
    assert report.live_rows() == 10
    assert report.historical_rows() == 5
    assert report.rejected == 1
    check_invariant(report)
    path = tmp_path / "rejects.jsonl"
    assert report.write_rejects(path) == 1
    record = json.loads(path.read_text())
    assert record["primary_key"] == "young-but-historical"
    assert record["stage"] == "mapping"
    assert "rejected" in report.summary()
    assert "<table>" in report._repr_html_()


def test_server_rejections_are_reported_per_row(client: EventsClient) -> None:
    with (
        FakeEventsServer(
            now=lambda: NOW,
            reject=lambda batch: (
                batch.user_identities is not None and batch.user_identities.customer_id == "u0003"
            ),
        ) as fake,
        EventsClient("test-key", "test-secret", base_url=fake.url) as other,
    ):
        report = sync(event_rows(8), EVENTS, other, now=NOW)
    assert report.sent == 7
    assert report.rejected == 1
    (problem,) = report.rejects
    assert problem.row.primary_key == "r0003"
    assert problem.stage == "delivery"
    assert problem.status == 400
    check_invariant(report)

    with pytest.raises(DeliveryError, match="1 of 8 rows not accepted") as raised:
        report.raise_for_failures()
    assert raised.value.status == 400
    assert raised.value.source_request_ids == (problem.source_request_id,)
    report.raise_for_failures(allow_rejected=True)  # a data problem only: allowed through


def test_raise_for_failures_is_silent_when_every_row_was_accepted(client: EventsClient) -> None:
    report = sync(event_rows(3), EVENTS, client, now=NOW)
    assert report.ok
    report.raise_for_failures()


def test_sync_reads_a_dbapi_cursor(client: EventsClient, state: StateStore) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id TEXT, user TEXT, ts INTEGER, value INTEGER)")
    conn.executemany("INSERT INTO t VALUES (:id, :user, :ts, :value)", event_rows(25, users=4))
    report = sync(
        conn.execute("SELECT * FROM t"), EVENTS, client, state=state, now=NOW, chunk_size=7
    )
    assert report.sent == 25
    again = sync(conn.execute("SELECT * FROM t"), EVENTS, client, state=state, now=NOW)
    assert again.unchanged == 25


def test_state_as_a_path(client: EventsClient, tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.sqlite"
    sync(event_rows(3), EVENTS, client, state=path, now=NOW)
    assert sync(event_rows(3), EVENTS, client, state=path, now=NOW).unchanged == 3


row_values = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["2026-02-28T10:00:00Z", "garbage", ""]),
)


@settings(max_examples=30)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "id": st.one_of(st.none(), st.text(min_size=1, max_size=5)),
                "user": st.one_of(st.none(), st.sampled_from(["a", "b", "c"])),
                "ts": st.one_of(
                    st.just(ms(NOW - timedelta(hours=2))),
                    st.just(ms(NOW - timedelta(days=50))),
                    row_values,
                ),
                "value": row_values,
            }
        ),
        max_size=25,
    )
)
def test_invariant_holds_for_any_rows(rows: list[dict[str, Any]]) -> None:
    with (
        FakeEventsServer(now=lambda: NOW) as fake,
        EventsClient("test-key", "test-secret", base_url=fake.url) as events,
        StateStore(":memory:") as store,
    ):
        report = sync(rows, EVENTS, events, state=store, now=NOW)
        check_invariant(report)
        assert report.pending == 0
        assert report.rows_in == len(rows)
        assert len(report.rejects) + len(report.failures) >= report.rejected + report.failed


CONSENTED = UserAttributeMapping(
    user_identities={"customer_id": "cid"},
    user_attributes={"plan": "plan"},
    consent_state={"gdpr": {"marketing": {"consented": "ok", "timestamp_unixtime_ms": "at"}}},
)


def test_consent_is_sent_when_it_changes_like_a_user_attribute(
    server: FakeEventsServer, client: EventsClient, state: StateStore
) -> None:
    rows = [{"cid": "u1", "plan": "free", "ok": True, "at": 1}]
    sync(rows, CONSENTED, client, state=state, name="consent", now=NOW)
    assert server.accepted_batches()[-1].consent_state is not None

    def sent_after(new_rows: list[dict[str, Any]]) -> list[Any]:
        before = len(server.requests)
        sync(new_rows, CONSENTED, client, state=state, name="consent", now=NOW)
        return [b for r in server.requests[before:] for b in r.batches or ()]

    assert sent_after(rows) == []  # nothing changed: nothing sent
    (attribute_only,) = sent_after([{**rows[0], "plan": "gold"}])
    assert attribute_only.user_attributes == {"plan": "gold"}
    assert attribute_only.consent_state is None  # unchanged consent is not resent
    (consent_only,) = sent_after([{**rows[0], "plan": "gold", "ok": False, "at": 2}])
    assert not consent_only.user_attributes
    assert consent_only.consent_state is not None
    assert consent_only.consent_state.gdpr["marketing"].consented is False  # type: ignore[index]


def test_a_source_that_fails_part_way_stops_the_sync_and_a_rerun_completes_it(
    server: FakeEventsServer, state: StateStore
) -> None:
    """A warehouse that fails on a row (a cast a value refuses, a dropped connection) ends
    the sync with its error; what was sent before is in the state, so the rerun over the
    fixed source sends the rest, and the sink (which keeps one copy per source_request_id)
    holds every row once."""
    rows = event_rows(1200, users=50)

    def failing() -> Iterator[dict[str, Any]]:
        yield from rows[:700]
        raise RuntimeError("the warehouse dropped the connection")

    options: dict[str, Any] = {"state": state, "name": "things", "now": NOW, "group_window": 0}
    # Unpaced: one batch a row here (group_window 0), so that rows go out before the failure.
    with EventsClient("test-key", "test-secret", base_url=server.url, rate_limit=None) as client:
        with pytest.raises(RuntimeError, match="dropped the connection"):
            sync(failing(), EVENTS, client, **options)
        assert len(server.requests) > 0  # rows before the failure went out
        report = sync(rows, EVENTS, client, **options)
    assert report.ok
    assert (report.failed, report.pending) == (0, 0)
    check_invariant(report)
    held: dict[str, list[str]] = {}
    for request in server.requests:
        if request.accepted:
            for batch in request.batches or ():
                held.setdefault(
                    str(batch.source_request_id),
                    [
                        str(event.custom_attributes["row_id"])  # type: ignore[attr-defined,index]
                        for event in batch.events or ()
                    ],
                )
    counts = Counter(key for keys in held.values() for key in keys)
    assert set(counts) == {row["id"] for row in rows}
    assert set(counts.values()) == {1}
