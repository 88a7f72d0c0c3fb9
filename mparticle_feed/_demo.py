"""The demo: a small SQLite shop warehouse, synced to a loopback fake of mParticle.

:func:`build_warehouse` writes three tables a shop would have — ``users`` (profile
attributes), ``orders`` (products as a JSON column) and ``page_views`` — with a few
rows that are wrong on purpose (a broken JSON column, a missing timestamp, a user with
no identity, ...) and a share of events older than 28 days, which go to the historical
endpoint. The data is generated from a seed, so every demo run sees the same rows.

:func:`run_demo` serves those tables through :class:`~mparticle_feed.testing.FakeEventsServer`
with the three mapping files shipped in ``mparticle_feed/demo/``, using :func:`sync` — the
same code path a real sync against mParticle takes.

The demo belongs to the CLI (``mparticle-feed demo``). It imports the public testing kit on
purpose: :class:`FakeEventsServer` needs nothing beyond the package's own dependencies
(hypothesis is only needed by ``mparticle_feed.testing.strategies``), and the demo uses it
as any user's test would.
"""

from __future__ import annotations

import json
import random
import sqlite3
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from ._sync.report import SyncReport

__all__ = ["DEMO_QUERIES", "DEMO_SYNCS", "build_warehouse", "demo_mapping_path", "run_demo"]

_FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Radia", "Tim", "Frances", "Donald"]
_LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Perlman", "Lee"]
_CITIES = ["Berlin", "Lisbon", "Austin", "Osaka", "Nairobi", "Lyon", "Toronto"]
_PLANS = ["free", "plus", "pro"]
_PAGES = ["/", "/shoes", "/shoes/runner-2", "/cart", "/checkout", "/help", "/blog/spring"]
_PRODUCTS = [
    ("SKU-RUN-2", "Runner 2", "shoes", 89.90),
    ("SKU-TRL-1", "Trail One", "shoes", 119.00),
    ("SKU-SCK-3", "Wool socks (3 pairs)", "socks", 19.50),
    ("SKU-CAP-1", "Cap", "accessories", 24.00),
    ("SKU-BTL-5", "Bottle 0.5 l", "accessories", 12.90),
]

#: The query each demo sync runs against the warehouse.
DEMO_QUERIES: dict[str, str] = {
    "users": "SELECT * FROM users ORDER BY user_id",
    "orders": "SELECT * FROM orders ORDER BY user_id, ordered_at",
    "page_views": "SELECT * FROM page_views ORDER BY user_id, viewed_at",
}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


_SCHEMA = """
CREATE TABLE users (
    user_id TEXT PRIMARY KEY, email TEXT, first_name TEXT, last_name TEXT,
    city TEXT, plan TEXT, lifetime_value REAL, newsletter INTEGER, signed_up_at TEXT
);
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY, user_id TEXT, email TEXT, ordered_at TEXT,
    currency TEXT, revenue REAL, products TEXT
);
CREATE TABLE page_views (
    view_id TEXT PRIMARY KEY, user_id TEXT, email TEXT, viewed_at TEXT,
    page TEXT, referrer TEXT
);
"""


def build_warehouse(
    path: str | Path,
    *,
    now: datetime | None = None,
    users: int = 40,
    orders: int = 120,
    page_views: int = 240,
    seed: int = 7,
) -> Path:
    """Create (or replace) the demo shop warehouse at ``path``; return the path.

    About a third of the orders and page views are older than 28 days (historical).
    Bad rows, each meant to be rejected with a clear reason: an order whose products
    column is not JSON, an order with a negative quantity, a page view without a
    timestamp, a page view with an unreadable timestamp, a user without any identity.
    """
    moment = now or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        msg = "now must be timezone-aware"
        raise ConfigurationError(msg)
    rng = random.Random(seed)  # noqa: S311 - repeatable demo data, not secrets
    target = Path(path)
    if target.exists():
        target.unlink()
    conn = sqlite3.connect(target)
    try:
        conn.executescript(_SCHEMA)
        # One generator, drawn from in this order, so a seed always gives the same rows.
        people, user_rows = _user_rows(rng, moment, users)
        conn.executemany("INSERT INTO users VALUES (?,?,?,?,?,?,?,?,?)", user_rows)
        order_rows = _order_rows(rng, moment, people, orders)
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?,?,?)", order_rows)
        view_rows = _view_rows(rng, moment, people, page_views)
        conn.executemany("INSERT INTO page_views VALUES (?,?,?,?,?,?)", view_rows)
        conn.commit()
    finally:
        conn.close()
    return target


