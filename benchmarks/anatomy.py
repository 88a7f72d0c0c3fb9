"""Where variant (d)'s time goes, measured in the same run as the variants.

Variant (d) run as it is, with its two halves timed apart (building the models; dumps),
beside the same objects built from *bare* frozen attrs classes (same fields, no converters,
no checks): the cost of frozen attrs construction alone, which no validation can go below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache
from typing import Any

import attrs
from variants import feed_batches
from workload import BatchRow, chunks

import mparticle_feed as mpf


def _bare(cls: type) -> Any:
    """A frozen, slotted attrs class with ``cls``'s fields, every one defaulting to None."""
    fields = {field.name: attrs.field(default=None) for field in attrs.fields(cls)}
    return attrs.make_class(f"Bare{cls.__name__}", fields, frozen=True, kw_only=True, slots=True)


@cache
def _bare_classes() -> dict[str, Any]:
    models = (
        mpf.CustomEvent,
        mpf.CommerceEvent,
        mpf.ProductAction,
        mpf.Product,
        mpf.UserIdentities,
        mpf.Batch,
    )
    return {model.__name__: _bare(model) for model in models}


def bare_attrs_batches(rows: Sequence[BatchRow]) -> list[Any]:
    """What feed_batches builds, with bare classes: the floor for frozen attrs objects."""
    bare = _bare_classes()
    custom, commerce, action, product = (
        bare["CustomEvent"],
        bare["CommerceEvent"],
        bare["ProductAction"],
        bare["Product"],
    )
    batches = []
    for row in rows:
        events = [
            custom(
                event_name=event.name,
                custom_event_type="other",
                timestamp_unixtime_ms=event.timestamp_ms,
                custom_attributes=event.attributes,
            )
            for event in row.custom_events
        ]
        for purchase in row.purchases:
            products = [
                product(id=item.id, name=item.name, price=item.price, quantity=item.quantity)
                for item in purchase.products
            ]
            events.append(
                commerce(
                    timestamp_unixtime_ms=purchase.timestamp_ms,
                    product_action=action(
                        action="purchase",
                        transaction_id=purchase.transaction_id,
                        total_amount=purchase.total,
                        products=products,
                    ),
                )
            )
        batches.append(
            bare["Batch"](
                environment="development",
                user_identities=bare["UserIdentities"](
                    customer_id=row.customer_id, email=row.email
                ),
                user_attributes=row.user_attributes,
                events=events,
            )
        )
    return batches


def split_d(rows: Sequence[BatchRow]) -> tuple[float, float]:
    """Variant (d) exactly, timing its two halves apart: (seconds building, seconds in dumps)."""
    building = writing = 0.0
    for chunk in chunks(rows):
        start = time.perf_counter()
        batches = feed_batches(chunk)
        built = time.perf_counter()
        mpf.dumps(batches)
        building += built - start
        writing += time.perf_counter() - built
    return building, writing


def floor(rows: Sequence[BatchRow]) -> float:
    """Seconds to build the same objects from bare frozen attrs classes, streaming the same way."""
    start = time.perf_counter()
    for chunk in chunks(rows):
        bare_attrs_batches(chunk)
    return time.perf_counter() - start
