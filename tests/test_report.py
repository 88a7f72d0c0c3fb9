"""UploadReport's notebook view and counts."""

from __future__ import annotations

from mparticle_feed import BatchOutcome, Endpoint, UploadReport
from mparticle_feed.pipeline import RowProblem, RowRef, Stage


def test_upload_report_html_shows_counts_and_problems_escaped() -> None:
    report = UploadReport(
        outcomes=(
            BatchOutcome(status="accepted", endpoint=Endpoint.LIVE, source_request_id="a", rows=()),
            BatchOutcome(
                status="rejected",
                endpoint=Endpoint.HISTORICAL,
                source_request_id="b",
                rows=(RowRef(2, "k2"),),
                http_status=400,
                reason="<bad> batch",
            ),
        ),
        problems=(RowProblem(row=RowRef(3, "k3"), stage=Stage.ROUTING, reason="too young"),),
        requests_sent=3,
        stopped="budget",
    )
    page = report._repr_html_()
    assert "<td>/v2/bulkevents</td><td>1</td><td>0</td>" in page
    assert "<td>/v2/bulkevents/historical</td><td>0</td><td>1</td>" in page
    assert "&lt;bad&gt; batch" in page  # escaped: reasons may quote row values
    assert "<td>k3</td>" in page
    assert "stopped: budget" in page
    assert report.counts == {"accepted": 1, "rejected": 1, "failed": 0, "pending": 0}
    assert not report.ok
