"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary cluster, loopback.

``initdb`` refuses to run as root (as CI runs): then the cluster belongs to the ``postgres``
user (created if missing) and every server command runs as that user. The server listens on
a free port of 127.0.0.1 with trust authentication, and its socket directory is the cluster's.

Where PostgreSQL is not installed the tests that need it skip with a reason; with
``MPARTICLE_FEED_REQUIRE_POSTGRES=1`` (set by ``.ci/run``, which installs it) they fail.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE = "MPARTICLE_FEED_REQUIRE_POSTGRES"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version(path: str) -> int:
    part = Path(path).parts[-3]
    return int(part) if part.isdigit() else 0


def unavailable(reason: str) -> None:
    """Skip, or fail when CI requires PostgreSQL."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1: PostgreSQL tests must run)", pytrace=False)
    pytest.skip(f"{reason}; install Debian's 'postgresql' package to run these tests")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    if owner is None:
        return command
    return [_system_tool("runuser"), "-u", owner, "--", *command]


def _system_tool(name: str) -> str:
    """A tool of util-linux/passwd by its path: a PATH without /usr/sbin (a non-login
    root shell, some CI images) still finds it."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    return found or name


def _ensure_postgres_user() -> None:
    try:
        subprocess.run(["id", "postgres"], check=True, capture_output=True)
    except subprocess.CalledProcessError:
        subprocess.run(
            [_system_tool("useradd"), "--system", "--no-create-home", "postgres"],
            check=True,
            capture_output=True,
        )


@contextmanager
def running_server() -> Iterator[str]:
    """Start a server; yield its libpq connection string (database ``postgres``, user ``postgres``)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        unavailable("PostgreSQL's server binaries (initdb, pg_ctl) are not installed")
        raise AssertionError  # unreachable: unavailable() skips or fails
    owner = None
    if os.geteuid() == 0:
        _ensure_postgres_user()
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="mpf-pg-"))
    data = root / "data"
    if owner is not None:
        shutil.chown(root, user=owner)
    port = _free_port()
    log = root / "server.log"

    def run(*command: str) -> None:
        done = subprocess.run(
            _as_owner([str(bin_dir / command[0]), *command[1:]], owner),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stderr}{done.stdout}\n{server_log}")

    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off"
        run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            yield f"host=127.0.0.1 port={port} dbname=postgres user=postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
