"""map_rows end to end: SQLite orders → commerce purchases, files vs code, batching, rejects."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import mparticle_feed as mpf
from mparticle_feed._mapping.files import load_mapping
from mparticle_feed._mapping.provenance import RowRef, Stage
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.sources import Attributes, Column, Computed, Constant, ListOf, SyncKind
from mparticle_feed._mapping.spec import (
    CommerceEventMapping,
    CustomEventMapping,
    UserAttributeMapping,
)
from mparticle_feed._source.rows import rows_from_cursor

MAPPINGS = Path(__file__).parent / "data" / "mappings"

ORDERS_SQL = """
SELECT o.order_id, o.customer_id, o.email, o.first_name, o.ordered_at, o.total, o.tax,
       o.channel, o.attr_coupon, o.message_id,
       (SELECT json_group_array(json_object('id', i.sku, 'name', i.name,
                                            'price', i.price, 'quantity', i.quantity))
          FROM order_items AS i WHERE i.order_id = o.order_id) AS products
  FROM orders AS o
 ORDER BY o.customer_id, o.ordered_at
"""


def _message_id(order_id: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"order/{order_id}"))


@pytest.fixture
def shop() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER, email TEXT,
                             first_name TEXT, ordered_at TEXT, total NUMERIC, tax NUMERIC,
                             channel TEXT, attr_coupon TEXT, message_id TEXT);
        CREATE TABLE order_items (order_id INTEGER, sku TEXT, name TEXT, price NUMERIC,
                                  quantity INTEGER);
        """
    )
    orders = [
        (1, 7, "ann@example.com", "Ann", "2024-03-01T09:00:00Z", 59.9, 4.8, "web", "SPRING"),
        (2, 7, "ann@example.com", "Ann", "2024-03-02 10:30:00", 12.5, 1.0, "app", None),
        (3, 8, "bob@example.com", None, "2024-03-03T08:00:00+02:00", 100, 8, "web", None),
        (4, 9, None, "Cy", "not a date", 5, 0, "web", None),
        (5, None, None, None, "2024-03-05T08:00:00Z", 5, 0, "web", None),
    ]
    db.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*order, _message_id(order[0])) for order in orders],
    )
    db.executemany(
        "INSERT INTO order_items VALUES (?, ?, ?, ?, ?)",
        [
            (1, "SKU-1", "Boots", 49.9, 1),
            (1, "SKU-2", "Laces", 5.0, 2),
            (2, "SKU-3", "Socks", 12.5, 1),
            (3, "SKU-1", "Boots", 100, 1),
            (4, "SKU-4", "Hat", 5, 1),
        ],
    )
    yield db
    db.close()


def orders_mapping_in_code() -> CommerceEventMapping:
    """The mapping of tests/data/mappings/orders.toml, written in Python."""
    return CommerceEventMapping(
        environment="development",
        primary_key="order_id",
        timezone="UTC",
        user_identities={mpf.IdentityType.CUSTOMER_ID: "customer_id", "email": "email"},
        timestamp_unixtime_ms="ordered_at",
        source_message_id="message_id",
        currency_code=Constant("USD"),
        product_action={
            "action": Constant("purchase"),
            "transaction_id": "order_id",
            "total_amount": "total",
            "tax_amount": "tax",
            "products": "products",
        },
        custom_attributes=Attributes(columns={"channel": "channel"}, prefix="attr_"),
        user_attributes={"$FirstName": "first_name"},
    )


