from __future__ import annotations

import pytest

from mparticle_feed import ConfigurationError
from mparticle_feed._delivery.client import EventsClient

from .conftest import SECRET


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("us1-abc", "https://s2s.us1.mparticle.com"),
        ("us2-abc", "https://s2s.us2.mparticle.com"),
        ("eu1-abc", "https://s2s.eu1.mparticle.com"),
        ("au1-abc", "https://s2s.au1.mparticle.com"),
        ("abcdef", "https://s2s.us1.mparticle.com"),
        ("xx9-abc", "https://s2s.us1.mparticle.com"),
    ],
)
def test_pod_from_key_prefix(key: str, expected: str) -> None:
    with EventsClient(key, SECRET) as client:
        assert client.base_url == expected


def test_explicit_pod_and_base_url() -> None:
    with EventsClient("k", SECRET, pod="EU1") as client:
        assert client.base_url == "https://s2s.eu1.mparticle.com"
    with EventsClient("k", SECRET, base_url="https://inbound.mparticle.com/s2s/v2/") as client:
        assert client.base_url == "https://inbound.mparticle.com/s2s"
    with pytest.raises(ConfigurationError, match="unknown pod"):
        EventsClient("k", SECRET, pod="mars1")
    with pytest.raises(ConfigurationError, match="either"):
        EventsClient("k", SECRET, pod="us1", base_url="https://x.example")


@pytest.mark.parametrize(
    "url",
    [
        "http://s2s.mparticle.com",
        "http://10.0.0.1:8080",
        "ftp://127.0.0.1",
        "https://u:p@h.example",
    ],
)
def test_plain_http_only_to_loopback(url: str) -> None:
    with pytest.raises(ConfigurationError):
        EventsClient("k", SECRET, base_url=url)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1", "http://127.5.5.5", "http://localhost:9", "http://[::1]:80"]
)
def test_loopback_http_is_allowed(url: str) -> None:
    with EventsClient("k", SECRET, base_url=url) as client:
        assert client.base_url == url.rstrip("/")


def test_repr_hides_the_secret() -> None:
    client = EventsClient("us2-0123456789abcdef", SECRET)
    text = repr(client)
    assert SECRET not in text
    assert "0123456789abcdef" not in text
    client.close()
    assert "closed" in repr(client)


@pytest.mark.parametrize(("key", "secret"), [("", "s"), ("k", "")])
def test_empty_credentials_are_refused(key: str, secret: str) -> None:
    with pytest.raises(ConfigurationError):
        EventsClient(key, secret)
