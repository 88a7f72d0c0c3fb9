"""The ``mparticle-feed`` command's options: every command, every flag and its help.

:mod:`._cli` parses with :func:`parser` and runs the command; an option several commands
take (``--state``, ``--quiet``, ...) is defined once in :data:`_SHARED`, each command wording
its own help.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["parser"]

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

#: Options more than one command takes: their flags and everything but the help.
_SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "out": (("--out",), {"type": Path}),
    "state": (("--state",), {"type": Path}),
    "on_mapping_change": (
        ("--on-mapping-change",),
        {"choices": ["fail", "resend", "keep"], "default": "fail"},
    ),
    "allow_rejected": (("--allow-rejected",), {"action": "store_true"}),
    "quiet": (("--quiet", "-q"), {"action": "store_true"}),
}


def _add(parser: argparse.ArgumentParser, option: str, text: str) -> None:
    flags, settings = _SHARED[option]
    parser.add_argument(*flags, help=text, **settings)


def _add_delivery_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that send: where to, how wide, where rejects go."""
    _add(parser, "out", "write every rejected or failed row here, as JSON Lines")
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
    _add(
        parser,
        "allow_rejected",
        "exit 0 when the only problem is rejected rows (bad data a rerun cannot fix)",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="outside a terminal, a progress line on stderr this often (default 30)",
    )


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that read a query: where from, how mapped, what is new."""
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
        "--no-arrow",
        action="store_true",
        help="read a DuckDB query with its cursor, row by row, even where it could be read as "
        "Arrow (same requests either way; a sync peaks lower, Arrow takes less CPU on large results)",
    )
    parser.add_argument(
        "--mapping", required=True, type=Path, help="the mapping file (.toml or .json)"
    )
    parser.add_argument(
        "--environment",
        choices=["development", "production"],
        help="override the mapping's environment (default: the mapping's, development)",
    )
    _add(
        parser,
        "state",
        "the incremental-state file (SQLite); with it only new or changed rows are sent",
    )
    parser.add_argument(
        "--name", help="the sync's name in the state file (default: the mapping file's name)"
    )
    _add(
        parser,
        "on_mapping_change",
        "when the mapping changed since the last run: fail (default), resend every row, "
        "or keep the state and send only rows whose output changed",
    )
    parser.add_argument(
        "--historical-only",
        action="store_true",
        help="a backfill: every event goes to /v2/bulkevents/historical",
    )
    _add_data_plan_options(parser)
    parser.add_argument(
        "--group-window",
        type=int,
        default=10_000,
        help="rows held in all users' open batches, so that a user's rows share batches "
        "when not consecutive (default 10000; 0: consecutive rows only)",
    )
    _add(parser, "quiet", "no progress, only the report")


def _add_data_plan_options(parser: argparse.ArgumentParser) -> None:
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


def _add_send_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plan", required=True, type=Path, help="the plan file written by 'plan --out'"
    )
    _add(
        parser,
        "state",
        "the incremental-state file to record accepted rows in (the one the plan read)",
    )
    _add(
        parser,
        "on_mapping_change",
        "when the plan's mapping differs from the state's last run: fail (default), resend or keep",
    )
    parser.add_argument(
        "--max-plan-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="refuse a plan older than this (default 3600: one hour)",
    )
    _add_delivery_options(parser)
    _add(parser, "quiet", "no progress, only the report")


def _add_sync_options(parser: argparse.ArgumentParser) -> None:
    _add_source_options(parser)
    _add_delivery_options(parser)


def _add_plan_options(parser: argparse.ArgumentParser) -> None:
    _add_source_options(parser)
    _add(parser, "out", "write the plan (one request per line) as JSON Lines")
    _add(parser, "allow_rejected", "exit 0 even when some rows would be rejected")


def _add_demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", type=Path, help="keep the warehouse and state here (default: a temporary folder)"
    )
    _add(parser, "quiet", "no progress display")


def _add_convert_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="a SQLite state file or a table-state folder")
    parser.add_argument("target", type=Path, help="the folder or file to copy to")
    parser.add_argument(
        "--name", action="append", help="copy only this sync (repeatable; default: every sync)"
    )


#: Each command's line in the command list and the description its ``--help`` opens with.
_COMMANDS = {
    "sync": (
        "send the query's rows to mParticle",
        "Map the query's rows and deliver them to mParticle. Credentials come from "
        "MPARTICLE_API_KEY / MPARTICLE_API_SECRET.",
    ),
    "plan": (
        "show the exact requests a sync would send, without sending",
        "Map the query's rows and print what a sync would send. Nothing is sent "
        "and the state file is only read.",
    ),
    "send": (
        "send a reviewed plan file (from plan --out) byte for byte",
        "Send the requests of a plan file written by 'plan --out', exactly as "
        "reviewed. A file that was edited, truncated or is malformed is refused. Credentials "
        "come from MPARTICLE_API_KEY / MPARTICLE_API_SECRET.",
    ),
    "demo": (
        "build a small shop warehouse and sync it to a local fake of mParticle",
        "Build a SQLite shop warehouse (users, orders, page views; a few bad rows; "
        "some events older than 28 days), start FakeEventsServer on 127.0.0.1, and run "
        "custom-event, commerce and user-attribute syncs through the same code as a real sync.",
    ),
    "convert-state": (
        "copy incremental state between a SQLite file and a table-state folder",
        "Copy syncs' state from a SQLite state file to a table-state folder (for Spark and "
        "Dask), or from a folder to a SQLite file: the direction follows SOURCE. A sync with "
        "unsettled batches, or one the target already holds, is refused.",
    ),
}
_COMMAND_OPTIONS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "sync": _add_sync_options,
    "plan": _add_plan_options,
    "send": _add_send_options,
    "demo": _add_demo_options,
    "convert-state": _add_convert_options,
}


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        default=default,
        help="what mparticle_feed logs to stderr (default WARNING)",
    )


def parser() -> argparse.ArgumentParser:
    """The command's parser: ``sync``, ``plan``, ``send`` and ``demo``."""
    # --log-level is accepted before and after the command; the command's copy has no default,
    # so it never overwrites one given before the command.
    common = argparse.ArgumentParser(add_help=False)
    _add_log_level(common, argparse.SUPPRESS)
    top = argparse.ArgumentParser(
        prog="mparticle-feed",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_log_level(top, "WARNING")
    top.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, description) in _COMMANDS.items():
        command = commands.add_parser(name, parents=[common], help=summary, description=description)
        _COMMAND_OPTIONS[name](command)
    return top


def _version() -> str:
    from ._delivery.connection import _package_version

    return _package_version()
