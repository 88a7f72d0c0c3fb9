"""The ``mparticle-feed`` command (also ``python -m mparticle_feed``).

Exit status: 0 when every row was accepted; 1 when some rows were rejected (and none failed
or is pending; ``--allow-rejected`` makes that 0); 2 for usage, configuration or input errors
(argparse's code too); 3 when some rows failed or are pending. Credentials come only from the
``MPARTICLE_API_KEY`` and ``MPARTICLE_API_SECRET`` environment variables, never from a flag
that would land in shell history; a password in a ``--db`` URL is never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ._errors import (
    ConfigurationError,
    DataPlanError,
    DataPlanViolationError,
    MappingError,
    MParticleFeedError,
    PlanFileError,
    PlanRefusedError,
    StateError,
)
from ._mapping.files import load_mapping
from ._source.connect import open_query

__all__ = ["main"]

logger = logging.getLogger(__name__)

#: 0 every row accepted; 1 rows rejected; 2 usage, configuration or input error; 3 rows failed
#: or pending (a rerun may deliver them).
EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_UNDELIVERED = 0, 1, 2, 3

_DESCRIPTION = """\
Send rows from a SQL warehouse to mParticle's Events API.

  mparticle-feed demo                       run a whole sync against a local fake of mParticle
  mparticle-feed plan --db shop.sqlite ...  show the exact requests a sync would send
  mparticle-feed sync --db shop.sqlite ...  send them (only what changed, with --state)
  mparticle-feed send --plan plan.jsonl     send a reviewed plan file, byte for byte

--db takes sqlite:///path, duckdb:///path, postgresql://..., any SQLAlchemy URL, a SQLite
or DuckDB file, or MODULE:CALLABLE returning a DB-API connection.
Credentials are read from MPARTICLE_API_KEY and MPARTICLE_API_SECRET.
Exit status: 0 every row accepted; 1 some rows rejected (0 with --allow-rejected);
2 usage, configuration or input error; 3 some rows failed or are pending.
"""


class _UsageError(Exception):
    pass


def _say(text: str, stream: TextIO | None = None) -> None:
    target = stream if stream is not None else sys.stdout
    target.write(text + "\n")


def _add_delivery_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that send: where to, how wide, where rejects go."""
    parser.add_argument(
        "--out", type=Path, help="write every rejected or failed row here, as JSON Lines"
    )
    parser.add_argument("--pod", help="mParticle pod (us1, us2, eu1, au1); default: from the key")
    parser.add_argument("--base-url", help="the Events API base URL (for a proxy, or a local fake)")
    parser.add_argument("--workers", type=int, default=4, help="parallel requests (default 4)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=270.0,
        help="batches a second to pace to: your account's limit (default 270, mParticle's "
        "default); 0 turns pacing off",
    )
    _add_job_options(parser)
    parser.add_argument(
        "--summary-json",
        type=Path,
        metavar="FILE",
        help="write the report (counts, endpoints, requests, exit status) here as JSON",
    )


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """Options for running as a job step: what counts as success, what gets logged."""
    parser.add_argument(
        "--allow-rejected",
        action="store_true",
        help="exit 0 when the only problem is rejected rows (bad data a rerun cannot fix)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="outside a terminal, a progress line on stderr this often (default 30)",
    )


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        required=True,
        help="sqlite:///path, duckdb:///path, postgresql://user@host/db (server-side cursor), "
        "any SQLAlchemy URL, a SQLite or DuckDB file, or MODULE:CALLABLE returning a DB-API "
        "connection (for example mywarehouse:connect, importable from the working directory)",
    )
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", help="the SQL query whose rows are sent")
    query.add_argument("--query-file", type=Path, help="a file holding the SQL query")
    parser.add_argument(
        "--mapping", required=True, type=Path, help="the mapping file (.toml or .json)"
    )
    parser.add_argument(
        "--environment",
        choices=["development", "production"],
        help="override the mapping's environment (default: the mapping's, development)",
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="the incremental-state file (SQLite); with it only new or changed rows are sent",
    )
    parser.add_argument(
        "--name", help="the sync's name in the state file (default: the mapping file's name)"
    )
    parser.add_argument(
        "--on-mapping-change",
        choices=["fail", "resend", "keep"],
        default="fail",
        help="when the mapping changed since the last run: fail (default), resend every row, "
        "or keep the state and send only rows whose output changed",
    )
    parser.add_argument(
        "--historical-only",
        action="store_true",
        help="a backfill: every event goes to /v2/bulkevents/historical",
    )
    parser.add_argument(
        "--data-plan",
        type=Path,
        metavar="FILE",
        help="validate against this data plan (mParticle's JSON export) and tag batches with "
        "it; sets or replaces the mapping's data_plan",
    )
    parser.add_argument(
        "--data-plan-version",
        type=int,
        metavar="N",
        help="with --data-plan: pin this version (default: the one active in the environment)",
    )
    parser.add_argument(
        "--data-plan-policy",
        choices=["report", "block", "strict"],
        default="report",
        help="what a data-plan violation does: report (default; send and list it), block "
        "(leave out what mParticle would block; blocked rows are rejected) or strict (stop)",
    )
    parser.add_argument(
        "--group-window",
        type=int,
        default=10_000,
        help="rows within which a user's rows share batches when not consecutive "
        "(default 10000; 0: consecutive rows only)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, only the report")


