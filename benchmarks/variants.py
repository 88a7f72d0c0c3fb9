"""The serialisation variants (a)-(d): workload rows in, request bodies (bytes) out.

Each variant does the whole job a caller pays for: build its objects from the rows,
then write one JSON body per /v2/bulkevents request of 100 batches. All of them stream
the same way, one request's worth of rows at a time, as a sync does; so none holds
the whole workload's objects at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from workload import BatchRow, chunks

import mparticle_feed as mpf

Variant = Callable[[Sequence[BatchRow]], list[bytes]]


# --- (a) the official SDK -------------------------------------------------------------------


def official_batches(rows: Sequence[BatchRow]) -> list[Any]:
    """The official SDK's model objects, built as its README shows."""
    import mparticle  # type: ignore[import-untyped]

    batches = []
    for row in rows:
        events: list[Any] = [
            mparticle.AppEvent(
                event_name=event.name,
                custom_event_type="other",
                timestamp_unixtime_ms=event.timestamp_ms,
                custom_attributes=event.attributes,
            )
            for event in row.custom_events
        ]
        for purchase in row.purchases:
            products = [
                mparticle.Product(
                    id=product.id,
                    name=product.name,
                    price=product.price,
                    quantity=product.quantity,
                )
                for product in purchase.products
            ]
            action = mparticle.ProductAction(
                action="purchase",
                transaction_id=purchase.transaction_id,
                total_amount=purchase.total,
                products=products,
            )
            events.append(
                mparticle.CommerceEvent(
                    product_action=action, timestamp_unixtime_ms=purchase.timestamp_ms
                )
            )
        identities = mparticle.UserIdentities()
        identities.customerid = row.customer_id
        identities.email = row.email
        batch = mparticle.Batch()
        batch.environment = "development"
        batch.user_identities = identities
        batch.user_attributes = row.user_attributes
        # The setter wraps each event in its EventBase envelope; the constructor would not.
        batch.events = events
        batches.append(batch)
    return batches


def official_body(batches: Sequence[Any]) -> bytes:
    """The bytes ``EventsApi.bulk_upload_events`` puts on the wire for these batches."""
    from mparticle import ApiClient

    # ApiClient.__call_api sanitises the body, RESTClientObject.request json.dumps it,
    # and urllib3 encodes the str body as UTF-8.
    return json.dumps(ApiClient.sanitize_for_serialization(list(batches))).encode("utf-8")


def variant_a_official(rows: Sequence[BatchRow]) -> list[bytes]:
    return [official_body(official_batches(chunk)) for chunk in chunks(rows)]


# --- (b), (c) hand-written dicts ------------------------------------------------------------


def batch_dict(row: BatchRow) -> dict[str, Any]:
    """The batch as a hand-written dict: the least work that yields the right JSON."""
    events: list[dict[str, Any]] = [
        {
            "event_type": "custom_event",
            "data": {
                "event_name": event.name,
                "custom_event_type": "other",
                "timestamp_unixtime_ms": event.timestamp_ms,
                "custom_attributes": event.attributes,
            },
        }
        for event in row.custom_events
    ]
    for purchase in row.purchases:
        events.append(
            {
                "event_type": "commerce_event",
                "data": {
                    "timestamp_unixtime_ms": purchase.timestamp_ms,
                    "product_action": {
                        "action": "purchase",
                        "transaction_id": purchase.transaction_id,
                        "total_amount": purchase.total,
                        "products": [
                            {
                                "id": product.id,
                                "name": product.name,
                                "price": product.price,
                                "quantity": product.quantity,
                            }
                            for product in purchase.products
                        ],
                    },
                },
            }
        )
    return {
        "environment": "development",
        "user_identities": {"customer_id": row.customer_id, "email": row.email},
        "user_attributes": row.user_attributes,
        "events": events,
    }


def variant_b_dicts_json(rows: Sequence[BatchRow]) -> list[bytes]:
    return [
        json.dumps([batch_dict(row) for row in chunk]).encode("utf-8") for chunk in chunks(rows)
    ]


def variant_c_dicts_orjson(rows: Sequence[BatchRow]) -> list[bytes]:
    return [orjson.dumps([batch_dict(row) for row in chunk]) for chunk in chunks(rows)]


# --- (d) mparticle_feed ---------------------------------------------------------------------


def feed_batches(rows: Sequence[BatchRow]) -> list[mpf.Batch]:
    """mparticle_feed's typed, validated models for the rows."""
    other = mpf.CustomEventType.OTHER
    purchase_action = mpf.ProductActionType.PURCHASE
    batches = []
    for row in rows:
        events: list[mpf.Event] = [
            mpf.CustomEvent(
                event_name=event.name,
                custom_event_type=other,
                timestamp_unixtime_ms=event.timestamp_ms,
                custom_attributes=event.attributes,
            )
            for event in row.custom_events
        ]
        for purchase in row.purchases:
            products = [
                mpf.Product(
                    id=product.id,
                    name=product.name,
                    price=product.price,
                    quantity=product.quantity,
                )
                for product in purchase.products
            ]
            events.append(
                mpf.CommerceEvent(
                    timestamp_unixtime_ms=purchase.timestamp_ms,
                    product_action=mpf.ProductAction(
                        action=purchase_action,
                        transaction_id=purchase.transaction_id,
                        total_amount=purchase.total,
                        products=products,
                    ),
                )
            )
        batches.append(
            mpf.Batch(
                environment=mpf.Environment.DEVELOPMENT,
                user_identities=mpf.UserIdentities(customer_id=row.customer_id, email=row.email),
                user_attributes=row.user_attributes,
                events=events,
            )
        )
    return batches


def variant_d_mparticle_feed(rows: Sequence[BatchRow]) -> list[bytes]:
    return [mpf.dumps(feed_batches(chunk)) for chunk in chunks(rows)]


#: Label, description, function; (a) is only present when the official SDK is installed.
SPEED_VARIANTS: tuple[tuple[str, str, Variant], ...] = (
    ("a", "official SDK: models + sanitize + json.dumps", variant_a_official),
    ("b", "hand-written dicts + json.dumps", variant_b_dicts_json),
    ("c", "hand-written dicts + orjson", variant_c_dicts_orjson),
    ("d", "mparticle_feed: models + dumps", variant_d_mparticle_feed),
)
