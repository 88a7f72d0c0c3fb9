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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from . import _cli_options as _options
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

if TYPE_CHECKING:
    from ._delivery.client import EventsClient

__all__ = ["main"]

logger = logging.getLogger(__name__)

#: 0 every row accepted; 1 rows rejected; 2 usage, configuration or input error; 3 rows failed
#: or pending (a rerun may deliver them).
EXIT_OK, EXIT_ROWS, EXIT_USAGE, EXIT_UNDELIVERED = 0, 1, 2, 3


class _UsageError(Exception):
    pass


def _say(text: str, stream: TextIO | None = None) -> None:
    target = stream if stream is not None else sys.stdout
    target.write(text + "\n")


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


@contextmanager
def _progress(args: argparse.Namespace, label: str) -> Iterator[_ProgressDisplay | None]:
    """The progress display the options ask for (None with ``--quiet``), stopped on leaving."""
    if args.quiet:
        yield None
        return
    if args.progress_interval <= 0:
        raise _UsageError("--progress-interval must be a positive number of seconds")
    display = _ProgressDisplay(
        sys.stderr, label, terminal=sys.stderr.isatty(), interval=args.progress_interval
    )
    try:
        yield display
    finally:
        display.done()


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


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and the first Ctrl-C set ``stop`` (finish what is in flight, report, keep
    pending rows pending); a second Ctrl-C interrupts at once. The handlers before are put
    back on exit, for callers that run :func:`main` in their own process."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and stop.is_set():
            raise KeyboardInterrupt
        logger.warning(
            "signal %d: finishing the requests in flight, then stopping "
            "(Ctrl-C again to interrupt now)",
            signum,
        )
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    before = {number: signal.signal(number, handler) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, previous in before.items():
            signal.signal(number, previous)


def _client(args: argparse.Namespace, credentials: tuple[str, str]) -> EventsClient:
    """The client ``sync`` and ``send`` deliver through."""
    from ._delivery.client import EventsClient

    key, secret = credentials
    return EventsClient(
        key,
        secret,
        pod=args.pod,
        base_url=args.base_url,
        max_workers=args.workers,
        rate_limit=args.rate_limit or None,
    )


def _read_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments ``plan`` and ``sync`` both take from the command line."""
    return {
        "state": args.state,
        "name": args.name or args.mapping.stem,
        "on_mapping_change": args.on_mapping_change,
        "historical_only": args.historical_only,
        "data_plan_policy": args.data_plan_policy,
        "now": _test_now(),
        "group_window": args.group_window,
    }


def _run_sync(args: argparse.Namespace) -> int:
    from ._sync.run import sync

    credentials = _credentials()
    mapping = _mapping(args)
    query = _query(args)
    stop = threading.Event()
    with (
        _stop_on_signals(stop),
        open_query(args.db, query, arrow=not args.no_arrow) as source,
        _progress(args, "sync") as progress,
        _client(args, credentials) as client,
    ):
        report = sync(source, mapping, client, stop=stop, progress=progress, **_read_options(args))
    return _finish(args, report)


def _run_plan(args: argparse.Namespace) -> int:
    from ._sync.run import plan

    mapping = _mapping(args)
    query = _query(args)
    with open_query(args.db, query, arrow=not args.no_arrow) as source:
        # A plan never creates the state file; no state file means "send every row".
        reviewed = plan(source, mapping, **_read_options(args))
    _say(reviewed.summary())
    if args.out is not None:
        count = reviewed.write_jsonl(args.out)
        _say(f"wrote {count} line(s) to {args.out}")
    return EXIT_OK if reviewed.rejected == 0 or args.allow_rejected else EXIT_ROWS


def _run_send(args: argparse.Namespace) -> int:
    from ._sync.planfile import Plan

    credentials = _credentials()
    try:
        reviewed = Plan.read_jsonl(args.plan)
    except OSError as exc:
        raise _UsageError(f"--plan: {exc.strerror}: {args.plan}") from None
    except RecursionError:
        raise _UsageError(f"--plan: {args.plan} is not a plan file (nested too deeply)") from None
    stop = threading.Event()
    with (
        _stop_on_signals(stop),
        _progress(args, "send") as progress,
        _client(args, credentials) as client,
    ):
        report = reviewed.send(
            client,
            state=args.state,
            on_mapping_change=args.on_mapping_change,
            stop=stop,
            progress=progress,
            now=_test_now(),
            max_plan_age=timedelta(seconds=args.max_plan_age),
        )
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


def _run_convert(args: argparse.Namespace) -> int:
    from ._sync.convert import sqlite_to_table, table_to_sqlite

    source: Path = args.source
    if not source.exists():
        raise _UsageError(f"no state at {source}")
    convert = table_to_sqlite if source.is_dir() else sqlite_to_table
    copied = convert(source, args.target, names=args.name)
    for name, count in sorted(copied.items()):
        _say(f"sync {name!r}: {count} entries copied to {args.target}", sys.stdout)
    return EXIT_OK


_CONFIGURATION_ERRORS = (
    ConfigurationError, MappingError, StateError, PlanFileError, PlanRefusedError, DataPlanError
)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _options.parser()
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
    runners = {
        "sync": _run_sync,
        "plan": _run_plan,
        "send": _run_send,
        "demo": _run_demo,
        "convert-state": _run_convert,
    }
    try:
        return runners[args.command](args)
    except (_UsageError, *_CONFIGURATION_ERRORS) as exc:
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