def _add_send_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan", required=True, type=Path, help="the plan file written by 'plan --out'"
    )
    parser.add_argument(
        "--state",
        type=Path,
        help="the incremental-state file to record accepted rows in (the one the plan read)",
    )
    parser.add_argument(
        "--on-mapping-change",
        choices=["fail", "resend", "keep"],
        default="fail",
        help="when the plan's mapping differs from the state's last run: fail (default), "
        "resend or keep",
    )
    parser.add_argument(
        "--max-plan-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="refuse a plan older than this (default 3600: one hour)",
    )
    _add_delivery_options(parser)
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress, only the report")


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        default=default,
        help="what mparticle_feed logs to stderr (default WARNING)",
    )


def _parser() -> argparse.ArgumentParser:
    # --log-level is accepted before and after the command; the command's copy has no default,
    # so it never overwrites one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    _add_log_level(common, argparse.SUPPRESS)
    parser = argparse.ArgumentParser(
        prog="mparticle-feed",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_level(parser, "WARNING")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sync_parser = commands.add_parser(
        "sync",
        parents=[common],
        help="send the query's rows to mParticle",
        description="Map the query's rows and deliver them to mParticle. Credentials come from "
        "MPARTICLE_API_KEY / MPARTICLE_API_SECRET.",
    )
    _add_source_options(sync_parser)
    _add_delivery_options(sync_parser)

    plan_parser = commands.add_parser(
        "plan",
        parents=[common],
        help="show the exact requests a sync would send, without sending",
        description="Map the query's rows and print what a sync would send. Nothing is sent "
        "and the state file is only read.",
    )
    _add_source_options(plan_parser)
    plan_parser.add_argument(
        "--out", type=Path, help="write the plan (one request per line) as JSON Lines"
    )
    plan_parser.add_argument(
        "--allow-rejected",
        action="store_true",
        help="exit 0 even when some rows would be rejected",
    )

    send_parser = commands.add_parser(
        "send",
        parents=[common],
        help="send a reviewed plan file (from plan --out) byte for byte",
        description="Send the requests of a plan file written by 'plan --out', exactly as "
        "reviewed. A file that was edited, truncated or is malformed is refused. Credentials "
        "come from MPARTICLE_API_KEY / MPARTICLE_API_SECRET.",
    )
    _add_send_options(send_parser)

    demo_parser = commands.add_parser(
        "demo",
        parents=[common],
        help="build a small shop warehouse and sync it to a local fake of mParticle",
        description="Build a SQLite shop warehouse (users, orders, page views; a few bad rows; "
        "some events older than 28 days), start FakeEventsServer on 127.0.0.1, and run "
        "custom-event, commerce and user-attribute syncs through the same code as a real sync.",
    )
    demo_parser.add_argument(
        "--dir", type=Path, help="keep the warehouse and state here (default: a temporary folder)"
    )
    demo_parser.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    return parser


def _version() -> str:
    from ._delivery.client import _package_version

    return _package_version()


def _query(args: argparse.Namespace) -> str:
    if args.query is not None:
        return str(args.query)
    try:
        return Path(args.query_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"--query-file: {exc.strerror}: {args.query_file}") from None


def _test_now() -> Any:
    """For tests only: MPARTICLE_FEED_TEST_NOW (ISO 8601 with an offset, or epoch seconds)."""
    from datetime import datetime, timezone

    text = os.environ.get("MPARTICLE_FEED_TEST_NOW", "").strip()
    if not text:
        return None
    try:
        number = text.replace(".", "", 1).isdigit()
        moment = datetime.fromtimestamp(float(text), timezone.utc) if number else None
        moment = moment or datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _UsageError(f"MPARTICLE_FEED_TEST_NOW: {text!r} is not a time with a UTC offset")
    return moment


def _mapping(args: argparse.Namespace) -> Any:
    import attrs

    try:
        mapping = load_mapping(args.mapping)
    except (RecursionError, TypeError, AttributeError, KeyError, IndexError) as exc:
        # A hostile file (nested too deep, a list for a name): one line, exit 2.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _UsageError(f"--mapping: {args.mapping} is not a valid mapping ({reason})") from None
    changes: dict[str, Any] = {}
    if args.environment:
        changes["environment"] = args.environment
    if args.data_plan is not None:
        changes["data_plan"] = {"path": str(args.data_plan), "version": args.data_plan_version}
    elif args.data_plan_version is not None:
        raise _UsageError("--data-plan-version needs --data-plan")
    return attrs.evolve(mapping, **changes) if changes else mapping


class _ProgressDisplay:
    """Progress on stderr: a self-updating line on a terminal, else a line every ``interval`` s.

    Outside a terminal (a job's log) a ticker thread prints the latest figures at a steady
    interval, whether or not batches settled since, so a long quiet read still shows life.
    """

    def __init__(self, stream: TextIO, label: str, *, terminal: bool, interval: float) -> None:
        self.stream = stream
        self.label = label
        self.terminal = terminal
        self.interval = interval
        self.latest: Any = None
        self.started = time.monotonic()
        self.shown = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if not terminal:
            self._ticker = threading.Thread(
                target=self._tick, name="mparticle-feed-progress", daemon=True
            )
            self._ticker.start()

    def _line(self) -> str:
        info = self.latest
        if info is None:
            return f"{self.label}: started, {time.monotonic() - self.started:.0f} s"
        return (
            f"{self.label}: {info.rows_read} rows read, {info.batches_accepted} batches "
            f"accepted, {info.batches_other} not, {info.elapsed_seconds:.0f} s"
        )

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def __call__(self, info: Any) -> None:
        self.latest = info
        if self.terminal:
            self.stream.write("\r" + self._line())
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _progress(args: argparse.Namespace, label: str) -> _ProgressDisplay | None:
    if args.quiet:
        return None
    if args.progress_interval <= 0:
        raise _UsageError("--progress-interval must be a positive number of seconds")
    return _ProgressDisplay(
        sys.stderr, label, terminal=sys.stderr.isatty(), interval=args.progress_interval
    )


def _exit_status(report: Any, *, allow_rejected: bool) -> int:
    """3 when rows (or replayed outbox batches) failed or are pending, else 1 when rows
    were rejected, else 0."""
    if report.failed or report.pending or getattr(report, "replay_unsettled", 0):
        return EXIT_UNDELIVERED
    if report.rejected and not allow_rejected:
        return EXIT_ROWS
    return EXIT_OK


def _write_summary(args: argparse.Namespace, report: Any, status: int) -> None:
    if args.summary_json is None:
        return
    document = {
        "name": report.name,
        "kind": report.kind,
        **report.counts(),
        "violations": len(report.violations),
        "ok": report.ok,
        "exit_status": status,
        "by_endpoint": {endpoint: dict(counts) for endpoint, counts in report.by_endpoint.items()},
        "batches": dict(report.batches),
        "requests_sent": report.requests_sent,
        "retries": dict(report.retries),
        "rate_limit_wait_seconds": report.rate_limit_wait_seconds,
        "elapsed_seconds": report.elapsed_seconds,
        "stopped": report.stopped,
        "resumed": report.resumed,
        "mapping_changed": report.mapping_changed,
    }
    try:
        args.summary_json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"--summary-json: {exc.strerror}: {args.summary_json}") from None


