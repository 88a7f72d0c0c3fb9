"""mparticle_feed.testing.FakeEventsServer: its fault modes, its records, its transport.

Driven with a bare urllib3 pool, or a client where its answers are read through one; how the
client copes with each fault is tested in ``tests/with_server/`` and ``tests/reliability/``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import orjson
import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import (
    Batch,
    ConfigurationError,
    CustomEvent,
    EventsClient,
    RetryPolicy,
    UserIdentities,
)
from mparticle_feed._delivery.routing import Endpoint
from mparticle_feed.pipeline import Request, pack, route
from mparticle_feed.testing import FakeClock, FakeEventsServer, PerBody, ReceivedRequest, Reply
from mparticle_feed.testing._fake_replies import split_json_array

NOW = datetime.now(timezone.utc)
AUTH = urllib3.make_headers(basic_auth="test-key:test-secret")
HEADERS = {**AUTH, "Content-Type": "application/json"}


def _body(*ids: str) -> bytes:
    return orjson.dumps([{"source_request_id": i} for i in ids])


def _batches(count: int) -> list[Batch]:
    return [
        Batch(
            events=[CustomEvent(event_name="e", custom_event_type="other")],
            user_identities=UserIdentities(customer_id=f"u{number}"),
        )
        for number in range(count)
    ]


def _post(
    server: FakeEventsServer, body: bytes, *, timeout: float = 2.0, path: str = "/v2/bulkevents"
) -> int:
    with urllib3.PoolManager(retries=False, timeout=timeout) as pool:
        return pool.request("POST", server.url + path, body=body, headers=HEADERS).status


@pytest.fixture
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer() as fake:
        yield fake


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(json_values, max_size=6), st.booleans())
def test_batch_sizes_split_a_body_byte_for_byte(items: list[object], ascii_only: bool) -> None:
    parts = [json.dumps(item, ensure_ascii=ascii_only).encode() for item in items]
    body = b"[" + b",".join(parts) + b"]"
    assert split_json_array(body) == parts


def test_scripted_statuses_then_the_normal_answer_over_one_connection(
    server: FakeEventsServer,
) -> None:
    server.script(Reply(status=503, retry_after="1"))
    body = _body("a", "b")
    # A pool, not a PoolManager: PoolManager.clear() in urllib3 2.x does not close sockets.
    with urllib3.HTTPConnectionPool("127.0.0.1", server.port, retries=False) as pool:
        first = pool.request("POST", "/v2/bulkevents", body=body, headers=HEADERS)
        second = pool.request("POST", "/v2/bulkevents", body=body, headers=HEADERS)
    assert (first.status, first.headers["Retry-After"], second.status) == (503, "1", 202)
    requests = server.requests
    assert [r.source_request_ids for r in requests] == [["a", "b"], ["a", "b"]]
    assert [r.index for r in requests] == [0, 1]
    assert requests[0].connection == requests[1].connection  # keep-alive works
    assert [(r.method, r.path, r.body) for r in requests] == [("POST", "/v2/bulkevents", body)] * 2
    assert server.accepted_ids() == {"a": 1, "b": 1}
    assert server.received_ids() == {"a": 2, "b": 2}
    assert server.wait_for_open_connections(0) == 0


def test_chunked_request_bodies_are_read(server: FakeEventsServer) -> None:
    with urllib3.PoolManager(retries=False) as pool:
        response = pool.request(
            "POST",
            server.url + "/v2/bulkevents",
            body=iter([b'[{"source_request_id":', b'"c"}]']),
            headers=HEADERS,
            chunked=True,
        )
    assert response.status == 202
    assert server.requests[0].body == b'[{"source_request_id":"c"}]'


def test_hang_reset_and_partial_look_like_network_faults(server: FakeEventsServer) -> None:
    server.script(
        Reply(action="hang", hang_seconds=1.0), Reply(action="reset"), Reply(action="partial")
    )
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        _post(server, b"[]", timeout=0.2)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _post(server, b"[]")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _post(server, b"[]")
    requests = server.requests
    assert [r.outcome for r in requests] == ["hang", "reset", "partial"]
    assert [r.status for r in requests] == [None, None, None]
    assert not any(r.accepted for r in requests)
    assert all(r.body == b"[]" for r in requests)  # each body arrived whole before the fault


def test_a_clean_close_answers_nothing(server: FakeEventsServer) -> None:
    server.script(Reply(action="close"))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _post(server, _body("a"))
    assert [(r.outcome, r.status) for r in server.requests] == [("close", None)]


def test_connections_are_refused_until_the_server_starts() -> None:
    server = FakeEventsServer()
    try:
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", server.port)),
        ):
            pass
        server.start()
        assert _post(server, _body("a")) == 202
    finally:
        server.close()


def test_huge_bodies_are_streamed(server: FakeEventsServer) -> None:
    server.script(Reply(status=400, stream_size=3_000_000))
    with urllib3.PoolManager(retries=False) as pool:
        response = pool.request(
            "POST", server.url + "/v2/bulkevents", body=b"[]", preload_content=False
        )
        assert len(response.read(1000)) == 1000
        response.release_conn()
    assert response.status == 400
    assert response.headers["Content-Length"] == "3000000"


def test_keep_alive_false_closes_the_connection_after_answering(server: FakeEventsServer) -> None:
    server.script(Reply(status=503, keep_alive=False))
    with urllib3.HTTPConnectionPool("127.0.0.1", server.port, retries=False) as pool:
        first = pool.request("POST", "/v2/bulkevents", body=_body("a"), headers=HEADERS)
        second = pool.request("POST", "/v2/bulkevents", body=_body("a"), headers=HEADERS)
    assert (first.status, first.headers["Connection"], second.status) == (503, "close", 202)
    assert server.requests[0].connection != server.requests[1].connection


def test_the_server_clock_times_requests_and_answers() -> None:
    clock = FakeClock()
    with FakeEventsServer(clock=clock) as server:
        _post(server, _body("a"))
        clock.sleep(5)
        _post(server, _body("b"))
    first, second = server.requests
    assert second.received_at - first.received_at == 5
    assert (first.answered_at, second.answered_at) == (1_000.0, 1_005.0)


def test_per_body_scripts_each_distinct_body_by_its_arrivals() -> None:
    with FakeEventsServer(responder=PerBody(503, Reply(status=429, retry_after="1"))) as server:
        statuses = [_post(server, _body(i)) for i in ("a", "b", "a", "b", "a", "b")]
    assert statuses == [503, 503, 429, 429, 202, 202]
    assert server.accepted_ids() == {"a": 1, "b": 1}


def test_a_reply_is_the_script_first_then_the_responder_then_the_default() -> None:
    seen: list[ReceivedRequest] = []

    def responder(request: ReceivedRequest) -> int | None:
        seen.append(request)
        return 400 if request.source_request_ids == ["bad"] else None

    with FakeEventsServer(responder=responder, default=Reply(status=504)) as server:
        server.script(500)
        statuses = [_post(server, _body(i)) for i in ("bad", "bad", "good")]
    assert statuses == [500, 400, 504]
    # The responder saw each request it was asked about while it was still unanswered.
    assert [(r.index, r.status, r.outcome, r.answered_at) for r in seen] == [
        (1, None, "pending", None),
        (2, None, "pending", None),
    ]


def test_a_request_is_recorded_pending_until_it_is_answered() -> None:
    release = threading.Event()

    def responder(_: ReceivedRequest) -> None:
        release.wait(10)  # the normal answer, once the test has looked

    answered: list[int] = []
    with FakeEventsServer(responder=responder) as server:
        worker = threading.Thread(target=lambda: answered.append(_post(server, _body("a"))))
        worker.start()
        while not server.requests:
            worker.join(0.01)
        assert (server.requests[0].outcome, server.requests[0].status) == ("pending", None)
        release.set()
        worker.join()
    assert answered == [202]
    assert (server.requests[0].outcome, server.requests[0].accepted) == ("answered", True)


def test_a_delay_keeps_the_normal_answer(server: FakeEventsServer) -> None:
    clock_before = time.monotonic()
    server.script(Reply(delay=0.2))
    assert _post(server, _body("a")) == 202
    assert time.monotonic() - clock_before >= 0.2
    assert server.requests[0].accepted


def test_on_answer_sees_each_request_once_answered() -> None:
    done: list[tuple[int, int | None, str]] = []
    with FakeEventsServer(
        on_answer=lambda r: done.append((r.index, r.status, r.outcome))
    ) as server:
        server.script(503, Reply(action="reset"))
        assert _post(server, _body("a")) == 503
        with pytest.raises(urllib3.exceptions.ProtocolError):
            _post(server, _body("a"))
        assert _post(server, _body("a")) == 202
    # Called from each connection's thread once the client may already be sending the next.
    assert sorted(done) == [(0, 503, "answered"), (1, None, "reset"), (2, 202, "answered")]


def test_requests_that_cannot_be_read_are_refused(server: FakeEventsServer) -> None:
    with urllib3.PoolManager(retries=False) as pool:
        got = pool.request("GET", server.url + "/v2/bulkevents")
    assert got.status == 405
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /v2/bulkevents HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411 ")


@pytest.mark.parametrize(
    "bad",
    [
        {"action": "explode"},
        {"delay": -1.0},
        {"hang_seconds": -0.5},
        {"stream_size": 10},
        {"status": 400, "stream_size": -1},
    ],
    ids=["action", "delay", "hang_seconds", "stream_size without status", "negative size"],
)
def test_a_reply_is_checked_when_built(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Reply(**bad)  # type: ignore[arg-type]


def test_the_records_redact_the_secret(server: FakeEventsServer) -> None:
    _post(server, _body("a"))
    (request,) = server.requests
    assert request.headers["Authorization"] == "<redacted>"
    assert request.api_key == "test-key"
    assert "test-secret" not in repr(server.requests)
    assert "dGVzdC1rZXk6dGVzdC1zZWNyZXQ" not in repr(server.requests)  # key:secret, base64


# --- mParticle's rules as the fake judges them --------------------------------------------


def test_historical_rules_are_enforced_by_the_fake(server: FakeEventsServer) -> None:
    young = Batch(
        events=[CustomEvent(event_name="x", custom_event_type="other", timestamp_unixtime_ms=NOW)]
    )
    routed = next(iter(pack(route([young], now=NOW))))
    plan = [Request.of(Endpoint.HISTORICAL, routed.batches)]  # type: ignore[union-attr]
    with EventsClient("test-key", "test-secret", base_url=server.url) as client:
        report = client.send(plan)
    assert report.outcomes[0].status == "rejected"
    assert "72 hours" in (report.outcomes[0].response_body or "")


def test_invalid_body_gets_mparticles_error_shape(server: FakeEventsServer) -> None:
    response = urllib3.request(
        "POST",
        server.url + "/v2/bulkevents",
        body=b'[{"events":[{"event_type":"nope"}]}]',
        headers=HEADERS,
    )
    assert response.status == 400
    errors = orjson.loads(response.data)["errors"]
    assert errors[0]["code"] == "BAD_REQUEST"
    assert "event_type" in errors[0]["message"]


def test_the_fake_answers_429_with_retry_after_and_rate_limit_headers() -> None:
    with FakeEventsServer(rate_limit=10) as server:
        policy = RetryPolicy(max_retry_after=5)
        with EventsClient(
            "test-key",
            "test-secret",
            base_url=server.url,
            max_workers=1,
            rate_limit=None,
            retry=policy,
        ) as client:
            report = client.upload(_batches(200))
    first, second = server.requests
    assert first.status == 202  # the burst: 100 batches (one request) at once
    assert second.status == 429
    assert report.rate_limit_headers["x-mp-rate-limit-percentage-used"] == ("100",)
    assert report.rate_limit_headers["x-mp-rate-limit-exceeded"] == ("app",)
    # 100 batches at 10 a second: mParticle's whole seconds, beyond max_retry_after.
    assert report.stopped is not None
    assert "10 s wait" in report.stopped
    assert report.counts == {"accepted": 100, "rejected": 0, "failed": 0, "pending": 100}


def test_the_fakes_rate_limit_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        FakeEventsServer(rate_limit=0)
