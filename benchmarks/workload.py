"""The benchmark workload, as plain Python data every variant builds its objects from.

2,000 batches; each has ``customer_id`` and ``email`` identities, 5 user attributes and
10 events: 7 custom events (type ``other``, 5 custom attributes each) and 3 commerce
events, each a ``purchase`` with a transaction id, a total and 3 products. Every value,
timestamps included, is a pure function of the batch index, so runs compare.

Also here: the canonical hash that proves every variant sends the same JSON values.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

BATCHES = 2_000
CUSTOM_EVENTS_PER_BATCH = 7
PURCHASES_PER_BATCH = 3
PRODUCTS_PER_PURCHASE = 3
EVENTS_PER_BATCH = CUSTOM_EVENTS_PER_BATCH + PURCHASES_PER_BATCH
#: /v2/bulkevents takes up to 100 batches a request; every variant chunks the same way.
BATCHES_PER_REQUEST = 100

#: 2024-01-01T00:00:00Z; every timestamp is an offset from it.
BASE_TIMESTAMP_MS = 1_704_067_200_000

_PLANS = ("free", "pro", "team", "enterprise")
_CITIES = ("Lisbon", "Osaka", "Denver", "Nairobi", "Tallinn")
_SCREENS = ("home", "search", "product", "cart", "account", "help", "settings")


@dataclass(frozen=True, slots=True)
class ProductRow:
    id: str
    name: str
    price: float
    quantity: int


@dataclass(frozen=True, slots=True)
class CustomEventRow:
    name: str
    timestamp_ms: int
    attributes: dict[str, str | int]


@dataclass(frozen=True, slots=True)
class PurchaseRow:
    timestamp_ms: int
    transaction_id: str
    total: float
    products: tuple[ProductRow, ...]


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One user's data, as a warehouse query would hand it over."""

    customer_id: str
    email: str
    user_attributes: dict[str, str | int | float | bool]
    custom_events: tuple[CustomEventRow, ...]
    purchases: tuple[PurchaseRow, ...]


def _products(batch: int, purchase: int) -> tuple[ProductRow, ...]:
    products = []
    for position in range(PRODUCTS_PER_PURCHASE):
        # Cents kept non-integral so every variant prints the same number (19.99, never 20.0).
        cents = 499 + ((batch * 7 + purchase * 3 + position * 11) % 50) * 100
        products.append(
            ProductRow(
                id=f"sku-{(batch + position) % 997:04d}",
                name=f"Product {(batch + position) % 997}",
                price=cents / 100,
                quantity=1 + (batch + purchase + position) % 3,
            )
        )
    return tuple(products)


def make_batch_row(index: int) -> BatchRow:
    """The ``index``-th batch of the workload; deterministic."""
    start = BASE_TIMESTAMP_MS + index * 60_000
    custom_events = tuple(
        CustomEventRow(
            name=f"viewed_{_SCREENS[number]}",
            timestamp_ms=start + number * 1_000,
            attributes={
                "screen": _SCREENS[number],
                "referrer": _SCREENS[(number + index) % len(_SCREENS)],
                "position": number,
                "experiment": f"exp-{index % 13}",
                "duration_ms": 250 + (index * 31 + number * 17) % 5_000,
            },
        )
        for number in range(CUSTOM_EVENTS_PER_BATCH)
    )
    purchases = []
    for number in range(PURCHASES_PER_BATCH):
        products = _products(index, number)
        total_cents = sum(round(p.price * 100) * p.quantity for p in products)
        purchases.append(
            PurchaseRow(
                timestamp_ms=start + 10_000 + number * 1_000,
                transaction_id=f"tx-{index:06d}-{number}",
                total=total_cents / 100,
                products=products,
            )
        )
    return BatchRow(
        customer_id=f"cust-{index:06d}",
        email=f"user{index}@example.com",
        user_attributes={
            "plan": _PLANS[index % len(_PLANS)],
            "city": _CITIES[index % len(_CITIES)],
            "age": 18 + index % 60,
            "newsletter": index % 2 == 0,
            "lifetime_value": (index % 1000) + 0.25,
        },
        custom_events=custom_events,
        purchases=tuple(purchases),
    )


def make_workload(batches: int = BATCHES) -> list[BatchRow]:
    return [make_batch_row(index) for index in range(batches)]


def chunks(items: Sequence[Any], size: int = BATCHES_PER_REQUEST) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def event_count(rows: Sequence[BatchRow]) -> int:
    return sum(len(row.custom_events) + len(row.purchases) for row in rows)


# --- the proof that every variant sends the same thing ------------------------------------


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    # 5 and 5.0 are the same JSON number; encoders differ on which they print.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _rename_official_identity(batch: dict[str, Any]) -> dict[str, Any]:
    # The official SDK sends ``customerid``; mParticle documents ``customer_id``.
    identities = batch.get("user_identities")
    if isinstance(identities, dict) and "customerid" in identities:
        identities = dict(identities)
        identities["customer_id"] = identities.pop("customerid")
        batch = {**batch, "user_identities": identities}
    return batch


def canonical_hash(bodies: Iterable[bytes], *, official: bool = False) -> str:
    """SHA-256 of the parsed request bodies, key order and number spelling ignored."""
    batches: list[Any] = []
    for body in bodies:
        parsed = json.loads(body)
        batches.extend(parsed if isinstance(parsed, list) else [parsed])
    if official:
        batches = [_rename_official_identity(batch) for batch in batches]
    text = json.dumps(_canonical(batches), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
