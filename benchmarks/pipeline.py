"""(e): the benchmark workload as SQLite rows, through the whole pipeline to request bytes.

One row per event, as a warehouse query would return them: the user's identity and
attribute columns repeated on every row, then the event's own columns; a purchase row
carries its products as a JSON column. Custom events and purchases are two tables (a
mapping has one kind), read by two queries in user order.

- (e) ``rows_from_cursor`` → ``map_rows`` → ``route`` → ``pack`` → request bodies;
- (e0) the floor: the same rows from the same cursors, turned into (b)'s hand-written dicts
  and ``json.dumps``.

(e) writes a ``source_request_id`` into every batch and, having one mapping per kind,
sends a user's custom events and purchases in two batches; :func:`per_user_hash` proves
it still sends every user the same JSON values as (b).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from workload import (
    BASE_TIMESTAMP_MS,
    BATCHES_PER_REQUEST,
    BatchRow,
    _canonical,
    make_batch_row,
)

import mparticle_feed as mpf
import mparticle_feed.pipeline as mpf_pipeline

USER_COLUMNS = ("customer_id", "email", "plan", "city", "age", "newsletter", "lifetime_value")
CUSTOM_ATTRIBUTES = ("screen", "referrer", "position", "experiment", "duration_ms")
CUSTOM_COLUMNS = ("event_id", *USER_COLUMNS, "event_name", "timestamp_ms", *CUSTOM_ATTRIBUTES)
PURCHASE_COLUMNS = (
    "event_id",
    *USER_COLUMNS,
    "timestamp_ms",
    "transaction_id",
    "total",
    "products",
)
USER_ATTRIBUTES = ("plan", "city", "age", "newsletter", "lifetime_value")
#: SQLite has no boolean type; this declared type reads 0/1 back as a bool, as a warehouse would.
BOOL_TYPE = "BENCH_BOOL"
sqlite3.register_converter(BOOL_TYPE, lambda raw: raw == b"1")

CUSTOM_QUERY = f"SELECT {', '.join(CUSTOM_COLUMNS)} FROM custom_events ORDER BY rowid"
PURCHASE_QUERY = f"SELECT {', '.join(PURCHASE_COLUMNS)} FROM purchases ORDER BY rowid"
FETCH = 1000

_IDENTITIES = {"customer_id": "customer_id", "email": "email"}
_USER_ATTRIBUTES = mpf.Attributes(columns={name: name for name in USER_ATTRIBUTES})

CUSTOM_MAPPING = mpf.CustomEventMapping(
    primary_key="event_id",
    user_identities=_IDENTITIES,
    user_attributes=_USER_ATTRIBUTES,
    event_name="event_name",
    timestamp_unixtime_ms="timestamp_ms",
    custom_attributes=mpf.Attributes(columns={name: name for name in CUSTOM_ATTRIBUTES}),
)
PURCHASE_MAPPING = mpf.CommerceEventMapping(
    primary_key="event_id",
    user_identities=_IDENTITIES,
    user_attributes=_USER_ATTRIBUTES,
    timestamp_unixtime_ms="timestamp_ms",
    product_action={
        "action": mpf.Constant("purchase"),
        "transaction_id": "transaction_id",
        "total_amount": "total",
        "products": "products",
    },
)


def _column_type(name: str) -> str:
    return BOOL_TYPE if name == "newsletter" else ""


def _create(db: sqlite3.Connection) -> None:
    for table, columns in (("custom_events", CUSTOM_COLUMNS), ("purchases", PURCHASE_COLUMNS)):
        declared = ", ".join(f"{name} {_column_type(name)}".strip() for name in columns)
        db.execute(f"CREATE TABLE {table} ({declared})")


def _user_values(row: BatchRow) -> tuple[Any, ...]:
    attributes = row.user_attributes
    return (row.customer_id, row.email, *(attributes[name] for name in USER_ATTRIBUTES))


def custom_rows(batches: Iterable[BatchRow]) -> Iterator[tuple[Any, ...]]:
    for row in batches:
        user = _user_values(row)
        for number, event in enumerate(row.custom_events):
            yield (
                f"{row.customer_id}-c{number}",
                *user,
                event.name,
                event.timestamp_ms,
                *(event.attributes[name] for name in CUSTOM_ATTRIBUTES),
            )


def purchase_rows(batches: Iterable[BatchRow]) -> Iterator[tuple[Any, ...]]:
    for row in batches:
        user = _user_values(row)
        for number, purchase in enumerate(row.purchases):
            products = [
                {"id": p.id, "name": p.name, "price": p.price, "quantity": p.quantity}
                for p in purchase.products
            ]
            yield (
                f"{row.customer_id}-p{number}",
                *user,
                purchase.timestamp_ms,
                purchase.transaction_id,
                purchase.total,
                json.dumps(products),
            )


def connect(path: str | Path = ":memory:") -> sqlite3.Connection:
    return sqlite3.connect(path, detect_types=sqlite3.PARSE_DECLTYPES)


def build_database(batches: int, path: str | Path = ":memory:") -> sqlite3.Connection:
    """The first ``batches`` batches of the workload as rows; streamed in, never all held."""
    db = connect(path)
    _create(db)
    for table, columns, rows in (
        ("custom_events", CUSTOM_COLUMNS, custom_rows),
        ("purchases", PURCHASE_COLUMNS, purchase_rows),
    ):
        generated = (make_batch_row(index) for index in range(batches))
        db.executemany(
            f"INSERT INTO {table} VALUES ({', '.join('?' * len(columns))})", rows(generated)
        )
    db.commit()
    return db


def row_count(db: sqlite3.Connection) -> int:
    return sum(
        db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("custom_events", "purchases")
    )


def routing_now(batches: int) -> datetime:
    """An hour after the workload's last event: with the standard workload, all of it is live."""
    end_ms = BASE_TIMESTAMP_MS + batches * 60_000 + 3_600_000
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=end_ms)


