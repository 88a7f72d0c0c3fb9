"""Security: the secret never shows, TLS cannot be switched off by accident, input is data only.

Every test in this folder already runs under the ``_secret_watch`` fixture (conftest.py):
all loggers at DEBUG, every record and all captured output searched for the secret. The
tests here add the places a caller sees: reprs, exception texts, reports, the scorecard.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from builders import NOW, batches
from reliability_kit import API_KEY, API_SECRET, SECRET_FORMS, Scorecard, fake_server, secret_leaks
from scenario import client_for, figures_for

from mparticle_feed import EventsClient, load_mapping, map_rows
from mparticle_feed._delivery.retry import RetryPolicy
from mparticle_feed._errors import ConfigurationError, MappingError, UploadConfigurationError
from mparticle_feed.testing import FakeClock, FakeEventsServer, PerBody, Reply

MakeServer = Callable[..., FakeEventsServer]


def _texts(*objects: object) -> list[str]:
    out = []
    for obj in objects:
        out += [repr(obj), str(obj)]
        if isinstance(obj, BaseException):
            out += [repr(a) for a in obj.args]
            out += [repr(v) for v in vars(obj).values()]
    return out


# --- the secret -----------------------------------------------------------------------


def test_the_secret_watch_recognises_every_form_of_the_secret() -> None:
    assert secret_leaks(f"Authorization: Basic {SECRET_FORMS[1]}")
    assert secret_leaks(f"password={API_SECRET}")
    assert not secret_leaks(f"api_key={API_KEY}")


def test_the_secret_never_appears_across_a_tour_of_faults(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    """Every outcome kind, with DEBUG logs: reprs, reasons, bodies and errors stay clean."""
    script = PerBody(
        503,
        Reply(action="hang", hang_seconds=1.0),
        Reply(action="reset"),
        Reply(status=429, retry_after="1"),
    )
    server = make_server(responder=script, clock=clock.monotonic)
    seen: list[object] = []
    with client_for(server, clock, max_batches=2, max_workers=2) as client:
        seen.append(client)
        report = client.upload(batches(6), now=NOW, on_outcome=seen.append)
        seen += [report, *report.outcomes]
    refusing = make_server(
        default=Reply(status=401, body=b'{"errors":[{"code":"UNAUTHORIZED"}]}'),
        clock=clock.monotonic,
    )
    with client_for(refusing, clock) as client, pytest.raises(ConfigurationError) as caught:
        client.upload(batches(2), now=NOW)
    seen += [caught.value, client]
    assert isinstance(caught.value, UploadConfigurationError)
    seen += [caught.value.report, *caught.value.report.outcomes]
    for key, secret in ((API_KEY, ""), ("", API_SECRET)):
        with pytest.raises(ConfigurationError) as config_error:
            EventsClient(key, secret)
        seen.append(config_error.value)
    with pytest.raises(ConfigurationError) as url_error:
        EventsClient(API_KEY, API_SECRET, base_url=f"https://user:{API_SECRET}@example.com")
    seen.append(url_error.value)
    for text in _texts(*seen):
        assert not secret_leaks(text), f"secret in: {text[:80]}..."
    # The secret does go where it must: the Authorization header (the server decodes the
    # key only from a header holding exactly key and secret), and only there.
    assert {r.api_key for r in server.requests} == {API_KEY}
    assert all(API_SECRET.encode() not in r.body for r in server.requests)
    assert not secret_leaks(repr(server.requests))  # the fake's records redact it
    assert not secret_leaks(scorecard.to_json())


def test_the_scorecard_file_holds_no_secret(scorecard: Scorecard, tmp_path: Path) -> None:
    path = scorecard.write(tmp_path / "card.json")
    text = path.read_text() if path.exists() else ""
    assert not secret_leaks(text)


# --- TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://s2s.mparticle.com",
        "http://10.0.0.1:8080",
        "http://127.0.0.1.nip.io",
        "http://localhost.evil.example",
        "http://0.0.0.0:8000",
        "ftp://127.0.0.1",
        "file:///etc/passwd",
    ],
)
def test_plain_http_is_refused_except_to_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError):
        EventsClient(API_KEY, API_SECRET, base_url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9", "http://localhost:9", "http://[::1]:9"])
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    with EventsClient(API_KEY, API_SECRET, base_url=url) as client:
        assert client.base_url == url


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(ca: trustme.CA) -> Iterator[FakeEventsServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with fake_server(tls=context) as server:
        yield server


def test_a_self_signed_certificate_fails_verification(
    tls_server: FakeEventsServer, scorecard: Scorecard
) -> None:
    data = batches(3)
    with (
        EventsClient(API_KEY, API_SECRET, base_url=tls_server.url, timeout=2) as client,
        pytest.raises(UploadConfigurationError, match="certificate") as caught,
    ):
        client.upload(data, now=NOW)
    assert tls_server.requests == []  # not one byte of data left the client
    # The server thread counts the refused handshake after the client has already given up.
    deadline = time.monotonic() + 5
    while tls_server.tls_failures < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tls_server.tls_failures >= 1
    report = caught.value.report
    assert report.counts["accepted"] == 0
    scorecard.record(
        figures_for("TLS self-signed, no CA given", data, report, tls_server, note="refused")
    )


def test_the_tests_ca_makes_the_same_server_trusted(
    tls_server: FakeEventsServer, ca: trustme.CA, tmp_path: Path
) -> None:
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with EventsClient(
        API_KEY, API_SECRET, base_url=tls_server.url, ca_certs=str(bundle), timeout=2
    ) as client:
        report = client.upload(batches(3), now=NOW)
    assert report.counts["accepted"] == 3
    assert tls_server.requests[0].api_key == API_KEY  # Basic auth arrived through TLS


# --- response bodies are read with a cap ------------------------------------------------


def test_a_response_body_of_tens_of_megabytes_is_read_with_a_cap(
    make_server: MakeServer, clock: FakeClock, scorecard: Scorecard
) -> None:
    size = 40_000_000
    server = make_server(default=Reply(status=400, stream_size=size), clock=clock.monotonic)
    data = batches(1)
    tracemalloc.start()
    try:
        with client_for(server, clock, timeout=5) as client:
            report = client.upload(data, now=NOW)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (outcome,) = report.outcomes
    assert outcome.status == "rejected"
    assert outcome.response_body is not None
    assert 0 < len(outcome.response_body.encode()) <= 64_000  # the report holds a capped body
    assert peak < 4_000_000, f"reading the answer took {peak:,} bytes"
    scorecard.record(
        figures_for(
            "security 40 MB error body", data, report, server, clock, note=f"peak {peak:,} B"
        )
    )


# --- mapping files are data ---------------------------------------------------------------

_HOSTILE_STRINGS = [
    "__import__('os').system('touch PWNED')",
    "{{ open('/etc/passwd').read() }}",
    "${jndi:ldap://example.com/a}",
    "@/etc/passwd",
    "file:///etc/passwd",
    "!!python/object/apply:os.system ['touch PWNED']",
    "lambda row: open('/etc/passwd')",
    "os.system",
]


class _Audit:
    """Records risky runtime events (file opens, code execution, processes, sockets) while armed."""

    RISKY = (
        "open",
        "exec",
        "compile",
        "os.system",
        "subprocess.Popen",
        "os.exec",
        "os.posix_spawn",
        "socket.connect",
        "import",
        "urllib.Request",
        "ctypes.dlopen",
        "pickle.find_class",
        "marshal.loads",
    )

    def __init__(self) -> None:
        self.armed = threading.local()
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if getattr(self.armed, "on", False) and event.startswith(self.RISKY):
            self.events.append((event, args))


_AUDIT: _Audit | None = None


@pytest.fixture(scope="module")
def audit() -> _Audit:
    global _AUDIT  # noqa: PLW0603 - audit hooks cannot be removed; install one per process
    if _AUDIT is None:
        _AUDIT = _Audit()
    return _AUDIT


@pytest.mark.parametrize("suffix", [".toml", ".json"])
@pytest.mark.parametrize("hostile", _HOSTILE_STRINGS)
def test_a_mapping_file_is_data_only(
    tmp_path: Path, audit: _Audit, suffix: str, hostile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    document: dict[str, Any] = {
        "kind": "custom_event",
        "primary_key": "id",
        "event_name": {"const": hostile},
        "user_identities": {"customer_id": hostile},
        "custom_attributes": {"columns": {"note": hostile, "raw": {"const": hostile}}},
    }
    path = tmp_path / f"mapping{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(document))
    else:
        path.write_text(_toml(document))
    rows = [{"id": 1, hostile: "alice", "ts": 1}]
    import mparticle_feed._mapping.run  # noqa: F401 - imported before arming the audit

    audit.events.clear()
    audit.armed.on = True
    try:
        mapping = load_mapping(path)
        run = map_rows(rows, mapping)
        out = list(run)
    except MappingError:
        out = []
    finally:
        audit.armed.on = False
    opened = [args[0] for event, args in audit.events if event == "open"]
    assert all(Path(str(p)) == path for p in opened), f"opened other files: {opened}"
    others = [event for event, _ in audit.events if event != "open"]
    assert others == [], f"a mapping file triggered {others}"
    assert not (tmp_path / "PWNED").exists()
    # A hostile string is a column name or a constant, carried as text.
    for sourced in out:
        for event in sourced.batch.events or ():
            assert event.event_name == hostile  # type: ignore[union-attr]


def _toml(document: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    return "\n".join(f"{json.dumps(k)} = {value(v)}" for k, v in document.items()) + "\n"


def test_a_mapping_file_cannot_name_a_callable(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(
        json.dumps(
            {"kind": "custom_event", "event_name": {"computed": "os.system"}, "primary_key": "id"}
        )
    )
    with pytest.raises(MappingError):
        load_mapping(path)


def test_one_attempt_policy_is_respected_for_hostile_servers(
    make_server: MakeServer, clock: FakeClock
) -> None:
    """A server that never answers cannot hold a run forever: the deadline bounds it."""
    server = make_server(default=Reply(action="hang", hang_seconds=0.5), clock=clock.monotonic)
    policy = RetryPolicy(max_attempts=3, deadline=10)
    with client_for(server, clock, retry=policy) as client:
        report = client.upload(batches(1), now=NOW)
    assert report.count("failed") == 1
    assert len(server.requests) == 3


def test_the_audit_sees_file_opens_and_code_execution(audit: _Audit, tmp_path: Path) -> None:
    """The data-only test above can fail: what it forbids is visible to it."""
    target = tmp_path / "x.txt"
    target.write_text("x")
    audit.events.clear()
    audit.armed.on = True
    try:
        target.read_text()
        exec("1 + 1")
    finally:
        audit.armed.on = False
    kinds = {event for event, _ in audit.events}
    assert {"open", "exec"} <= kinds
