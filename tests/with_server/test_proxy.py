"""Forward proxies: HTTPS_PROXY / NO_PROXY / proxy=, through a loopback CONNECT proxy.

The Events API is played by a TLS front (a trustme certificate for ``events.example.test``)
relaying to :class:`FakeEventsServer`; only the proxy knows where that front listens, so a
request that reaches the fake server went through the proxy, with TLS verified end to end.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import mparticle_feed as mpf
from mparticle_feed._delivery.client import _proxy_for
from mparticle_feed.testing import FakeEventsServer

from .conftest import KEY, SECRET, batches

HOST = "events.example.test"


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _relay(a: socket.socket, b: socket.socket) -> None:
    threads = [
        threading.Thread(target=_pipe, args=(a, b), daemon=True),
        threading.Thread(target=_pipe, args=(b, a), daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a.close()
    b.close()


class _Listener:
    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self.handle, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=5)


class TlsFront(_Listener):
    """Terminates TLS as ``events.example.test`` and relays plain HTTP to the fake server."""

    def __init__(self, ca: trustme.CA, backend_port: int) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(HOST).configure_cert(self.context)
        self.backend_port = backend_port
        self.connections = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()
            return
        self.connections += 1
        _relay(tls, socket.create_connection(("127.0.0.1", self.backend_port)))


class ConnectProxy(_Listener):
    """An HTTP CONNECT proxy that knows one host: ``events.example.test`` → the TLS front."""

    def __init__(self, front_port: int) -> None:
        self.front_port = front_port
        self.tunnels: list[tuple[str, str | None]] = []  # (target, Proxy-Authorization)
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                conn.close()
                return
            head += chunk
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        self.tunnels.append((target, headers.get("proxy-authorization")))
        if method != "CONNECT" or target != f"{HOST}:443":
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.front_port))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        _relay(conn, upstream)


@pytest.fixture
def ca_file(tmp_path: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture
def proxied(
    server: FakeEventsServer, ca_file: tuple[trustme.CA, str]
) -> Iterator[tuple[ConnectProxy, TlsFront]]:
    front = TlsFront(ca_file[0], server.port)
    proxy = ConnectProxy(front.port)
    yield proxy, front
    proxy.close()
    front.close()


def test_a_sync_through_https_proxy_reaches_the_server_and_the_proxy_sees_every_request(
    server: FakeEventsServer,
    proxied: tuple[ConnectProxy, TlsFront],
    ca_file: tuple[trustme.CA, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy, front = proxied
    monkeypatch.setenv("HTTPS_PROXY", f"http://alice:pr0xy-pw@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    caplog.set_level(logging.DEBUG)
    with mpf.EventsClient(
        KEY, SECRET, base_url=f"https://{HOST}", ca_certs=ca_file[1], max_workers=2
    ) as client:
        assert client.proxy == f"http://127.0.0.1:{proxy.port}"
        assert "pr0xy-pw" not in repr(client)
        rows = [{"id": n, "user": f"u{n}"} for n in range(250)]
        mapping = mpf.CustomEventMapping(
            stamp_arrival_time=True,
            primary_key="id",
            user_identities={"customer_id": "user"},
            event_name=mpf.Constant("x"),
        )
        report = mpf.sync(rows, mapping, client)
    assert report.sent == 250
    assert report.ok
    assert len(server.accepted_requests()) == report.requests_sent == 3
    # The front is reachable only through the proxy: every request went through a tunnel.
    assert front.connections == len(proxy.tunnels) >= 1
    expected_auth = "Basic " + base64.b64encode(b"alice:pr0xy-pw").decode()
    assert proxy.tunnels == [(f"{HOST}:443", expected_auth)] * len(proxy.tunnels)
    assert "pr0xy-pw" not in caplog.text
    assert f"sending through the proxy http://127.0.0.1:{proxy.port}" in caplog.text


def test_an_explicit_proxy_and_an_untrusted_certificate(
    server: FakeEventsServer,
    proxied: tuple[ConnectProxy, TlsFront],
    ca_file: tuple[trustme.CA, str],
) -> None:
    proxy, _ = proxied
    url = f"http://127.0.0.1:{proxy.port}"
    with mpf.EventsClient(
        KEY, SECRET, base_url=f"https://{HOST}", ca_certs=ca_file[1], proxy=url, trust_env=False
    ) as client:
        assert client.upload(batches(3)).counts["accepted"] == 3
    # Without our CA the tunnel opens but TLS is verified end to end, and refused.
    with (
        mpf.EventsClient(KEY, SECRET, base_url=f"https://{HOST}", proxy=url) as client,
        pytest.raises(mpf.UploadConfigurationError, match="certificate"),
    ):
        client.upload(batches(1))
    assert len(server.requests) == 1


def test_a_loopback_base_url_is_never_proxied(
    server: FakeEventsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with mpf.EventsClient(KEY, SECRET, base_url=server.url, proxy="http://127.0.0.1:9") as client:
        assert client.proxy is None
        assert client.upload(batches(2)).counts["accepted"] == 2


@pytest.mark.parametrize(
    ("env", "explicit", "trust_env", "expected"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, None, True, "http://p:3128"),
        ({"https_proxy": "p.corp:3128"}, None, True, "http://p.corp:3128"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".mparticle.com"}, None, True, None),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, None, True, None),
        ({"HTTPS_PROXY": "http://p:3128"}, None, False, None),
        ({"HTTP_PROXY": "http://p:3128"}, None, True, None),  # only HTTPS_PROXY for https
        ({}, "https://u:pw@q:8443", True, "https://u:pw@q:8443"),
        ({"HTTPS_PROXY": "http://p:3128"}, "", True, None),  # proxy="" turns it off
    ],
)
def test_which_proxy(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    explicit: str | None,
    trust_env: bool,
    expected: str | None,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _proxy_for("https://s2s.us1.mparticle.com", explicit, trust_env) == expected


def test_a_bad_proxy_url_is_a_configuration_error_without_its_credentials() -> None:
    with pytest.raises(mpf.ConfigurationError) as caught:
        mpf.EventsClient(KEY, SECRET, proxy="socks5://u:secret-pw@p:1080")
    assert "secret-pw" not in str(caught.value)