def test_sqlite_orders_become_valid_commerce_purchases(
    shop: sqlite3.Connection, schema_problems: Any
) -> None:
    run = map_rows(
        rows_from_cursor(shop.execute(ORDERS_SQL), chunk_size=2),
        load_mapping(MAPPINGS / "orders.toml"),
    )
    batches = list(run)

    assert (run.rows_in, run.rows_mapped, run.rows_rejected) == (5, 3, 2)
    assert [(p.row.row_number, p.row.primary_key, p.field) for p in run.rejected] == [
        (1, "5", "user_identities"),  # SQLite sorts the null customer first
        (5, "4", "timestamp_unixtime_ms"),
    ]
    assert all(p.stage is Stage.MAPPING for p in run.rejected)
    # Ann's two orders share a batch; Bob has his own.
    assert [b.event_rows for b in batches] == [
        (RowRef(2, "1"), RowRef(3, "2")),
        (RowRef(4, "3"),),
    ]
    ann = batches[0].batch
    assert ann.user_identities == mpf.UserIdentities(customer_id="7", email="ann@example.com")
    assert ann.user_attributes == {"$FirstName": "Ann"}
    first = ann.events[0] if ann.events else None
    assert isinstance(first, mpf.CommerceEvent)
    assert first.timestamp_unixtime_ms == 1709283600000
    assert first.custom_attributes == {"channel": "web", "coupon": "SPRING"}
    assert first.product_action is not None
    assert first.product_action.action is mpf.ProductActionType.PURCHASE
    assert first.product_action.transaction_id == "1"
    assert [p.id for p in first.product_action.products or ()] == ["SKU-1", "SKU-2"]
    assert first.product_action.products is not None
    assert first.product_action.products[1].quantity == 2
    # The naive SQLite timestamp is read in the mapping's declared timezone (UTC).
    assert ann.events is not None
    assert ann.events[1].timestamp_unixtime_ms == 1709375400000
    bob = batches[1].batch
    assert bob.events is not None
    assert bob.events[0].timestamp_unixtime_ms == 1709445600000  # +02:00 honoured
    assert bob.user_attributes is None  # null first name left out

    documents = [mpf.to_dict(b.batch) for b in batches]
    assert schema_problems(documents, "2026") == []
    assert mpf.loads(mpf.dumps([b.batch for b in batches])) == [b.batch for b in batches]


@pytest.mark.parametrize("name", ["orders.toml", "orders.json"])
def test_file_and_code_mappings_produce_identical_batches(
    shop: sqlite3.Connection, name: str
) -> None:
    from_file = load_mapping(MAPPINGS / name)
    in_code = orders_mapping_in_code()
    assert from_file == in_code
    assert from_file.fingerprint() == in_code.fingerprint()
    a = list(map_rows(rows_from_cursor(shop.execute(ORDERS_SQL)), from_file))
    b = list(map_rows(rows_from_cursor(shop.execute(ORDERS_SQL)), in_code))
    assert a == b
    assert mpf.dumps([x.batch for x in a]) == mpf.dumps([x.batch for x in b])


def test_mapping_exposes_kind_environment_and_primary_key() -> None:
    mapping = orders_mapping_in_code()
    assert mapping.kind is SyncKind.COMMERCE_EVENT
    assert mapping.kind == "commerce_event"
    assert mapping.environment is mpf.Environment.DEVELOPMENT
    assert mapping.primary_key == "order_id"


def test_fingerprint_is_stable_and_changes_with_the_definition() -> None:
    base = orders_mapping_in_code()
    assert base.fingerprint() == orders_mapping_in_code().fingerprint()
    assert len(base.fingerprint()) == 64
    changed = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="order_id",
        user_identities={"customer_id": "customer_id"},
        product_action={"action": Constant("refund")},
    )
    other = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="order_id",
        user_identities={"customer_id": "customer_id"},
        product_action={"action": Constant("purchase")},
    )
    assert changed.fingerprint() != other.fingerprint()
    production = CommerceEventMapping(
        stamp_arrival_time=True,
        environment="production",
        primary_key="order_id",
        user_identities={"customer_id": "customer_id"},
        product_action={"action": Constant("purchase")},
    )
    assert production.fingerprint() != other.fingerprint()


def _event_name(row: Mapping[str, Any]) -> str:
    return f"viewed {row['page']}"


