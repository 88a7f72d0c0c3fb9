"""The connections of an EventsClient: base URL, proxy, pool, and one POST (delivery stage).

:class:`Connection` owns the urllib3 pool and the request headers (the credentials live
only there); :meth:`Connection.attempt` makes one POST and turns a network failure into
an :class:`Answer`, so the attempt loop (:mod:`.attempts`) decides what happens next.
"""

from __future__ import annotations

import base64
import ipaddress
import platform
import socket
import ssl
import time
import urllib.request
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version

import attrs
import urllib3
from urllib3.exceptions import (
    HTTPError,
    LocationParseError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError

from .._errors import ConfigurationError
from .routing import Endpoint

__all__ = ["PODS", "Answer", "Connection", "base_url_for", "proxy_for", "redact_proxy"]

#: Pod name -> base URL (the Events API paths start with /v2).
PODS = {
    "us1": "https://s2s.us1.mparticle.com",
    "us2": "https://s2s.us2.mparticle.com",
    "eu1": "https://s2s.eu1.mparticle.com",
    "au1": "https://s2s.au1.mparticle.com",
}

_URLLIB3_VERSION = version("urllib3")


def _package_version() -> str:
    try:
        return version("mparticle-feed")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _is_loopback(host: str) -> bool:
    """True for a loopback address, or a name that resolves to loopback addresses only."""
    host = host.strip("[]").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {info[4][0] for info in found}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses
    )


def base_url_for(api_key: str, pod: str | None, base_url: str | None) -> str:
    if base_url is not None:
        if pod is not None:
            msg = "give either pod or base_url, not both"
            raise ConfigurationError(msg)
        try:
            parsed = urllib3.util.parse_url(base_url)
        except LocationParseError:
            msg = f"base_url {base_url!r} is not a URL"
            raise ConfigurationError(msg) from None
        if parsed.scheme not in ("https", "http") or not parsed.host:
            msg = f"base_url must be an https:// URL, got {base_url!r}"
            raise ConfigurationError(msg)
        if parsed.scheme == "http" and not _is_loopback(parsed.host):
            msg = (
                f"plain http is allowed only to loopback hosts (for tests); {parsed.host!r} "
                "needs https"
            )
            raise ConfigurationError(msg)
        if parsed.auth or parsed.query or parsed.fragment:
            msg = "base_url must not carry credentials, a query or a fragment"
            raise ConfigurationError(msg)
        path = (parsed.path or "").rstrip("/")
        path = path.removesuffix("/v2")
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.host}{port}{path}"
    if pod is None:
        prefix = api_key.split("-", 1)[0].lower() if "-" in api_key else ""
        pod = prefix if prefix in PODS else "us1"
    name = pod.lower()
    if name not in PODS:
        msg = f"unknown pod {pod!r}; expected one of {', '.join(sorted(PODS))}"
        raise ConfigurationError(msg)
    return PODS[name]


# --- forward proxies ---------------------------------------------------------------------


