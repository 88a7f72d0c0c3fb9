"""Usage examples that must pass ``mypy --strict``: the types users see are API."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal

from hypothesis import given

import mparticle_feed as mpf
from mparticle_feed.pipeline import Request, pack, route
from mparticle_feed.testing import strategies as mps

purchase = mpf.CommerceEvent(
    timestamp_unixtime_ms=datetime(2024, 5, 1, tzinfo=timezone.utc),
    source_message_id=uuid.uuid4(),
    currency_code="EUR",
    product_action=mpf.ProductAction(
        action=mpf.ProductActionType.PURCHASE,
        transaction_id="T-1001",
        total_amount=Decimal("59.90"),
        products=[mpf.Product(id="sku-1", name="Mug", price=19.95, quantity=3)],
    ),
)
signup = mpf.CustomEvent(
    event_name="signed_up",
    custom_event_type=mpf.CustomEventType.USER_PREFERENCE,
    timestamp_unixtime_ms=1_714_521_600_000,
    custom_attributes={"plan": "pro", "seats": 5, "trial": False, "score": 0.5, "ref": None},
)
batch = mpf.Batch(
    environment=mpf.Environment.PRODUCTION,
    user_identities=mpf.UserIdentities(customer_id="42", email="a@example.com"),
    user_attributes={"$firstname": "Ada", "tags": ["a", "b"]},
    context=mpf.Context(data_plan=mpf.DataPlan(plan_id="shop", plan_version=3)),
    events=[purchase, signup],
)

body: bytes = mpf.dumps(batch)
bulk: bytes = mpf.dumps([batch, batch])
loaded: mpf.Batch | list[mpf.Batch] = mpf.loads(body)
as_dict: dict[str, object] = mpf.to_dict(batch)
again: mpf.Batch = mpf.from_dict(mpf.to_dict(batch))
identities: list[tuple[mpf.IdentityType, str]] = (
    batch.user_identities.items() if batch.user_identities else []
)
price: Decimal | None = (
    purchase.product_action.products[0].price
    if purchase.product_action and purchase.product_action.products
    else None
)

try:
    mpf.loads(b'{"environment": "staging"}')
except mpf.PayloadError as error:
    problems: tuple[str, ...] = error.problems

with contextlib.suppress(mpf.ModelError):  # a naive datetime is refused at run time
    mpf.CustomEvent(
        event_name="x", custom_event_type="other", timestamp_unixtime_ms=datetime(2024, 1, 1)
    )


@given(mps.batches(min_events=1, max_events=3, event_strategy=mps.custom_events()))
def property_round_trip(generated: mpf.Batch) -> None:
    assert mpf.loads(mpf.dumps(generated)) == generated


@given(mps.events(with_timestamp=True, min_timestamp=datetime(2020, 1, 1, tzinfo=timezone.utc)))
def property_any_event(event: mpf.Event) -> None:
    assert event.timestamp_unixtime_ms is not None


def plan_then_send(client: mpf.Sender, mapping: mpf.CustomEventMapping) -> mpf.SyncReport:
    rows: list[dict[str, object]] = [{"id": 1, "name": "signed_up"}]
    store = mpf.StateStore("state.sqlite", clock=time.time)
    reviewed: mpf.Plan = mpf.plan(rows, mapping, state=store)
    reviewed.send(client, retries=3)  # type: ignore[call-arg]  # sync's options, by name only
    return reviewed.send(client, state=store, on_mapping_change="keep", stop=threading.Event())


def requests_of(batches: list[mpf.Batch]) -> list[Request]:
    now = datetime.now(timezone.utc)
    return [item for item in pack(route(batches, now=now)) if isinstance(item, Request)]


def violations_of(rows: list[dict[str, object]]) -> list[mpf.RowViolation]:
    plan = mpf.load_data_plan("examples/shop_data_plan.json", version=2)
    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="event",
        data_plan=plan,
    )
    from_file = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="event",
        data_plan={"path": "examples/shop_data_plan.json", "version": 1},
    )
    policy: mpf.DataPlanPolicy = "block"
    run = mpf.map_rows(rows, mapping, data_plan_policy=policy)
    reviewed = mpf.plan(rows, from_file, data_plan_policy="report")
    dropped: list[mpf.RowViolation] = [v for v in run.violations if v.dropped]
    return dropped + list(reviewed.violations)


def rows_of_any_source(cursor: mpf.Cursor, mapping: mpf.CustomEventMapping) -> list[str] | None:
    rows: mpf.Rows = mpf.rows_from(cursor, chunk_size=500)
    columns: list[str] | None = rows.columns
    first: dict[str, object] | None = next(rows, None)
    mpf.map_rows(rows, mapping, chunk_size=500)
    mpf.rows_from(42)  # type: ignore[arg-type]  # not a source: refused by the type checker too
    return columns if first is not None else None


def proxied_client() -> mpf.EventsClient:
    client = mpf.EventsClient("key", "secret", proxy="http://proxy.corp:3128", trust_env=False)
    shown: str | None = client.proxy
    assert shown is not None
    return client


class SharedBudget:
    """A limiter of one's own: any object with the three methods is a RateLimiter."""

    def acquire(self, batches: int) -> float:
        return batches / 270.0

    def rate_limited(self, retry_after: float | None) -> None:
        pass

    def observe(self, percentage_used: float | None) -> None:
        pass


def paced_clients(rows: list[dict[str, object]]) -> float:
    shared: mpf.RateLimiter = SharedBudget()
    bucket: mpf.RateLimiter = mpf.TokenBucket(1_000, burst=250)
    patient = mpf.RetryPolicy(max_retry_after=60.0, max_stall=600.0)
    for limit in (shared, bucket, 500.0, None):
        with mpf.EventsClient("us1-key", "secret", rate_limit=limit, retry=patient):
            pass
    mapping = mpf.CustomEventMapping(
        primary_key="id", user_identities={"customer_id": "user"}, event_name="event"
    )
    regrouped: mpf.MappingRun = mpf.map_rows(rows, mapping, group_window=0)
    reviewed = mpf.plan(rows, mapping, group_window=1_000)
    return regrouped.events_per_batch + reviewed.events_per_batch
