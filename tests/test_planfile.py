"""mparticle_feed._sync.planfile and planreader: a plan written to JSON Lines, read back, sent.

A reviewed plan file is sent byte for byte; any edit to it is refused, naming the line.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sync_data import EVENTS, NOW, PROFILES, check_invariant, event_rows, ms, profile_rows

from mparticle_feed._delivery.client import EventsClient
from mparticle_feed._errors import PlanFileError
from mparticle_feed._sync.planfile import Plan
from mparticle_feed._sync.run import plan, sync
from mparticle_feed._sync.state import StateStore
from mparticle_feed.testing import FakeEventsServer


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite") as store:
        yield store


def test_plan_file_round_trip_sends_the_file_s_bytes(
    server: FakeEventsServer, client: EventsClient, state: StateStore, tmp_path: Path
) -> None:
    rows = event_rows(120, users=30)
    rows += [{**row, "id": f"old-{row['id']}"} for row in event_rows(15, age=timedelta(days=40))]
    rows.append({"id": "bad", "user": None, "ts": ms(NOW), "value": 1})
    path = tmp_path / "plan.jsonl"
    plan(rows, EVENTS, state=state, name="things", now=NOW).write_jsonl(path)
    file_bodies = [
        json.loads(line)["body"] for line in path.read_text().splitlines() if '"endpoint"' in line
    ]
    loaded = Plan.read_jsonl(path)
    assert loaded.name == "things"
    assert loaded.rejected == 1
    report = loaded.send(client, state=state, now=NOW)
    assert [json.loads(r.body) for r in server.requests] == file_bodies
    assert [r.body for r in server.requests] == [r.body for r in loaded.requests]
    assert {r.path for r in server.requests} == {"/v2/bulkevents", "/v2/bulkevents/historical"}
    check_invariant(report)
    assert (report.sent, report.rejected) == (135, 1)
    # The accepted rows were recorded: a sync over the same rows sends nothing.
    before = len(server.requests)
    again = sync(rows, EVENTS, client, state=state, name="things", now=NOW)
    assert (again.sent, again.unchanged) == (0, 135)
    assert len(server.requests) == before


def test_plan_file_keeps_unchanged_rows_and_user_attribute_entries(
    server: FakeEventsServer, client: EventsClient, state: StateStore, tmp_path: Path
) -> None:
    rows = profile_rows()
    sync(rows[:3], PROFILES, client, state=state, name="people")
    rows[0] = {**rows[0], "city": "Nantes"}
    reviewed = plan(rows, PROFILES, state=state, name="people")
    path = tmp_path / "plan.jsonl"
    reviewed.write_jsonl(path)
    loaded = Plan.read_jsonl(path)
    assert loaded.settled.rstrip(b"\0") == reviewed.settled.rstrip(b"\0")
    assert dict(loaded.entries) == dict(reviewed.entries)
    assert (loaded.unchanged, loaded.rows_to_send) == (2, 4)
    report = loaded.send(client, state=state, now=NOW)
    assert (report.sent, report.unchanged) == (4, 2)
    assert sync(rows, PROFILES, client, state=state, name="people").unchanged == 6


def _written_plan(tmp_path: Path) -> tuple[Path, list[dict[str, Any]]]:
    rows = event_rows(30, users=5)
    rows.append({"id": "bad", "user": None, "ts": ms(NOW), "value": 1})
    path = tmp_path / "plan.jsonl"
    # Consecutive grouping only: the tampering cases need several requests.
    plan(rows, EVENTS, name="things", now=NOW, max_batches=10, group_window=0).write_jsonl(path)
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def _rewrite(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _edit_value(records: list[dict[str, Any]]) -> None:
    records[0]["body"][0]["events"][0]["data"]["custom_attributes"]["value"] = 999


def _edit_endpoint(records: list[dict[str, Any]]) -> None:
    records[0]["endpoint"] = "/v2/events"


def _edit_id(records: list[dict[str, Any]]) -> None:
    records[0]["batches"][1]["source_request_id"] = records[0]["batches"][0]["source_request_id"]


def _drop_batch_row(records: list[dict[str, Any]]) -> None:
    records[1]["batches"][0]["rows"] = []


def _drop_request(records: list[dict[str, Any]]) -> None:
    del records[1]


def _drop_closing(records: list[dict[str, Any]]) -> None:
    del records[-1]


def _edit_state(records: list[dict[str, Any]]) -> None:
    records[0]["state"] = [[9999, "k", "h", None]]


def _edit_reject(records: list[dict[str, Any]]) -> None:
    records[-2]["stage"] = "nowhere"


def _edit_rows_in(records: list[dict[str, Any]]) -> None:
    records[-1]["plan"]["rows_in"] = 40


@pytest.mark.parametrize(
    ("edit", "line", "says"),
    [
        (_edit_value, 1, "SHA-256"),
        (_edit_endpoint, 1, "unknown endpoint '/v2/events'"),
        (_edit_id, 1, "does not match"),
        (_drop_batch_row, 2, "'rows' does not match"),
        (_drop_request, 4, "lines were removed or added"),
        (_drop_closing, None, "truncated"),
        (_edit_state, 1, "'state'"),
        (_edit_reject, 4, "unknown stage"),
        (_edit_rows_in, 5, "edited after the plan was made"),
    ],
)
def test_a_tampered_plan_file_is_refused(
    tmp_path: Path,
    edit: Callable[[list[dict[str, Any]]], None],
    line: int | None,
    says: str,
) -> None:
    path, records = _written_plan(tmp_path)
    assert len(records) == 5  # 3 requests, 1 rejected row, the closing line
    edit(records)
    _rewrite(path, records)
    with pytest.raises(PlanFileError) as info:
        Plan.read_jsonl(path)
    assert info.value.line == line
    assert says in str(info.value)
    assert str(path) in str(info.value)


def test_an_edit_that_keeps_the_structure_is_refused_by_the_digest(tmp_path: Path) -> None:
    path, records = _written_plan(tmp_path)
    records[-2]["reason"] = "looks fine to me"
    _rewrite(path, records)
    with pytest.raises(PlanFileError, match="edited after the plan was made") as info:
        Plan.read_jsonl(path)
    assert info.value.line == 5


@pytest.mark.parametrize(
    "text",
    ["", "not json\n", "[1, 2]\n", '{"what": 1}\n', '{"plan": {"format": 99}}\n'],
)
def test_malformed_plan_files_are_refused(text: str) -> None:
    with pytest.raises(PlanFileError, match="plan file <stream>"):
        Plan.read_jsonl(io.StringIO(text))


@settings(max_examples=25, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.integers(min_value=-(2**53), max_value=2**53),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=20),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_plan_files_rebuild_any_body_byte_for_byte(values: list[Any]) -> None:
    rows = [
        {"id": f"r{n}", "user": f"u{n % 3}", "ts": ms(NOW), "value": value}
        for n, value in enumerate(values)
    ]
    reviewed = plan(rows, EVENTS, now=NOW, max_batches=4)
    buffer = io.StringIO()
    reviewed.write_jsonl(buffer)
    loaded = Plan.read_jsonl(io.StringIO(buffer.getvalue()))
    assert [(r.endpoint, r.body) for r in loaded.requests] == [
        (r.endpoint, r.body) for r in reviewed.requests
    ]
    for mine, theirs in zip(loaded.requests, reviewed.requests, strict=True):
        assert [
            (b.source_request_id, b.body, b.sourced.rows, b.user_key) for b in mine.batches
        ] == [(b.source_request_id, b.body, b.sourced.rows, b.user_key) for b in theirs.batches]
    assert loaded.rejects == reviewed.rejects