def redact_proxy(url: str) -> str:
    """A proxy URL as it may be shown: scheme, host and port, never the credentials."""
    parsed = urllib3.util.parse_url(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def proxy_for(base_url: str, proxy: str | None, trust_env: bool) -> str | None:
    """The proxy URL to send through, or None for a direct connection.

    An explicit ``proxy`` wins; otherwise, with ``trust_env``, ``HTTPS_PROXY`` (or
    ``HTTP_PROXY`` for a plain-http base URL) unless ``NO_PROXY`` matches the host. A
    loopback host is never proxied, so a developer's ``HTTPS_PROXY`` cannot reroute a
    local fake server.
    """
    parsed = urllib3.util.parse_url(base_url)
    host = parsed.host or ""
    if _is_loopback(host):
        return None
    if proxy is None and trust_env:
        proxies = urllib.request.getproxies_environment()
        found = proxies.get(parsed.scheme or "https")
        # NO_PROXY, as curl and requests read it (missing from typeshed, present since 3.x).
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if found and not bypass(host, proxies):
            proxy = found
    if not proxy:
        return None
    # "proxy.corp:3128" (no scheme) is common in HTTPS_PROXY; it means an http proxy.
    return proxy if "://" in proxy else f"http://{proxy}"


def _pool_manager(proxy: str | None, *, maxsize: int, ca_certs: str | None) -> urllib3.PoolManager:
    """A direct pool, or one tunnelling through ``proxy`` (CONNECT: TLS stays end to end)."""
    if proxy is None:
        return urllib3.PoolManager(
            num_pools=2, maxsize=maxsize, cert_reqs=ssl.CERT_REQUIRED, ca_certs=ca_certs
        )
    try:
        parsed = urllib3.util.parse_url(proxy)
    except LocationParseError:
        msg = "the proxy is not a URL"  # the URL itself may hold credentials: not shown
        raise ConfigurationError(msg) from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        msg = "the proxy must be an http:// or https:// URL with a host"
        raise ConfigurationError(msg)
    headers = urllib3.util.make_headers(proxy_basic_auth=parsed.auth) if parsed.auth else None
    return urllib3.ProxyManager(
        redact_proxy(proxy),
        num_pools=2,
        maxsize=maxsize,
        proxy_headers=headers,
        cert_reqs=ssl.CERT_REQUIRED,
        ca_certs=ca_certs,
    )


@attrs.frozen
class Answer:
    """What one attempt got: a response, or the cause of its failure."""

    status: int | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    text: str | None = None
    #: For retries' accounting: "status 503", "timeout", "connection".
    cause: str = "connection"
    detail: str = ""
    certificate_problem: bool = False


class Connection:
    """One client's pool, URLs and headers; :meth:`attempt` is one POST."""

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        *,
        base_url: str,
        proxy: str | None,
        maxsize: int,
        ca_certs: str | None,
        timeout: float,
        connect_timeout: float,
        max_response_bytes: int,
    ) -> None:
        self.urls = {endpoint: base_url + endpoint.value for endpoint in Endpoint}
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        self._headers = {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": (
                f"mparticle-feed/{_package_version()} "
                f"python/{platform.python_version()} urllib3/{_URLLIB3_VERSION}"
            ),
        }
        self._max_response_bytes = max_response_bytes
        # ``total`` bounds connect plus the first wait; the body is read against the same
        # deadline in _post, so a server trickling bytes cannot hold an attempt longer.
        self._timeout = urllib3.Timeout(
            connect=connect_timeout, read=timeout, total=connect_timeout + timeout
        )
        self._attempt_seconds = connect_timeout + timeout
        self.pool = _pool_manager(proxy, maxsize=maxsize, ca_certs=ca_certs)

    def __repr__(self) -> str:
        return f"Connection(urls={self.urls!r})"

    def close(self) -> None:
        """Close every host pool, then forget them."""
        # Close each host pool ourselves: PoolManager.clear() alone may only forget them,
        # leaving idle keep-alive sockets open until garbage collection.
        pools = self.pool.pools
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()
        self.pool.clear()

    def attempt(self, endpoint: Endpoint, body: bytes) -> Answer:
        """One POST; a network failure becomes an answer without a status."""
        try:
            status, headers, text = self._post(endpoint, body)
        except SSLError as exc:
            return Answer(detail=type(exc).__name__, certificate_problem=_certificate_problem(exc))
        except NewConnectionError as exc:  # before TimeoutError: urllib3 derives it from that
            return Answer(detail=type(exc).__name__)
        except Urllib3TimeoutError as exc:
            return Answer(cause="timeout", detail=type(exc).__name__)
        except (ProtocolError, HTTPError, OSError) as exc:
            return Answer(detail=type(exc).__name__)
        cause = f"status {status}"
        return Answer(status=status, headers=headers, text=text, cause=cause, detail=cause)

    def _post(self, endpoint: Endpoint, body: bytes) -> tuple[int, dict[str, str], str]:
        deadline = time.monotonic() + self._attempt_seconds
        response = self.pool.urlopen(
            "POST",
            self.urls[endpoint],
            body=body,
            headers=self._headers,
            retries=False,
            redirect=False,
            timeout=self._timeout,
            preload_content=False,
        )
        complete = False
        headers = dict(response.headers.items())
        try:
            chunks: list[bytes] = []
            size = 0
            read = getattr(response, "read1", response.read)
            try:
                while size <= self._max_response_bytes:
                    if time.monotonic() > deadline:
                        msg = "the response took longer than the attempt's timeout"
                        raise ReadTimeoutError(None, self.urls[endpoint], msg)  # type: ignore[arg-type]
                    # read1 returns what has arrived, so the deadline is checked between
                    # arrivals (read would wait for the whole amount).
                    chunk = read(min(8192, self._max_response_bytes + 1 - size))
                    if not chunk:
                        complete = True
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except (ProtocolError, HTTPError, OSError):
                # Any 2xx means mParticle took the batches, whatever became of its body.
                if not 200 <= response.status < 300:
                    raise
            data = b"".join(chunks)
            text = data[: self._max_response_bytes].decode("utf-8", "replace")
            return response.status, headers, text
        finally:
            if not complete:
                # Unread (oversized or broken) response: drop the connection, never reuse it.
                response.close()
            response.release_conn()


def _certificate_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