def _other_name(row: Mapping[str, Any]) -> str:
    return "x"


def test_callables_fingerprint_by_qualified_name() -> None:
    def build(function: Any) -> CustomEventMapping:
        return CustomEventMapping(
            stamp_arrival_time=True,
            primary_key="id",
            user_identities={"email": "email"},
            event_name=Computed(function),
        )

    assert build(_event_name).fingerprint() == build(_event_name).fingerprint()
    assert build(_event_name).fingerprint() != build(_other_name).fingerprint()
    assert build(_event_name).to_dict()["event_name"] == {
        "computed": "test_mapping._event_name"
    } or build(_event_name).to_dict()["event_name"]["computed"].endswith("._event_name")


def _custom_rows() -> list[dict[str, Any]]:
    aware = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    return [
        {"id": 1, "email": "a@x.io", "page": "home", "at": aware},
        {"id": 2, "email": "a@x.io", "page": "cart", "at": aware},
        {"id": 3, "email": "a@x.io", "page": "pay", "at": aware},
        {"id": 4, "email": "b@x.io", "page": "home", "at": aware},
        {"id": 5, "email": "a@x.io", "page": "home", "at": aware},
    ]


def test_consecutive_rows_of_a_user_share_batches_bounded_in_size() -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"email": "email"},
        event_name=Computed(_event_name),
        custom_event_type=Constant("navigation"),
        timestamp_unixtime_ms="at",
    )
    batches = list(map_rows(_custom_rows(), mapping, max_events_per_batch=2, group_window=0))
    assert [[r.row_number for r in b.event_rows] for b in batches] == [[1, 2], [3], [4], [5]]
    assert [b.rows for b in batches] == [b.event_rows for b in batches]
    # With the window (the default), row 5 joins its user's open batch past b's row 4.
    regrouped = list(map_rows(_custom_rows(), mapping, max_events_per_batch=2))
    assert [[r.row_number for r in b.event_rows] for b in regrouped] == [[1, 2], [3, 5], [4]]
    event = batches[0].batch.events[0] if batches[0].batch.events else None
    assert isinstance(event, mpf.CustomEvent)
    assert event.event_name == "viewed home"
    assert event.custom_event_type is mpf.CustomEventType.NAVIGATION
    assert event.timestamp_unixtime_ms == 1714564800000


def test_custom_event_type_defaults_to_other() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="page",
    )
    (batch,) = list(map_rows(_custom_rows()[:1], mapping))
    assert batch.batch.events is not None
    event = batch.batch.events[0]
    assert isinstance(event, mpf.CustomEvent)
    assert event.custom_event_type is mpf.CustomEventType.OTHER


def test_user_attribute_sync_sends_no_events_one_batch_per_row(schema_problems: Any) -> None:
    mapping = load_mapping(MAPPINGS / "profiles.toml")
    assert mapping.kind is SyncKind.USER_ATTRIBUTES
    assert mapping.primary_key is None
    rows = [
        {"customer_id": 7, "email": "ann@example.com", "first_name": "Ann", "city": "Oslo",
         "ua_plan": "gold", "ua_tags": ["a", "b"], "ua_score": Decimal("9.5")},
        {"customer_id": 7, "email": "ann@example.com", "first_name": "Ann", "city": None,
         "ua_plan": "silver", "ua_tags": None, "ua_score": None},
    ]  # fmt: skip
    run = map_rows(rows, mapping)
    batches = list(run)
    assert [b.rows for b in batches] == [(RowRef(1, "7"),), (RowRef(2, "7"),)]
    assert all(b.event_rows == () and b.batch.events is None for b in batches)
    assert batches[0].batch.user_attributes == {
        "$FirstName": "Ann",
        "$City": "Oslo",
        "plan": "gold",
        "tags": ["a", "b"],
        "score": Decimal("9.5"),
    }
    assert batches[1].batch.user_attributes == {"$FirstName": "Ann", "plan": "silver"}
    assert schema_problems([mpf.to_dict(b.batch) for b in batches], "2026") == []


