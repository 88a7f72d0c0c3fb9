"""Property tests: hostile rows never escape map_rows, and every row is accounted for exactly once."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.sources import Attributes, Constant
from mparticle_feed._mapping.spec import (
    CommerceEventMapping,
    CustomEventMapping,
    RowMapping,
    UserAttributeMapping,
)
from mparticle_feed.testing import strategies as mps

# --- strategies for rows (candidates for mparticle_feed.testing.strategies) ----------------------

hostile_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    st.decimals(),  # NaN and infinities included
    st.text(max_size=20),
    st.text(min_size=5000, max_size=5000, alphabet="x"),
    st.binary(max_size=12),
    st.datetimes(),  # naive
    st.datetimes(timezones=st.just(timezone.utc)),
    st.dates(),
    st.uuids(),
    st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01", "t", "purchase", "a@b.c", "1.5", "nan"]),
)
hostile_values = st.one_of(
    hostile_scalars,
    st.lists(hostile_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), hostile_scalars, max_size=3),
    st.sampled_from(
        [
            '{"action": "purchase", "products": [{"id": "A", "price": 1}]}',
            b'{"action": "view", "promotions": [{"id": "P"}]}',
            {"action": "refund"},
            '{"action": "purchase", "products": [{"price": "NaN"}]}',
            "[not json",
            '{"latitude": 91, "longitude": 0}',
            {"latitude": 10, "longitude": 20},
        ]
    ),
)

KNOWN_COLUMNS = (
    "id",
    "cid",
    "email",
    "mpid",
    "idfv",
    "at",
    "name",
    "type",
    "pa",
    "loc",
    "ip",
    "first",
)


good_values: dict[str, st.SearchStrategy[Any]] = {
    "id": st.integers(0, 10**6),
    "cid": st.integers(1, 3),
    "email": st.sampled_from(["ann@example.com", "bob@example.com"]),
    "mpid": st.integers(-(2**63), 2**63 - 1),
    "idfv": st.uuids(),
    "at": st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2100, 1, 1),
        timezones=st.just(timezone.utc),
    ),
    "name": st.text(min_size=1, max_size=20).filter(str.strip),
    # attribution is documented but missing from the schemas (see SCHEMA_CUSTOM_EVENT_TYPES).
    "type": st.sampled_from([t.value for t in mps.SCHEMA_CUSTOM_EVENT_TYPES]),
    "pa": st.sampled_from(
        [
            '{"action": "purchase", "products": [{"id": "A", "price": 1, "quantity": 2}]}',
            {"action": "refund", "transaction_id": "T1"},
            b'{"action": "add_to_cart"}',
        ]
    ),
    "loc": st.builds(
        lambda lat, lon: {"latitude": lat, "longitude": lon},
        st.floats(-90, 90),
        st.floats(-180, 180),
    ),
    "ip": st.sampled_from(["10.0.0.1", "2001:db8::1"]),
    "first": st.text(max_size=10),
}


@st.composite
def hostile_rows(draw: st.DrawFn) -> Any:
    """A row as a careless warehouse might return it, or something that is not a row at all.

    Most rows start valid and then have a few columns spoiled, dropped or added, so that both
    the mapped and the rejected paths are exercised.
    """
    if draw(st.integers(0, 30)) == 0:
        return draw(
            st.one_of(
                st.none(), st.integers(), st.text(max_size=3), st.lists(st.none(), max_size=2)
            )
        )
    row: dict[Any, Any] = {column: draw(strategy) for column, strategy in good_values.items()}
    for column in draw(st.lists(st.sampled_from(KNOWN_COLUMNS), max_size=3, unique=True)):
        if draw(st.booleans()):
            row[column] = draw(hostile_values)
        else:
            del row[column]
    row.update(draw(st.dictionaries(st.text(max_size=300), hostile_scalars, max_size=3)))
    if draw(st.integers(0, 6)) == 0:  # more attributes than mParticle allows
        row.update({f"attr_{i}": i for i in range(draw(st.integers(95, 130)))})
    if draw(st.integers(0, 30)) == 0:
        row[7] = "a non-text column name"
    return row


def _name(row: Any) -> str:
    return str(row.get("name"))


MAPPINGS: list[RowMapping] = [
    CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid", "email": "email"},
        mpid="mpid",
        device_identities={"ios_idfv": "idfv"},
        ip="ip",
        timestamp_unixtime_ms="at",
        product_action="pa",
        location="loc",
        custom_attributes=Attributes(prefix="attr_"),
        user_attributes={"$FirstName": "first"},
    ),
    CustomEventMapping(
        primary_key="id",
        user_identities={"email": "email"},
        event_name="name",
        custom_event_type="type",
        timezone="Europe/Oslo",
        timestamp_unixtime_ms="at",
        custom_attributes=Attributes(remaining=True),
    ),
    CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        event_name=_name,  # type: ignore[arg-type]
        custom_flags=Attributes(json_column="pa"),
        custom_attributes={"first": "first"},
        epoch_unit="s",
        timestamp_unixtime_ms="at",
    ),
    UserAttributeMapping(
        user_identities={"customer_id": "cid", "email": "email"},
        user_attributes=Attributes(columns={"name": "name"}, prefix="attr_", remaining=False),
    ),
    UserAttributeMapping(
        primary_key="id",
        mpid="mpid",
        user_attributes=Attributes(remaining=True),
        application_info=Constant({"application_name": "feed"}),
    ),
]


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    mapping=st.sampled_from(MAPPINGS),
    rows=st.lists(hostile_rows(), max_size=12),
    per_batch=st.integers(1, 4),
)
def test_hostile_rows_never_raise_and_every_row_is_accounted_for(
    mapping: RowMapping, rows: list[Any], per_batch: int, schema_problems: Any
) -> None:
    run = map_rows(rows, mapping, max_events_per_batch=per_batch)
    batches = []
    for batch in run:
        assert run.rows_in == run.rows_mapped + run.rows_rejected
        batches.append(batch)
    assert run.rows_in == len(rows) == run.rows_mapped + run.rows_rejected
    assert len(run.rejected) == run.rows_rejected

    mapped = [ref.row_number for b in batches for ref in b.rows]
    rejected = [problem.row.row_number for problem in run.rejected]
    assert sorted(mapped + rejected) == list(range(1, len(rows) + 1))
    assert len(mapped) == run.rows_mapped
    for b in batches:
        events = b.batch.events or ()
        assert len(events) == len(b.event_rows) <= per_batch
        assert len(b.batch.user_attributes or {}) <= 100
        for event in events:
            assert len(event.custom_attributes or {}) <= 100
            if isinstance(event, mpf.CustomEvent):
                assert len(event.event_name) <= 256
        if mapping.kind == "user_attributes":
            assert b.event_rows == ()
            assert len(b.rows) == 1
    if batches:
        documents = [mpf.to_dict(b.batch) for b in batches]
        assert mpf.loads(mpf.dumps([b.batch for b in batches])) == [b.batch for b in batches]
        assert schema_problems(documents, "2026") == []


def test_the_documented_limits() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="name",
        custom_attributes=Attributes(prefix="a_"),
        user_attributes=Attributes(prefix="u_"),
    )
    base = {"email": "a@b.c", "name": "n"}
    rows = [
        {**base, "id": 1, "name": "N" * 300},
        {**base, "id": 2, **{f"a_{i}": i for i in range(101)}},
        {**base, "id": 3, "a_long": "v" * 4097},
        {**base, "id": 4, ("a_" + "k" * 257): "v"},
        {**base, "id": 5, **{f"u_{i}": i for i in range(101)}},
        {**base, "id": 6, "u_list": ["x"] * 1001},
        {**base, "id": 7, "u_list": ["x" * 513]},
        {**base, "id": 8, "u_$Custom": "x"},
        {**base, "id": 9, "a_ok": "v" * 4096, "u_list": ["x" * 512] * 1000},
    ]
    run = map_rows(rows, mapping)
    batches = list(run)
    assert run.values_truncated == 1
    assert [(p.row.row_number, p.field) for p in run.rejected] == [
        (2, "custom_attributes"),
        (3, "custom_attributes.long"),
        (4, "custom_attributes." + "k" * 40 + "..."),
        (5, "user_attributes"),
        (6, "user_attributes.list"),
        (7, "user_attributes.list[0]"),
        (8, "user_attributes.$Custom"),
    ]
    events = [e for b in batches for e in b.batch.events or ()]
    assert isinstance(events[0], mpf.CustomEvent)
    assert events[0].event_name == "N" * 256


def test_hundred_user_attributes_across_rows_of_a_user_split_batches() -> None:
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name=Constant("e"),
        user_attributes=Attributes(prefix="u_"),
    )
    rows = [
        {"id": 1, "email": "a@b.c", **{f"u_a{i}": i for i in range(60)}},
        {"id": 2, "email": "a@b.c", **{f"u_b{i}": i for i in range(60)}},
    ]
    batches = list(map_rows(rows, mapping))
    assert [len(b.batch.user_attributes or {}) for b in batches] == [60, 60]


def test_map_rows_takes_a_cursor_directly() -> None:
    import sqlite3

    db = sqlite3.connect(":memory:")
    cursor = db.execute("SELECT 1 AS id, 'a@b.c' AS email, 'home' AS name")
    mapping = CustomEventMapping(
        stamp_arrival_time=True,
        primary_key="id",
        user_identities={"email": "email"},
        event_name="name",
    )
    (batch,) = list(map_rows(cursor, mapping))
    assert batch.event_rows[0].primary_key == "1"


def test_values_of_every_driver_type_in_attributes() -> None:
    mapping = UserAttributeMapping(
        primary_key="id",
        user_identities={"email": "email"},
        user_attributes=Attributes(remaining=True),
    )
    ident = uuid.uuid4()
    row = {
        "id": 1,
        "email": "a@b.c",
        "price": Decimal("9.90"),
        "ident": ident,
        "day": date(2024, 1, 2),
        "at": datetime(2024, 1, 2, tzinfo=timezone.utc),
        "raw": b"text",
        "flag": True,
    }
    (batch,) = list(map_rows([row], mapping))
    assert batch.batch.user_attributes == {
        "price": 9.9,  # a Decimal attribute is stored as the JSON number it is sent as
        "ident": str(ident),
        "day": "2024-01-02",
        "at": "2024-01-02T00:00:00+00:00",
        "raw": "text",
        "flag": True,
    }
