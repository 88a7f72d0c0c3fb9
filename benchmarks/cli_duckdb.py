"""The CLI over a DuckDB file: read as Arrow (the default) against ``--no-arrow`` (the cursor).

    python benchmarks/cli_duckdb.py [--rows 200000]

The (i) workload's custom events (7 of every 10 generated rows) are written to a DuckDB
file. Then, each in its own process, so that CPU and peak memory are the command's own:

- ``mparticle-feed sync`` with a fresh state file to a loopback ``FakeEventsServer`` (in
  another process, pacing off), then the same command again (nothing changed: nothing sent);
- ``mparticle-feed plan`` (every request held in memory, as a plan holds them).

Each is run through Arrow and with ``--no-arrow``; CPU is the child's user + system time,
memory its peak RSS (VmHWM), both measured by the child itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import arrow_source
import pipeline
from sync_cost import running_sink

QUERY = "SELECT * FROM custom_events ORDER BY event_id"


def _run(arguments: list[str], environment: dict[str, str]) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of the CLI run with ``arguments`` in a child process.

    The child measures itself (``--child``): a parent's ``wait4`` would count the memory of
    this process, which the child was forked from, in the child's peak.
    """
    finished = subprocess.run(
        [sys.executable, __file__, "--child", *arguments],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:3])}... failed: {finished.stderr}")
    figures = json.loads(finished.stdout.strip().splitlines()[-1])
    return float(figures["cpu"]), float(figures["peak_rss_mb"])


def _child(arguments: list[str]) -> int:
    from pipeline_memory import peak_rss_mb

    from mparticle_feed._cli import main as cli

    code = cli(arguments)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "peak_rss_mb": peak_rss_mb()}))
    return code


def measure(rows: int) -> dict[str, dict[str, tuple[float, float]]]:
    with tempfile.TemporaryDirectory(prefix="mparticle-feed-cli-duckdb-") as folder:
        path = Path(folder) / "events.duckdb"
        connection = arrow_source.build_duckdb(rows)
        connection.execute(f"ATTACH '{path}' AS target")
        connection.execute("CREATE TABLE target.custom_events AS SELECT * FROM custom_events")
        connection.execute("DETACH target")
        connection.close()
        mapping = Path(folder) / "custom.json"
        mapping.write_text(json.dumps(pipeline.CUSTOM_MAPPING.to_dict()), encoding="utf-8")
        environment = {
            **os.environ,
            "MPARTICLE_API_KEY": "bench-key",
            "MPARTICLE_API_SECRET": "bench-secret",
            "MPARTICLE_FEED_TEST_NOW": pipeline.routing_now(rows // 10).isoformat(),
        }
        source = ["--db", str(path), "--query", QUERY, "--mapping", str(mapping), "-q"]
        results: dict[str, dict[str, tuple[float, float]]] = {}
        with running_sink() as url:
            for label, extra in (("arrow", []), ("cursor", ["--no-arrow"])):
                state = ["--state", str(Path(folder) / f"{label}.sqlite")]
                summary = Path(folder) / f"{label}.json"
                sync = ["sync", *source, *extra, *state, "--base-url", url, "--rate-limit", "0"]
                sync += ["--summary-json", str(summary)]
                first = _run(sync, environment)
                sent = json.loads(summary.read_text())["sent"]
                second = _run(sync, environment)
                again = json.loads(summary.read_text())["requests_sent"]
                if not sent or again:
                    msg = f"({label}) the first sync sent {sent} rows, the second {again} requests"
                    raise SystemExit(msg)
                results[label] = {
                    "first sync": first,
                    "second sync": second,
                    "plan": _run(["plan", *source, *extra], environment),
                }
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows generated (200,000)")
    args = parser.parse_args(argv)
    results = measure(args.rows)
    print(f"the CLI over DuckDB, {args.rows:,} generated rows (7 in 10 custom events)")
    print(
        f"{'command':<13} {'Arrow CPU s':>12} {'cursor CPU s':>13} {'ratio':>6} "
        f"{'Arrow MB':>9} {'cursor MB':>10}"
    )
    for command in ("first sync", "second sync", "plan"):
        arrow_cpu, arrow_mb = results["arrow"][command]
        cursor_cpu, cursor_mb = results["cursor"][command]
        print(
            f"{command:<13} {arrow_cpu:>12.2f} {cursor_cpu:>13.2f} "
            f"{cursor_cpu / arrow_cpu:>5.2f}x {arrow_mb:>9.0f} {cursor_mb:>10.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