def test_user_attribute_primary_key_falls_back_through_identities() -> None:
    by_email = UserAttributeMapping(
        user_identities={"email": "mail", "other": Constant("x")}, user_attributes={"a": "a"}
    )
    assert by_email.key_column == "mail"
    by_device = UserAttributeMapping(
        device_identities={"ios_idfv": "idfv"}, user_attributes={"a": "a"}
    )
    assert by_device.key_column == "idfv"
    explicit = UserAttributeMapping(
        primary_key="pk", user_identities={"email": "mail"}, user_attributes={"a": "a"}
    )
    assert explicit.key_column == "pk"


def test_pageviews_mapping_with_epoch_seconds_device_ids_location_and_remaining() -> None:
    mapping = load_mapping(MAPPINGS / "pageviews.toml")
    idfv = uuid.uuid4()
    rows = [
        {"view_id": 1, "customer_id": 7, "idfv": idfv, "page": "home", "viewed_at": 1700000000,
         "lat": "59.9", "lon": 10.7, "browser": "firefox", "referrer": None},
        {"view_id": 2, "customer_id": 7, "idfv": "not-a-uuid", "page": "home",
         "viewed_at": 1700000000.5, "lat": 1, "lon": 2, "browser": "x", "referrer": None},
    ]  # fmt: skip
    run = map_rows(rows, mapping)
    (batch,) = list(run)
    assert run.rejected[0].field == "device_info.ios_idfv"
    assert batch.batch.device_info == mpf.DeviceInfo(ios_idfv=str(idfv))
    assert batch.batch.events is not None
    event = batch.batch.events[0]
    assert isinstance(event, mpf.CustomEvent)
    assert event.timestamp_unixtime_ms == 1_700_000_000_000
    assert event.location == mpf.Location(latitude=59.9, longitude=10.7)
    # Every column no other field reads, nulls left out.
    assert event.custom_attributes == {"browser": "firefox"}


def test_flat_columns_assemble_a_product_list() -> None:
    mapping = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid"},
        product_action={
            "action": "action",
            "products": ListOf([{"id": "sku", "price": "price", "quantity": Constant(1)}]),
        },
        shopping_cart={"products": [{"id": "sku"}]},
    )
    rows = [{"id": "a1", "cid": 3, "action": "add_to_cart", "sku": "S", "price": Decimal("2.50")}]
    (batch,) = list(map_rows(rows, mapping))
    assert batch.batch.events is not None
    event = batch.batch.events[0]
    assert isinstance(event, mpf.CommerceEvent)
    assert event.product_action == mpf.ProductAction(
        action="add_to_cart",
        products=[mpf.Product(id="S", price=Decimal("2.50"), quantity=1)],
    )
    assert event.shopping_cart == mpf.ShoppingCart(products=[mpf.Product(id="S")])


