"""The one outcome status type: strings, order and the sync's row bytes."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._delivery.report import BatchOutcome, UploadReport
from mparticle_feed._delivery.routing import Endpoint
from mparticle_feed._delivery.status import BATCH_STATUSES, NO_OUTCOME, OutcomeStatus
from mparticle_feed._mapping.provenance import RowRef
from mparticle_feed._sync.send import _Statuses

statuses = st.sampled_from(list(OutcomeStatus))


def test_members_equal_the_strings_reports_and_files_write() -> None:
    assert [s.value for s in OutcomeStatus] == [
        "unchanged",
        "accepted",
        "pending",
        "failed",
        "rejected",
    ]
    for status in OutcomeStatus:
        assert status == status.value
        assert str(status) == f"{status}" == status.value
        assert json.dumps(status) == orjson.dumps(status).decode() == f'"{status.value}"'
        by_name: dict[str, int] = {status.value: 1}
        assert by_name[status] == 1
    assert mpf.OutcomeStatus is OutcomeStatus


@given(statuses)
def test_codes_round_trip_and_leave_zero_for_no_outcome(status: OutcomeStatus) -> None:
    assert status.code != NO_OUTCOME
    assert 0 < status.code < 256
    assert OutcomeStatus.from_code(status.code) is status
    assert OutcomeStatus.from_code(NO_OUTCOME) is None


@given(st.lists(statuses, min_size=1, max_size=8))
def test_a_row_in_several_batches_keeps_the_worst(seen: list[OutcomeStatus]) -> None:
    table = _Statuses()
    for status in seen:
        table.mark(RowRef(3), status.code)
    order = list(OutcomeStatus)
    assert OutcomeStatus.from_code(table.codes[3]) is max(seen, key=order.index)
    assert table.codes[1] == table.codes[2] == NO_OUTCOME


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40), statuses), min_size=1, max_size=12)
)
def test_rows_marked_as_a_range_are_marked_as_one_by_one(
    marks: list[tuple[int, int, OutcomeStatus]],
) -> None:
    """The same bytes (codes and length) whether consecutive rows come as a range or as
    numbers one by one."""
    ranged, listed = _Statuses(), _Statuses()
    for first, count, status in marks:
        ranged.mark_numbers(range(first, first + count), status.code)
        listed.mark_numbers(list(range(first, first + count)), status.code)
    assert ranged.codes == listed.codes


def test_severity_order_is_unchanged_then_accepted_pending_failed_rejected() -> None:
    codes = [s.code for s in OutcomeStatus]
    assert codes == sorted(codes)
    assert OutcomeStatus.REJECTED.code > OutcomeStatus.FAILED.code > OutcomeStatus.PENDING.code


@given(st.sampled_from(BATCH_STATUSES))
def test_a_batch_outcome_takes_the_old_strings(status: OutcomeStatus) -> None:
    outcome = BatchOutcome(
        status=status.value,  # the strings older code passes
        endpoint=Endpoint.LIVE,
        source_request_id="r",
        rows=(),
    )
    assert outcome.status is status
    report = UploadReport(outcomes=(outcome,))
    assert report.count(status.value) == report.count(status) == 1
    assert report.counts[status.value] == 1
    assert all(type(key) is str for key in report.counts)
    assert orjson.loads(orjson.dumps(report.counts_by_endpoint))[Endpoint.LIVE.value] == {
        s.value: int(s is status) for s in BATCH_STATUSES
    }


def test_an_unknown_status_is_a_configuration_error() -> None:
    with pytest.raises(mpf.ConfigurationError, match="unknown outcome status 'delivered'"):
        BatchOutcome(
            status="delivered",  # type: ignore[arg-type]
            endpoint=Endpoint.LIVE,
            source_request_id="r",
            rows=(),
        )
