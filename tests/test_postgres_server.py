"""The PostgreSQL fixture skips where the server is missing, and fails instead when CI requires it."""

from __future__ import annotations

import postgres_server
import pytest


def test_missing_postgresql_skips_with_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres_server.REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="install Debian's 'postgresql' package"):
        postgres_server.unavailable("PostgreSQL's server binaries are not installed")


def test_missing_postgresql_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(postgres_server.REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL tests must run"):
        postgres_server.unavailable("PostgreSQL's server binaries are not installed")


def test_no_binaries_means_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(postgres_server.REQUIRE, raising=False)
    monkeypatch.setattr(postgres_server, "_bin_dir", lambda: None)
    with pytest.raises(pytest.skip.Exception), postgres_server.running_server():
        raise AssertionError("a server must not start without binaries")