def _finish(args: argparse.Namespace, report: Any) -> int:
    """Print the report, write the rejects and the summary; return the exit status."""
    _say(report.summary())
    if args.out is not None:
        _write_rejects(report, args.out)
    status = _exit_status(report, allow_rejected=args.allow_rejected)
    _write_summary(args, report, status)
    return status


def _credentials() -> tuple[str, str]:
    key = os.environ.get("MPARTICLE_API_KEY", "")
    secret = os.environ.get("MPARTICLE_API_SECRET", "")
    if not key or not secret:
        raise _UsageError(
            "set MPARTICLE_API_KEY and MPARTICLE_API_SECRET in the environment "
            "(credentials are never taken from the command line)"
        )
    return key, secret


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        logger.warning("signal %d: finishing the requests in flight, then stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        # Ctrl-C as SIGTERM: finish what is in flight, report, keep pending rows pending.
        signal.signal(signal.SIGINT, handler)


def _run_sync(args: argparse.Namespace) -> int:
    from ._delivery.client import EventsClient
    from ._sync.run import sync

    key, secret = _credentials()
    mapping = _mapping(args)
    query = _query(args)
    stop = threading.Event()
    _stop_on_signals(stop)
    with open_query(args.db, query) as source:
        progress = _progress(args, "sync")
        try:
            with EventsClient(
                key,
                secret,
                pod=args.pod,
                base_url=args.base_url,
                max_workers=args.workers,
                rate_limit=args.rate_limit or None,
            ) as client:
                report = sync(
                    source,
                    mapping,
                    client,
                    state=args.state,
                    name=args.name or args.mapping.stem,
                    on_mapping_change=args.on_mapping_change,
                    stop=stop,
                    progress=progress,
                    historical_only=args.historical_only,
                    data_plan_policy=args.data_plan_policy,
                    now=_test_now(),
                    group_window=args.group_window,
                )
        finally:
            if progress is not None:
                progress.done()
    return _finish(args, report)


def _run_plan(args: argparse.Namespace) -> int:
    from ._sync.run import plan

    mapping = _mapping(args)
    query = _query(args)
    with open_query(args.db, query) as source:
        # A plan never creates the state file; no state file means "send every row".
        reviewed = plan(
            source,
            mapping,
            state=args.state,
            name=args.name or args.mapping.stem,
            on_mapping_change=args.on_mapping_change,
            historical_only=args.historical_only,
            data_plan_policy=args.data_plan_policy,
            now=_test_now(),
            group_window=args.group_window,
        )
    _say(reviewed.summary())
    if args.out is not None:
        count = reviewed.write_jsonl(args.out)
        _say(f"wrote {count} line(s) to {args.out}")
    return EXIT_OK if reviewed.rejected == 0 or args.allow_rejected else EXIT_ROWS


def _run_send(args: argparse.Namespace) -> int:
    from ._delivery.client import EventsClient
    from ._sync.planfile import Plan

    key, secret = _credentials()
    try:
        reviewed = Plan.read_jsonl(args.plan)
    except OSError as exc:
        raise _UsageError(f"--plan: {exc.strerror}: {args.plan}") from None
    except RecursionError:
        raise _UsageError(f"--plan: {args.plan} is not a plan file (nested too deeply)") from None
    stop = threading.Event()
    _stop_on_signals(stop)
    progress = _progress(args, "send")
    try:
        with EventsClient(
            key,
            secret,
            pod=args.pod,
            base_url=args.base_url,
            max_workers=args.workers,
            rate_limit=args.rate_limit or None,
        ) as client:
            report = reviewed.send(
                client,
                state=args.state,
                on_mapping_change=args.on_mapping_change,
                stop=stop,
                progress=progress,
                now=_test_now(),
                max_plan_age=timedelta(seconds=args.max_plan_age),
            )
    finally:
        if progress is not None:
            progress.done()
    return _finish(args, report)


def _write_rejects(report: Any, out: Path) -> None:
    count = report.write_rejects(out)
    violations = len(report.violations)
    if violations:
        _say(
            f"wrote {count - violations} rejected or failed row(s) and {violations} "
            f"data-plan violation(s) to {out}"
        )
    else:
        _say(f"wrote {count} rejected or failed row(s) to {out}")


def _run_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    reports = run_demo(args.dir, out=sys.stdout, quiet=args.quiet)
    # The demo's rejects are deliberate; it fails only if a row failed or went missing.
    return EXIT_OK if all(r.failed == 0 and r.pending == 0 for r in reports) else EXIT_UNDELIVERED


_CONFIGURATION_ERRORS = (
    ConfigurationError, MappingError, StateError, PlanFileError, PlanRefusedError, DataPlanError
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="mparticle-feed: %(levelname)s %(message)s")
    # Only the package's own logger follows --log-level: drivers' debug logs stay out. The
    # level is put back afterwards, for callers that run main() in their own process.
    package_logger = logging.getLogger("mparticle_feed")
    level_before = package_logger.level
    package_logger.setLevel(args.log_level)
    runners = {"sync": _run_sync, "plan": _run_plan, "send": _run_send, "demo": _run_demo}
    try:
        return runners[args.command](args)
    except _UsageError as exc:
        _say(f"mparticle-feed: {exc}", sys.stderr)
        return EXIT_USAGE
    except _CONFIGURATION_ERRORS as exc:
        _say(f"mparticle-feed: {exc}", sys.stderr)
        return EXIT_USAGE
    except (sqlite3.Error, MParticleFeedError) as exc:
        _say(f"mparticle-feed: {type(exc).__name__}: {exc}", sys.stderr)
        if isinstance(exc, DataPlanViolationError):
            return EXIT_ROWS  # the data broke the plan under --data-plan-policy strict
        # Any other error of the package stopped the run: its rows were not all delivered.
        return EXIT_UNDELIVERED if isinstance(exc, MParticleFeedError) else EXIT_USAGE
    finally:
        package_logger.setLevel(level_before)
