"""The fault server and the scorecard do what the scenarios rely on."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3
from fault_server import FaultServer, Hang, Partial, Reply, Reset, split_json_array
from hypothesis import given
from hypothesis import strategies as st
from reliability_kit import FakeClock, Figures, Scorecard

HERE = Path(__file__).resolve().parent

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(st.lists(json_values, max_size=6), st.booleans())
def test_split_json_array_returns_each_element_byte_for_byte(
    items: list[object], ascii_only: bool
) -> None:
    parts = [json.dumps(item, ensure_ascii=ascii_only).encode() for item in items]
    body = b"[" + b",".join(parts) + b"]"
    assert split_json_array(body) == parts


def _post(url: str, body: bytes, *, retries: bool = False, timeout: float = 2.0) -> int:
    with urllib3.PoolManager(retries=retries, timeout=timeout) as pool:
        return pool.request("POST", url + "/v2/bulkevents", body=body).status


def test_scripted_statuses_and_records(make_server: Callable[..., FaultServer]) -> None:
    server = make_server([Reply(503, {"Retry-After": "1"}), Reply(202)])
    body = json.dumps([{"source_request_id": "a"}, {"source_request_id": "b"}]).encode()
    # A pool, not a PoolManager: PoolManager.clear() in urllib3 2.x does not close sockets.
    with urllib3.HTTPConnectionPool("127.0.0.1", server.port, retries=False) as pool:
        first = pool.request("POST", "/v2/bulkevents", body=body)
        second = pool.request("POST", "/v2/bulkevents", body=body)
    assert (first.status, first.headers["Retry-After"], second.status) == (503, "1", 202)
    requests = server.requests
    assert [r.source_request_ids for r in requests] == [["a", "b"], ["a", "b"]]
    assert requests[0].connection == requests[1].connection  # keep-alive works
    assert requests[0].raw.endswith(body)
    assert requests[0].raw.startswith(b"POST /v2/bulkevents HTTP/1.1\r\n")
    assert server.accepted_id_counts() == {"a": 1, "b": 1}
    assert server.wait_for_open_connections(0) == 0


def test_chunked_request_bodies_are_read(make_server: Callable[..., FaultServer]) -> None:
    server = make_server()
    with urllib3.PoolManager(retries=False) as pool:
        response = pool.request(
            "POST",
            server.url + "/x",
            body=iter([b'[{"source_request_id":', b'"c"}]']),
            chunked=True,
        )
    assert response.status == 202
    assert server.requests[0].body == b'[{"source_request_id":"c"}]'


def test_hang_reset_and_partial_look_like_network_faults(
    make_server: Callable[..., FaultServer],
) -> None:
    server = make_server([Hang(1.0), Reset(), Partial()])
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        _post(server.url, b"[]", timeout=0.2)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        _post(server.url, b"[]")
    with (
        pytest.raises(urllib3.exceptions.ProtocolError),
        urllib3.PoolManager(retries=False) as pool,
    ):
        pool.request("POST", server.url + "/x", body=b"[]", preload_content=True)
    assert [r.kind for r in server.responses] == ["hang", "reset", "partial"]
    assert len(server.requests) == 3  # each body arrived whole before the fault


def test_connections_are_refused_until_the_server_starts(
    make_server: Callable[..., FaultServer],
) -> None:
    server = make_server(start=False)
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", server.port)),
    ):
        pass
    server.start()
    assert _post(server.url, b"[]") == 202


def test_huge_bodies_are_streamed(make_server: Callable[..., FaultServer]) -> None:
    server = make_server([Reply(400, stream_size=3_000_000)])
    with urllib3.PoolManager(retries=False) as pool:
        response = pool.request("POST", server.url + "/x", body=b"[]", preload_content=False)
        assert len(response.read(1000)) == 1000
        response.release_conn()
    assert response.status == 400


def test_the_server_clock_is_injectable(make_server: Callable[..., FaultServer]) -> None:
    clock = FakeClock()
    server = make_server(clock=clock.monotonic)
    _post(server.url, b"[]")
    clock.sleep(5)
    _post(server.url, b"[]")
    first, second = server.requests
    assert second.received_at - first.received_at == 5
    assert clock.sleeps == [5]


def test_the_scorecard_refuses_a_broken_invariant_and_prints(tmp_path: Path) -> None:
    card = Scorecard()
    with pytest.raises(AssertionError, match="rows in 3"):
        card.record(Figures(scenario="R0 broken", rows_in=3, accepted=2))
    card.record(Figures(scenario="R2 demo", rows_in=3, accepted=2, rejected=1, retries={"503": 1}))
    card.record(Figures(scenario="R10 demo", rows_in=1, failed=1))
    path = card.write(tmp_path / "card.json")
    assert [r["scenario"] for r in json.loads(path.read_text())["scenarios"]] == [
        "R2 demo",
        "R10 demo",
    ]
    done = subprocess.run(
        [sys.executable, str(HERE / "print_scorecard.py"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "R2 demo" in done.stdout
    assert "503:1" in done.stdout