def test_json_product_action_column_as_str_bytes_or_decoded() -> None:
    mapping = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid"},
        product_action="pa",
    )
    text = '{"action": "purchase", "total_amount": "19.90", "products": [{"id": "A", "custom_attributes": {"size": 42, "gift": true}}]}'
    decoded = {
        "action": "purchase",
        "total_amount": "19.90",
        "products": [{"id": "A", "custom_attributes": {"size": 42, "gift": True}}],
    }
    rows = [
        {"id": 1, "cid": 1, "pa": text},
        {"id": 2, "cid": 1, "pa": text.encode()},
        {"id": 3, "cid": 1, "pa": decoded},
    ]
    (batch,) = list(map_rows(rows, mapping))
    assert batch.batch.events is not None
    actions = [e.product_action for e in batch.batch.events if isinstance(e, mpf.CommerceEvent)]
    assert actions[0] == actions[1] == actions[2]
    assert actions[0] is not None
    assert actions[0].total_amount == Decimal("19.90")
    assert actions[0].products is not None
    assert actions[0].products[0].custom_attributes == {"size": "42", "gift": "true"}


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ('{"action": "buy"}', "product_action.action", "not a valid ProductActionType"),
        ('{"acton": "purchase"}', "product_action.acton", "no field"),
        ('{"products": []}', "product_action.action", "required"),
        ("{not json", "product_action", "not valid JSON"),
        (
            '{"action": "purchase", "products": [{"price": "NaN"}]}',
            "product_action.products[0].price",
            "finite",
        ),
        (
            '{"action": "purchase", "products": [{"price": true}]}',
            "product_action.products[0].price",
            "bool",
        ),
        ("[1, 2]", "product_action", "expected a ProductAction object"),
    ],
)
def test_bad_nested_json_names_the_field_path(value: str, field: str, reason: str) -> None:
    mapping = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid"},
        product_action="pa",
    )
    run = map_rows([{"id": 1, "cid": 1, "pa": value}], mapping)
    assert list(run) == []
    (problem,) = run.rejected
    assert problem.field == field
    assert reason in problem.reason


def test_commerce_row_without_exactly_one_action_is_rejected() -> None:
    mapping = CommerceEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid"},
        product_action="pa",
        promotion_action="promo",
    )
    rows = [
        {"id": 1, "cid": 1, "pa": None, "promo": None},
        {"id": 2, "cid": 1, "pa": {"action": "purchase"}, "promo": {"action": "view"}},
        {"id": 3, "cid": 1, "pa": None, "promo": {"action": "click", "promotions": [{"id": "P"}]}},
    ]
    run = map_rows(rows, mapping)
    batches = list(run)
    assert [p.row.row_number for p in run.rejected] == [1, 2]
    assert all("exactly one" in p.reason for p in run.rejected)
    assert batches[0].event_rows == (RowRef(3, "3"),)


def test_strict_mode_raises_on_the_first_bad_row_naming_row_and_field() -> None:
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"email": "email"},
        event_name="page",
        timestamp_unixtime_ms="at",
    )
    rows = [
        {"id": 1, "email": "a@x.io", "page": "home", "at": 1_700_000_000_000},
        {"id": 2, "email": "a@x.io", "page": "home", "at": datetime(2024, 1, 1)},
    ]
    run = map_rows(rows, mapping, strict=True)
    with pytest.raises(
        mpf.RowError, match=r"row 2 \(primary key '2'\), field timestamp_unixtime_ms"
    ) as info:
        list(run)
    assert info.value.row_number == 2
    assert info.value.field == "timestamp_unixtime_ms"
    assert run.rows_in == run.rows_mapped + run.rows_rejected == 2


def test_on_reject_is_called_for_each_rejected_row() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="page",
    )
    seen: list[mpf.RowError | Any] = []
    rows: list[Any] = [{"id": 1, "email": None, "page": "x"}, None, {"email": "a@b.c", "page": "x"}]
    run = map_rows(rows, mapping, on_reject=seen.append)
    assert list(run) == []
    assert seen == run.rejected
    assert [(p.row, p.field) for p in seen] == [
        (RowRef(1, "1"), "user_identities"),
        (RowRef(2, None), None),
        (RowRef(3, None), "primary_key"),
    ]


def test_a_callable_that_raises_rejects_only_its_row() -> None:
    def explode(row: Mapping[str, Any]) -> str:
        if row["id"] == 2:
            raise KeyError("boom")
        return "ok"

    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name=Computed(explode),
    )
    rows = [{"id": i, "email": "a@b.c"} for i in (1, 2, 3)]
    run = map_rows(rows, mapping)
    (batch,) = list(run)
    assert [r.row_number for r in batch.event_rows] == [1, 3]
    assert run.rejected[0].field == "event_name"
    assert "explode raised KeyError" in run.rejected[0].reason


