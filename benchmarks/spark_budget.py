"""(o) One rate budget for a Spark run: 4 tasks against a fake enforcing N batches a second.

    python benchmarks/spark_budget.py [--rate N] [--batches N] [--tasks N]

Needs the ``spark`` extra and Java 17+. Each row is one user, so each row is one batch;
the fake (``FakeEventsServer(rate_limit=N)``) answers 429 beyond N batches a second, as an
account does. Two runs, interleaved in one process: the shared budget (a limiter served
from the driver, the default) and the static split (each task paced at N / tasks). The
figures: accepted batches a second over N, measured at the fake from the first to the last
accepted request, and the share of requests answered 429.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import datetime, timezone
from typing import Any

import mparticle_feed as mpf
from mparticle_feed.testing import FakeEventsServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)

MAPPING = mpf.CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    event_name=mpf.Constant("View"),
    timestamp_unixtime_ms="ts",
)


def session(tasks: int) -> Any:
    from pyspark.sql import SparkSession

    # pyspark 4.3 warns about pandas >= 3 even on the Arrow-only path (docs/distributed.md).
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(f"local[{tasks}]")
        .appName("mparticle-feed-budget")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.adaptive.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run(spark: Any, *, rate: float, batches: int, tasks: int, budget: str) -> dict[str, float]:
    import mparticle_feed.spark

    frame = spark.createDataFrame(
        [(f"r{n:07d}", f"u{n:07d}", NOW) for n in range(batches)],
        "id string, user string, ts timestamp",
    ).cache()
    frame.count()
    with FakeEventsServer(now=lambda: NOW, rate_limit=rate) as server:
        with mpf.EventsClient(
            "test-key", "test-secret", base_url=server.url, rate_limit=rate, max_batches=20
        ) as client:
            result = mparticle_feed.spark.sync(
                frame, MAPPING, client, partitions=tasks, now=NOW, budget=budget
            )
        requests = server.requests
    frame.unpersist()
    result.raise_for_failures()
    accepted = [r for r in requests if r.accepted]
    span = max(r.received_at for r in accepted) - min(r.received_at for r in accepted)
    # The first accepted request's batches were sent at time 0: count the rest over the span.
    sent_after_first = sum(len(r.batches or ()) for r in accepted) - len(accepted[0].batches or ())
    return {
        "rate_share": (sent_after_first / span) / rate if span > 0 else float("nan"),
        "share_429": sum(1 for r in requests if r.status == 429) / len(requests),
        "requests": float(len(requests)),
        "seconds": span,
    }


def measure(rate: float, batches: int, tasks: int, repeat: int = 1) -> dict[str, dict[str, float]]:
    """Medians over ``repeat`` interleaved runs of each budget mode."""
    spark = session(tasks)
    try:
        runs: dict[str, list[dict[str, float]]] = {"shared": [], "split": []}
        for _ in range(repeat):
            for budget, results in runs.items():
                results.append(run(spark, rate=rate, batches=batches, tasks=tasks, budget=budget))
    finally:
        spark.stop()
    return {
        budget: {key: sorted(r[key] for r in results)[len(results) // 2] for key in results[0]}
        for budget, results in runs.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="the fake's batches a second")
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args(argv)
    figures = measure(options.rate, options.batches, options.tasks, options.repeat)
    print(
        f"{options.tasks} Spark tasks, {options.batches} batches, fake limit "
        f"{options.rate:g} batches/s"
    )
    for budget, result in figures.items():
        print(
            f"  {budget:>6}: {result['rate_share']:.1%} of the limit, "
            f"{result['share_429']:.2%} of {result['requests']:.0f} requests answered 429, "
            f"{result['seconds']:.1f} s"
        )


if __name__ == "__main__":
    main()