def _user_rows(
    rng: random.Random, moment: datetime, users: int
) -> tuple[list[tuple[str, str]], list[tuple[Any, ...]]]:
    """(user id and email of each good user, the users table's rows)."""
    people: list[tuple[str, str]] = []
    user_rows: list[tuple[Any, ...]] = []
    for number in range(1, users + 1):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        user_id = f"u{number:04d}"
        email = f"{first}.{last}.{number}@example.com".lower()
        people.append((user_id, email))
        user_rows.append(
            (
                user_id,
                email,
                first,
                last,
                rng.choice(_CITIES),
                rng.choice(_PLANS),
                round(rng.uniform(0, 900), 2),
                rng.randint(0, 1),
                _iso(moment - timedelta(days=rng.randint(30, 700))),
            )
        )
    # Bad: a user row with no identity at all (no user_id to key on, no email).
    user_rows.append((None, None, "Nobody", "Known", "Nowhere", "free", 0.0, 0, None))
    return people, user_rows


def _order_rows(
    rng: random.Random, moment: datetime, people: list[tuple[str, str]], orders: int
) -> list[tuple[Any, ...]]:
    order_rows: list[tuple[Any, ...]] = []
    for number in range(1, orders + 1):
        user_id, email = rng.choice(people)
        historical = number % 3 == 0
        age = (
            timedelta(days=rng.randint(35, 120))
            if historical
            else timedelta(hours=rng.randint(1, 24 * 20))
        )
        lines: list[dict[str, Any]] = []
        for product in rng.sample(_PRODUCTS, rng.randint(1, 3)):
            sku, name, category, price = product
            lines.append(
                {
                    "id": sku,
                    "name": name,
                    "category": category,
                    "price": price,
                    "quantity": rng.randint(1, 3),
                }
            )
        revenue = round(sum(line["price"] * line["quantity"] for line in lines), 2)
        order_rows.append(
            (
                f"o{number:05d}",
                user_id,
                email,
                _iso(moment - age),
                "EUR",
                revenue,
                json.dumps(lines),
            )
        )
    # Bad: the products column is not JSON.
    order_rows.append(
        (
            "o90001",
            people[0][0],
            people[0][1],
            _iso(moment - timedelta(hours=5)),
            "EUR",
            10.0,
            "[{id: SKU-RUN-2, price: 89.9",
        )
    )
    # Bad: a negative quantity.
    order_rows.append(
        (
            "o90002",
            people[1][0],
            people[1][1],
            _iso(moment - timedelta(hours=6)),
            "EUR",
            -89.9,
            json.dumps(
                [{"id": "SKU-RUN-2", "name": "Runner 2", "price": 89.9, "quantity": "lots"}]
            ),
        )
    )
    return order_rows


def _view_rows(
    rng: random.Random, moment: datetime, people: list[tuple[str, str]], page_views: int
) -> list[tuple[Any, ...]]:
    view_rows: list[tuple[Any, ...]] = []
    for number in range(1, page_views + 1):
        user_id, email = rng.choice(people)
        historical = number % 3 == 0
        age = (
            timedelta(days=rng.randint(29, 90))
            if historical
            else timedelta(minutes=rng.randint(5, 60 * 24 * 25))
        )
        view_rows.append(
            (
                f"v{number:06d}",
                user_id,
                email,
                _iso(moment - age),
                rng.choice(_PAGES),
                rng.choice(["google", "newsletter", "direct", None]),
            )
        )
    # Bad: no timestamp at all, and a timestamp nobody can read.
    view_rows.append(("v900001", people[2][0], people[2][1], None, "/", "direct"))
    view_rows.append(("v900002", people[3][0], people[3][1], "last Tuesday-ish", "/", None))
    return view_rows