def test_missing_column_rejects_with_its_name() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="page",
    )
    run = map_rows([{"id": 1, "email": "a@b.c"}], mapping)
    assert list(run) == []
    assert run.rejected[0].field == "event_name"
    assert "'page' is not in the row" in run.rejected[0].reason


def test_user_attributes_conflicting_within_a_user_split_the_batch() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="page",
        user_attributes={"plan": "plan"},
    )
    rows = [
        {"id": 1, "email": "a@b.c", "page": "p", "plan": "gold"},
        {"id": 2, "email": "a@b.c", "page": "p", "plan": "gold"},
        {"id": 3, "email": "a@b.c", "page": "p", "plan": "silver"},
    ]
    batches = list(map_rows(rows, mapping))
    assert [len(b.event_rows) for b in batches] == [2, 1]
    assert [b.batch.user_attributes for b in batches] == [{"plan": "gold"}, {"plan": "silver"}]


def test_max_events_per_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        map_rows([], orders_mapping_in_code(), max_events_per_batch=0)


def test_empty_input_yields_nothing_and_counts_zero() -> None:
    run = map_rows([], orders_mapping_in_code())
    assert list(run) == []
    assert (run.rows_in, run.rows_mapped, run.rows_rejected) == (0, 0, 0)
    assert "rows_in=0" in repr(run)


def test_identity_values_are_text_and_blank_ones_are_absent() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "email"},
        mpid="mpid",
        device_identities={"mp_deviceid": "dev"},
        ip="ip",
        event_name=Constant("x"),
    )
    dev = uuid.uuid4()
    rows = [
        {"id": 1, "cid": Decimal(12), "email": "  ", "mpid": "-42", "dev": dev, "ip": b"10.0.0.1"}
    ]
    (batch,) = list(map_rows(rows, mapping))
    assert batch.batch.user_identities == mpf.UserIdentities(customer_id="12")
    assert batch.batch.mpid == -42
    assert batch.batch.mp_deviceid == str(dev)
    assert batch.batch.ip == "10.0.0.1"


def test_batch_level_application_info_and_context_from_constants_and_json() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name=Constant("x"),
        application_info=Constant({"application_name": "shop", "os": "Android"}),
        context="ctx",
    )
    rows = [
        {"id": 1, "email": "a@b.c", "ctx": '{"data_plan": {"plan_id": "p", "plan_version": 2}}'},
        {"id": 2, "email": "a@b.c", "ctx": '{"data_plan": {"plan_id": "q"}}'},
    ]
    batches = list(map_rows(rows, mapping))
    assert len(batches) == 2  # a different context is a different batch
    assert batches[0].batch.application_info == mpf.ApplicationInfo(
        application_name="shop", os="Android"
    )
    assert batches[0].batch.context == mpf.Context(
        data_plan=mpf.DataPlan(plan_id="p", plan_version=2)
    )


def test_columns_accept_column_objects_and_identity_enum_keys() -> None:
    a = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={mpf.IdentityType.EMAIL: Column("email")},
        event_name="n",
    )
    b = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="n",
    )
    assert a == b


def test_a_mapping_is_compiled_once_and_pickles_without_its_compiled_form() -> None:
    import pickle

    mapping = mpf.CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name=mpf.Constant("Viewed"),
        custom_attributes={"plan": "plan"},
    )
    compiled = mapping._compiled
    runs = [list(mpf.map_rows([{"id": 1, "user": "u", "plan": "pro"}], mapping)) for _ in range(2)]
    assert mapping._compiled is compiled  # runs reuse it
    assert runs[0] == runs[1]
    copy = pickle.loads(pickle.dumps(mapping))
    assert copy == mapping
    assert hash(copy) == hash(mapping)
    assert copy._compiled is not compiled  # rebuilt on unpickling, not shipped
    assert list(mpf.map_rows([{"id": 1, "user": "u", "plan": "pro"}], copy)) == runs[0]
    assert "_compiled" not in repr(mapping)
