"""(f): uploading the workload's batches to a loopback sink that only reads and answers 202.

- (f) ``EventsClient.upload`` with its defaults (4 workers, keep-alive connections);
- (fa) the official SDK: ``EventsApi.bulk_upload_events``, 100 batches a call, as its
  README shows.

Both get the same batches (each built once, before timing, in its own model classes) and
the same sink; a client is made once, so both reuse their connections across repetitions.
The sink can keep the bodies it receives, to prove both sent the same JSON values.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workload import chunks

import mparticle_feed as mpf

#: Dummy credentials: the sink never looks at them.
API_KEY = "bench-key"
API_SECRET = "bench-secret"


class Sink(ThreadingHTTPServer):
    """Reads each request's body and answers 202 with an empty body, keeping the connection."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.lock = threading.Lock()
        self.requests = 0
        self.bytes = 0
        self.keep = False
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def record(self, body: bytes) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += len(body)
            if self.keep:
                self.bodies.append(body)

    @contextmanager
    def keeping(self) -> Iterator[list[bytes]]:
        """Keep the bodies received inside the block (for the JSON check, not for timing)."""
        with self.lock:
            self.bodies = []
            self.keep = True
        try:
            yield self.bodies
        finally:
            with self.lock:
                self.keep = False


class _SinkHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as mParticle's servers do
    server: Sink

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.record(self.rfile.read(length))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a log line per request would cost more than the request."""


@contextmanager
def running_sink() -> Iterator[Sink]:
    sink = Sink()
    thread = threading.Thread(target=sink.serve_forever, name="bench-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
        thread.join()


def feed_uploader(sink: Sink, batches: Sequence[mpf.Batch], now: datetime) -> Any:
    """A function uploading ``batches`` with one EventsClient (close it with ``.close``)."""
    # No pacing: (f) measures the client against the official SDK, not the account limit.
    client = mpf.EventsClient(API_KEY, API_SECRET, base_url=sink.url, rate_limit=None)

    def upload() -> mpf.UploadReport:
        report = client.upload(batches, now=now)
        if report.count("accepted") != len(batches):
            raise SystemExit(f"the sink did not accept every batch: {report.counts}")
        return report

    upload.close = client.close  # type: ignore[attr-defined]
    return upload


def official_uploader(sink: Sink, batches: Sequence[Any]) -> Any:
    """A function uploading ``batches`` with the official SDK, 100 a call."""
    import mparticle  # type: ignore[import-untyped]

    configuration = mparticle.Configuration()
    configuration.host = f"{sink.url}/v2"
    configuration.api_key = API_KEY
    configuration.api_secret = API_SECRET
    api = mparticle.EventsApi(configuration)

    def upload() -> None:
        for chunk in chunks(batches):
            api.bulk_upload_events(list(chunk))

    upload.close = api.api_client.rest_client.pool_manager.clear  # type: ignore[attr-defined]
    return upload