#: The demo's syncs, in the order they run: (sync name, mapping file, table).
DEMO_SYNCS: tuple[tuple[str, str, str], ...] = (
    ("users", "users.toml", "users"),
    ("orders", "orders.toml", "orders"),
    ("page_views", "page_views.toml", "page_views"),
)


def demo_mapping_path(filename: str) -> Path:
    """The path of one of the demo mapping files shipped with the package."""
    return Path(str(resources.files("mparticle_feed") / "demo" / filename))


def run_demo(
    directory: str | Path | None = None,
    *,
    out: TextIO | None = None,
    quiet: bool = False,
    now: datetime | None = None,
) -> list[SyncReport]:
    """Build the warehouse, sync it to a loopback FakeEventsServer twice, print the reports.

    The second pass shows incremental state at work: nothing changed, so nothing is sent.
    Returns the first pass's reports (one per sync).
    """
    from ._delivery.client import EventsClient
    from ._mapping.files import load_mapping
    from ._sync.run import sync
    from ._sync.state import StateStore
    from .testing import FakeEventsServer

    stream = out if out is not None else sys.stdout
    moment = now or datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory(prefix="mparticle-feed-demo-") as scratch:
        folder = Path(directory) if directory is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        warehouse = build_warehouse(folder / "shop.sqlite", now=moment)
        state_path = folder / "state.sqlite"
        if state_path.exists():
            state_path.unlink()
        stream.write(f"warehouse: {warehouse}\n")
        reports: list[SyncReport] = []
        with (
            FakeEventsServer(
                api_key="demo-key",
                api_secret="demo-secret",  # noqa: S106 - the fake's own throwaway credential
                now=lambda: moment,
            ) as server,
            EventsClient("demo-key", "demo-secret", base_url=server.url) as client,
            StateStore(state_path) as state,
            sqlite3.connect(warehouse) as conn,
        ):
            server_credentials_note = f"fake mParticle listening on {server.url}"
            stream.write(server_credentials_note + "\n\n")
            for name, filename, table in DEMO_SYNCS:
                mapping = load_mapping(demo_mapping_path(filename))
                cursor = conn.execute(DEMO_QUERIES[table])
                report = sync(cursor, mapping, client, state=state, name=name, now=moment)
                reports.append(report)
                stream.write(report.summary() + "\n\n")
            sent_before = len(server.requests)
            for name, filename, table in DEMO_SYNCS:
                mapping = load_mapping(demo_mapping_path(filename))
                cursor = conn.execute(DEMO_QUERIES[table])
                again = sync(cursor, mapping, client, state=state, name=name, now=moment)
                stream.write(
                    f"second run of {name!r}: {again.sent} sent, {again.unchanged} unchanged "
                    f"(incremental state: nothing changed, nothing sent)\n"
                )
            stream.write(
                f"\nrequests received by the fake server: {sent_before} "
                f"(second pass: {len(server.requests) - sent_before})\n"
            )
        total = {key: sum(r.counts()[key] for r in reports) for key in reports[0].counts()}
        live = sum(r.live_rows() for r in reports)
        historical = sum(r.historical_rows() for r in reports)
        stream.write(
            f"total: {total['rows_in']} rows in = {total['accepted']} accepted "
            f"({live} live, {historical} historical) + {total['rejected']} rejected "
            f"+ {total['failed']} failed + {total['pending']} pending\n"
        )
        if not quiet:
            stream.write(
                "The rejected rows are wrong on purpose; each names its row, key, field and reason.\n"
            )
    return reports
