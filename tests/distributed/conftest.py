"""Fixtures for the engine tests: a local Spark session and a Dask LocalCluster.

Run by the ``distributed`` nox session, which installs the ``spark`` and ``dask`` extras
and pytest-timeout (``--timeout``: a hung JVM fails its test instead of the job). The
engines' workers import this folder's helpers by name, so it goes on ``sys.path`` here
(Dask's spawned workers inherit it) and on ``PYTHONPATH`` (Spark's Python workers).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from engine_support import NOW, one_process, rows  # noqa: E402 - needs HERE on sys.path

from mparticle_feed import SyncReport  # noqa: E402
from mparticle_feed.testing import FakeEventsServer  # noqa: E402


@pytest.fixture(scope="module")
def data() -> list[dict[str, Any]]:
    """The rows every engine test syncs (a module may override it with its own size)."""
    return rows()


@pytest.fixture(scope="module")
def reference(data: list[dict[str, Any]]) -> tuple[dict[str, bytes], SyncReport]:
    """One process's sync of ``data``: the canonical batches and the report."""
    return one_process(data)


@pytest.fixture
def server() -> Iterator[FakeEventsServer]:
    with FakeEventsServer(now=lambda: NOW) as fake:
        yield fake


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    pyspark_sql = pytest.importorskip("pyspark.sql")
    with pytest.MonkeyPatch.context() as patch:
        # Loopback only, and the workers run this interpreter (the session's venv).
        patch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        patch.setenv("PYSPARK_DRIVER_PYTHON", sys.executable)
        patch.setenv(
            "PYTHONPATH", os.pathsep.join(filter(None, [HERE, os.environ.get("PYTHONPATH")]))
        )
        session = (
            pyspark_sql.SparkSession.builder.master("local[2,2]")  # 2 cores; a task may fail once
            .appName("mparticle-feed-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.memory", "768m")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.sql.shuffle.partitions", "4")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        try:
            yield session
        finally:
            session.stop()


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # A free port: None still binds the default 8787, which another run may hold.
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