# --- (e) mparticle_feed ------------------------------------------------------------------


def feed_requests(db: sqlite3.Connection, now: datetime) -> Iterator[mpf_pipeline.Request]:
    """The pipeline, streaming: every request it would send, in order."""
    runs = [
        mpf.map_rows(
            mpf.rows_from_cursor(db.execute(CUSTOM_QUERY), chunk_size=FETCH), CUSTOM_MAPPING
        ),
        mpf.map_rows(
            mpf.rows_from_cursor(db.execute(PURCHASE_QUERY), chunk_size=FETCH), PURCHASE_MAPPING
        ),
    ]
    for item in mpf_pipeline.pack(mpf_pipeline.route(itertools.chain(*runs), now=now)):
        if not isinstance(item, mpf_pipeline.Request):
            raise SystemExit(f"the pipeline turned a row away: {item}")
        yield item
    for run in runs:
        if run.rows_rejected:
            raise SystemExit(f"the pipeline rejected rows: {run.rejected[:3]}")


def variant_e_pipeline(db: sqlite3.Connection, now: datetime) -> list[bytes]:
    return [request.body for request in feed_requests(db, now)]


# --- (e0) the hand-written floor -----------------------------------------------------------


def _user_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "environment": "development",
        "user_identities": {"customer_id": row[1], "email": row[2]},
        "user_attributes": {
            "plan": row[3],
            "city": row[4],
            "age": row[5],
            "newsletter": row[6],
            "lifetime_value": row[7],
        },
        "events": [],
    }


def _custom_event(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "event_type": "custom_event",
        "data": {
            "event_name": row[8],
            "custom_event_type": "other",
            "timestamp_unixtime_ms": row[9],
            "custom_attributes": {
                "screen": row[10],
                "referrer": row[11],
                "position": row[12],
                "experiment": row[13],
                "duration_ms": row[14],
            },
        },
    }


def _purchase_event(row: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "event_type": "commerce_event",
        "data": {
            "timestamp_unixtime_ms": row[8],
            "product_action": {
                "action": "purchase",
                "transaction_id": row[9],
                "total_amount": row[10],
                "products": json.loads(row[11]),
            },
        },
    }


def _dict_batches(cursor: sqlite3.Cursor, event: Any) -> Iterator[dict[str, Any]]:
    """One batch per run of consecutive rows of a user (at most 100 events), like map_rows."""
    batch: dict[str, Any] | None = None
    user: tuple[Any, Any] | None = None
    while chunk := cursor.fetchmany(FETCH):
        for row in chunk:
            if batch is None or (row[1], row[2]) != user or len(batch["events"]) >= 100:
                if batch is not None:
                    yield batch
                batch, user = _user_dict(row), (row[1], row[2])
            batch["events"].append(event(row))
    if batch is not None:
        yield batch


def variant_e0_dicts_json(db: sqlite3.Connection, now: datetime) -> list[bytes]:
    batches = itertools.chain(
        _dict_batches(db.execute(CUSTOM_QUERY), _custom_event),
        _dict_batches(db.execute(PURCHASE_QUERY), _purchase_event),
    )
    bodies = []
    while chunk := list(itertools.islice(batches, BATCHES_PER_REQUEST)):
        bodies.append(json.dumps(chunk).encode("utf-8"))
    return bodies


# --- same JSON values ------------------------------------------------------------------------


def per_user_hash(bodies: Iterable[bytes], *, official: bool = False) -> str:
    """SHA-256 of what each user is sent: a user's batches merged in order, ids left out.

    Batches are merged by their ``user_identities`` (events appended, user attributes
    combined); ``source_request_id`` is dropped, since only (e) writes one. With
    ``official=True`` the official SDK's ``customerid`` key reads as ``customer_id``.
    """
    users: dict[str, dict[str, Any]] = {}
    for body in bodies:
        for batch in json.loads(body):
            batch.pop("source_request_id", None)
            identities = batch.get("user_identities") or {}
            if official and "customerid" in identities:
                identities["customer_id"] = identities.pop("customerid")
            key = json.dumps(identities, sort_keys=True)
            merged = users.setdefault(key, {**batch, "events": [], "user_attributes": {}})
            merged["events"].extend(batch.get("events") or [])
            merged["user_attributes"].update(batch.get("user_attributes") or {})
    # Users in key order: concurrent uploads may deliver different users' requests in any order.
    merged_users = [users[key] for key in sorted(users)]
    text = json.dumps(_canonical(merged_users), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


#: Label, description, function of (database, now).
PIPELINE_VARIANTS = (
    ("e0", "same rows from the cursor → (b)'s dicts + json.dumps", variant_e0_dicts_json),
    ("e", "mparticle_feed: rows_from_cursor → map_rows → route → pack", variant_e_pipeline),
)
