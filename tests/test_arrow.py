"""The Arrow engine against the row path: byte-identical bodies, identical rejects and state.

The row path's input for an Arrow table is what ``RecordBatch.to_pylist()`` gives (after
nanosecond timestamps are truncated to microseconds): the engine must give exactly what the
row path gives for those rows.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from arrow_examples import arrow_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

import mparticle_feed as mpf  # noqa: E402
from mparticle_feed import pipeline  # noqa: E402
from mparticle_feed._mapping import arrow, arrow_columns  # noqa: E402
from mparticle_feed._mapping.provenance import events_part  # noqa: E402
from mparticle_feed._mapping.sources import Attributes, Computed, Constant  # noqa: E402
from mparticle_feed._mapping.spec import (  # noqa: E402
    CommerceEventMapping,
    CustomEventMapping,
    EventMapping,
    RowMapping,
    ScreenViewEventMapping,
    UserAttributeMapping,
)
from mparticle_feed._mapping.written import WrittenBatch  # noqa: E402
from mparticle_feed._sync.run import plan  # noqa: E402
from mparticle_feed._sync.state import StateEntry, StateStore  # noqa: E402
from mparticle_feed.testing import FakeEventsServer  # noqa: E402

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
BASE_MS = int((NOW - timedelta(hours=2)).timestamp() * 1000)


def reference_rows(table: Any, chunk: int) -> list[dict[str, Any]]:
    """What the row path reads for the table: each record batch's ``to_pylist()``."""
    rows: list[dict[str, Any]] = []
    for batch in table.to_batches(max_chunksize=chunk):
        rows.extend(arrow_columns.normalised(pa, batch).to_pylist())
    return rows


#: A clock under which part of the generated events (up to ~11.6 days before NOW) are 28
#: days old or more: routing splits batches between the endpoints.
LATER = NOW + timedelta(days=23)


def requests_of(items: Any) -> list[Any]:
    return [
        (item.endpoint, item.body, [b.sourced.rows for b in item.batches])
        if isinstance(item, pipeline.Request)
        else item
        for item in items
    ]


def outcome(source: Any, mapping: RowMapping, *, limit: int = 100) -> dict[str, Any]:
    run = mpf.map_rows(source, mapping, max_events_per_batch=limit)
    batches = list(run)
    requests = list(pipeline.pack(pipeline.route(iter(batches), now=NOW)))
    # Routing splits, and packing splits batches over 1,500 bytes (or refuses an event
    # alone over it): both cut written batches (events_part, on written events) as they cut models.
    split = pipeline.pack(pipeline.route(iter(batches), now=LATER), max_batch_bytes=1_500)
    return {
        "engine": run.engine,
        "written": sum(isinstance(sourced, WrittenBatch) for sourced in batches),
        "batches": [
            (mpf.dumps(sourced.batch), sourced.event_rows, sourced.rows) for sourced in batches
        ],
        "requests": requests_of(requests),
        "split": requests_of(split),
        "rejected": run.rejected,
        "counts": (run.rows_in, run.rows_mapped, run.rows_rejected, run.values_truncated),
    }


def assert_same(table: Any, mapping: RowMapping, *, chunk: int = 1000, limit: int = 100) -> str:
    rows = reference_rows(table, chunk)
    expected = outcome(rows, mapping, limit=limit)
    got = outcome(table.to_reader(max_chunksize=chunk), mapping, limit=limit)
    assert got["engine"] == "arrow"
    assert expected["engine"] == "rows"
    assert expected["written"] == 0
    for key in ("batches", "requests", "split", "rejected", "counts"):
        assert got[key] == expected[key], key
    engine = arrow.ArrowEngine(mapping._compiled)
    if engine.fallback is None and engine.writes and got["batches"]:
        assert got["written"] == len(got["batches"])  # the written path was taken
    return str(got["engine"])


# --- generated tables ---------------------------------------------------------------------------

ZONES = [None, "UTC", "Europe/Paris", "America/New_York", "+05:30"]
TEXTS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["", " ", " padded ", "\u2003x\u2003", "x" * 300, "y" * 4097, "é\x00"]),
)
INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1.5, 1e300]),
)


def timestamp_column(draw: Any, rows: int, *, clean: bool) -> tuple[Any, list[Any]]:
    near = st.integers(BASE_MS - 10**9, BASE_MS + 10**6)
    if clean:
        return pa.int64(), draw(st.lists(near, min_size=rows, max_size=rows))
    kind = draw(st.sampled_from(["int", "ts", "date", "text", "float"]))
    if kind == "int":
        values = draw(st.lists(st.one_of(near, st.none(), INT64), min_size=rows, max_size=rows))
        return pa.int64(), values
    if kind == "float":
        values = draw(
            st.lists(st.one_of(near.map(float), FLOATS, st.none()), min_size=rows, max_size=rows)
        )
        return pa.float64(), values
    if kind == "date":
        values = draw(st.lists(st.one_of(st.dates(), st.none()), min_size=rows, max_size=rows))
        return pa.date32(), values
    if kind == "text":
        values = draw(
            st.lists(
                st.one_of(
                    st.sampled_from(
                        ["2024-01-01T00:00:00Z", "2024-01-01", "nope", " 2024-03-05T01:02:03 "]
                    ),
                    st.none(),
                ),
                min_size=rows,
                max_size=rows,
            )
        )
        return pa.string(), values
    unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
    zone = draw(st.sampled_from(ZONES))
    per_unit = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[unit]
    raw = st.one_of(
        st.integers(-(10**9), 4 * 10**9).map(lambda s: s * per_unit),
        # Anywhere a Python datetime can hold (years 1 to 9999): what to_pylist() can give.
        st.integers(max(-6 * 10**10 * per_unit, -(2**63)), min(25 * 10**10 * per_unit, 2**63 - 1)),
        near.map(lambda m: m * per_unit // 1000),
    )
    values = draw(st.lists(st.one_of(raw, st.none()), min_size=rows, max_size=rows))
    return pa.timestamp(unit, tz=zone), values


ATTRIBUTE_TYPES: dict[str, tuple[Any, Any]] = {
    "text": (pa.string(), TEXTS),
    "large_text": (pa.large_string(), TEXTS),
    "int": (pa.int64(), INT64),
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "bool": (pa.bool_(), st.booleans()),
    "float": (pa.float64(), FLOATS),
    "float32": (pa.float32(), st.sampled_from([0.0, -0.0, 0.1, 3.5, float("nan")])),
    "decimal": (pa.decimal128(12, 3), st.decimals(min_value=-(10**8), max_value=10**8, places=3)),
    "date": (pa.date32(), st.dates()),
    "timestamp": (
        pa.timestamp("us", tz="Europe/Paris"),
        st.integers(0, 2 * 10**15),
    ),
    "naive_timestamp": (pa.timestamp("ms"), st.integers(0, 2 * 10**12)),
    "binary": (pa.binary(), st.binary(max_size=4)),
    "list": (
        pa.list_(pa.string()),
        st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=3),
    ),
}

BENIGN_TYPES: dict[str, tuple[Any, Any]] = {
    "text": (pa.string(), st.sampled_from(["a", "b", ""])),
    "int": (pa.int64(), st.integers(-2, 2)),
    "bool": (pa.bool_(), st.booleans()),
    "float": (pa.float64(), st.sampled_from([0.0, -0.0, 2.5])),
}


@st.composite
def tables(draw: Any, kind: str) -> tuple[Any, RowMapping, int, int]:
    # Clean tables (no value the row path rejects) exercise the engine's batching: long runs
    # of a user's rows, split at the event limit and where user attributes change.
    clean = draw(st.booleans())
    types = BENIGN_TYPES if clean else ATTRIBUTE_TYPES
    rows = draw(st.integers(0, 40 if clean else 14))
    users = draw(st.integers(1, 3))
    # Rows of a user come together mostly; each user's attribute values mostly repeat.
    who = sorted(draw(st.lists(st.integers(0, users - 1), min_size=rows, max_size=rows)))
    columns: dict[str, tuple[Any, list[Any]]] = {}
    key_type = draw(
        st.sampled_from(["text", "int", "float"] + (["none"] if kind == "user_attributes" else []))
    )
    if clean:
        key_type = "int"
    if key_type == "text":
        keys = draw(
            st.lists(st.one_of(st.text(max_size=4), st.none()), min_size=rows, max_size=rows)
        )
        columns["id"] = (pa.string(), keys)
    elif key_type == "int":
        columns["id"] = (pa.int64(), list(range(rows)))
    elif key_type == "float":
        columns["id"] = (
            pa.float64(),
            draw(st.lists(st.one_of(FLOATS, st.none()), min_size=rows, max_size=rows)),
        )

    identity_type = "clean" if clean else draw(st.sampled_from(["text", "int", "decimal", "float"]))
    pool = {
        "clean": (pa.string(), st.sampled_from(["u1", "u2", "u3"])),
        "text": (pa.string(), st.one_of(st.sampled_from(["u1", " u2 ", "", "  "]), st.none())),
        "int": (pa.int64(), st.one_of(st.integers(-5, 5), st.none())),
        "decimal": (pa.decimal128(5, 1), st.one_of(st.decimals(-99, 99, places=1), st.none())),
        "float": (pa.float64(), st.one_of(st.just(1.0), st.none())),
    }[identity_type]
    user_ids = draw(st.lists(pool[1], min_size=users, max_size=users))
    columns["cid"] = (pool[0], [user_ids[w] for w in who])
    emails = draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from(["a@x.io", "b@x.io"])),
            min_size=users,
            max_size=users,
        )
    )
    columns["email"] = (pa.string(), [emails[w] for w in who])

    user_attribute_types = draw(st.lists(st.sampled_from(sorted(types)), max_size=3, unique=True))
    user_map: dict[str, Any] = {}
    for name in user_attribute_types:
        tp, values = types[name]
        per_user = draw(st.lists(st.one_of(values, st.none()), min_size=users, max_size=users))
        column = [per_user[w] for w in who]
        if rows and draw(st.booleans()):
            column[draw(st.integers(0, rows - 1))] = draw(st.one_of(values, st.none()))
        columns[f"u_{name}"] = (tp, column)
        user_map[name] = f"u_{name}"

    event_attribute_types = draw(st.lists(st.sampled_from(sorted(types)), max_size=3, unique=True))
    event_map: dict[str, Any] = {}
    for name in event_attribute_types:
        tp, values = types[name]
        columns[f"e_{name}"] = (
            tp,
            draw(st.lists(st.one_of(values, st.none()), min_size=rows, max_size=rows)),
        )
        event_map[name] = f"e_{name}"

    columns["ts"] = timestamp_column(draw, rows, clean=clean)
    common: dict[str, Any] = {
        "primary_key": None if key_type == "none" else "id",
        "user_identities": {"customer_id": "cid", "email": "email"},
        "timezone": draw(st.sampled_from([None, "UTC", "Europe/Paris", "Asia/Kolkata"])),
        "epoch_unit": "ms" if clean else draw(st.sampled_from(["s", "ms", "us"])),
    }
    extra = draw(st.sampled_from(["none", "none", "none", "mpid", "computed", "prefix"]))
    if extra == "mpid":
        columns["mp"] = (
            pa.int64(),
            draw(st.lists(st.one_of(st.none(), st.integers(1, 9)), min_size=rows, max_size=rows)),
        )
        common["mpid"] = "mp"
    if kind == "user_attributes":
        if extra == "prefix":
            attributes = Attributes(columns=user_map, prefix="u_")
        else:
            attributes = Attributes(columns=user_map or {"fallback": "email"})
        mapping: RowMapping = UserAttributeMapping(user_attributes=attributes, **common)
    else:
        if user_map:
            common["user_attributes"] = user_map
        event_attributes: Any = event_map
        if extra == "computed":
            event_attributes = {**event_map, "computed": Computed(_row_width)}
        elif extra == "prefix":
            event_attributes = Attributes(columns=event_map, prefix="e_")
        name_type = draw(st.sampled_from(["text", "int", "constant"]))
        if name_type == "constant":
            event_name: Any = Constant(draw(st.sampled_from(["Viewed", "  ", "z" * 300])))
        else:
            tp = pa.string() if name_type == "text" else pa.int64()
            values = TEXTS if name_type == "text" else st.integers(-3, 3)
            columns["name"] = (
                tp,
                draw(st.lists(st.one_of(values, st.none()), min_size=rows, max_size=rows)),
            )
            event_name = "name"
        if kind == "custom_event":
            type_source: Any = Constant("other")
            if draw(st.booleans()):
                columns["type"] = (
                    pa.string(),
                    draw(
                        st.lists(
                            st.one_of(
                                st.none(),
                                st.sampled_from(["navigation", "other", "bogus", "Search"]),
                            ),
                            min_size=rows,
                            max_size=rows,
                        )
                    ),
                )
                type_source = "type"
            mapping = CustomEventMapping(
                event_name=event_name,
                custom_event_type=type_source,
                timestamp_unixtime_ms="ts",
                custom_attributes=event_attributes,
                **common,
            )
        else:
            products = draw(
                st.lists(
                    st.one_of(
                        st.none(),
                        st.lists(
                            st.fixed_dictionaries(
                                {
                                    "id": st.one_of(st.none(), st.sampled_from(["A", "B"])),
                                    "price": st.one_of(st.none(), FLOATS, st.integers(-5, 50)),
                                }
                            ),
                            max_size=2,
                        ),
                    ),
                    min_size=rows,
                    max_size=rows,
                )
            )
            if draw(st.booleans()):
                columns["products"] = (
                    pa.list_(pa.struct([("id", pa.string()), ("price", pa.float64())])),
                    [
                        None
                        if p is None
                        else [
                            {
                                **item,
                                "price": None if item["price"] is None else float(item["price"]),
                            }
                            for item in p
                        ]
                        for p in products
                    ],
                )
            else:
                columns["products"] = (
                    pa.string(),
                    [None if p is None else json.dumps(p) for p in products],
                )
            columns["total"] = (
                pa.decimal128(10, 2),
                draw(
                    st.lists(
                        st.one_of(st.none(), st.decimals(-999, 999, places=2)),
                        min_size=rows,
                        max_size=rows,
                    )
                ),
            )
            columns["location"] = (
                pa.struct([("latitude", pa.float64()), ("longitude", pa.float64())]),
                draw(
                    st.lists(
                        st.one_of(
                            st.none(),
                            st.fixed_dictionaries(
                                {"latitude": st.floats(-100, 100), "longitude": st.just(1.0)}
                            ),
                        ),
                        min_size=rows,
                        max_size=rows,
                    )
                ),
            )
            # The product action is a table of columns and constants, built column by
            # column: a required field null in some rows, a constant the model refuses.
            action_source: Any = Constant(
                draw(st.sampled_from(["purchase", "purchase", "refund", "bogus"]))
            )
            if draw(st.booleans()):
                columns["action"] = (
                    pa.string(),
                    draw(
                        st.lists(
                            st.one_of(
                                st.none(), st.sampled_from(["purchase", "add_to_cart", "bogus"])
                            ),
                            min_size=rows,
                            max_size=rows,
                        )
                    ),
                )
                action_source = "action"
            product_action: dict[str, Any] = {
                "action": action_source,
                "products": "products",
                "total_amount": "total",
            }
            if draw(st.booleans()):
                columns["txn"] = (
                    pa.int64(),
                    draw(
                        st.lists(
                            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
                            min_size=rows,
                            max_size=rows,
                        )
                    ),
                )
                product_action["transaction_id"] = "txn"
            if draw(st.booleans()):
                product_action["coupon_code"] = Constant(draw(st.sampled_from(["SAVE", 7])))
            mapping = CommerceEventMapping(
                event_name=event_name if draw(st.booleans()) else None,
                timestamp_unixtime_ms="ts",
                custom_attributes=event_attributes,
                product_action=product_action,
                location="location",
                **common,
            )
    table = pa.table({name: pa.array(values, type=tp) for name, (tp, values) in columns.items()})
    return table, mapping, draw(st.integers(1, 6)), draw(st.integers(1, 4))


def _row_width(row: Any) -> int:
    return len(row)


EXAMPLES = arrow_settings(80)


@EXAMPLES
@given(tables("custom_event"))
def test_custom_events_are_byte_identical_to_the_row_path(case: Any) -> None:
    table, mapping, chunk, limit = case
    assert_same(table, mapping, chunk=chunk, limit=limit)


@EXAMPLES
@given(tables("commerce_event"))
def test_commerce_events_are_byte_identical_to_the_row_path(case: Any) -> None:
    table, mapping, chunk, limit = case
    assert_same(table, mapping, chunk=chunk, limit=limit)


@EXAMPLES
@given(tables("user_attributes"))
def test_user_attributes_are_byte_identical_to_the_row_path(case: Any) -> None:
    table, mapping, chunk, _ = case
    assert_same(table, mapping, chunk=chunk)


def compared_by_content(first: Any) -> list[StateEntry]:
    """A plan's entries without source digests: every row reaches the differ, which compares
    the mapped content (unchanged rows are not skipped before mapping)."""
    return [attrs.evolve(entry, source=None) for entry in first.entries.values()]


def plan_outcome(
    source: Any, mapping: RowMapping, accepted: Iterable[StateEntry] = ()
) -> tuple[Any, ...]:
    """What a plan over a state holding ``accepted`` holds: bodies, rejects, entries, counts."""
    with (
        tempfile.TemporaryDirectory() as directory,
        StateStore(Path(directory) / "s.sqlite") as state,
    ):
        state.record_accepted("things", accepted)
        result = plan(source, mapping, state=state, name="things", now=NOW)
    return (
        [(r.endpoint, r.body) for r in result.requests],
        result.rejects,
        dict(result.entries),
        result.settled,
        result.unchanged,
        result.rows_in,
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["custom_event", "commerce_event", "user_attributes"]).flatmap(tables))
def test_plans_and_state_entries_are_identical(case: Any) -> None:
    table, mapping, chunk, _ = case
    expected = plan_outcome(reference_rows(table, chunk), mapping)
    assert plan_outcome(table.to_reader(max_chunksize=chunk), mapping) == expected


# --- examples ----------------------------------------------------------------------------------

MAPPING = CustomEventMapping(
    primary_key="id",
    user_identities={"customer_id": "user"},
    user_attributes={"plan": "plan", "score": "score"},
    event_name="name",
    timestamp_unixtime_ms="ts",
    custom_attributes={"value": "value"},
)


def example_table(rows: int = 250) -> Any:
    return pa.table(
        {
            "id": [f"r{n}" for n in range(rows)],
            "user": [f"u{n // 40}" for n in range(rows)],
            "plan": ["pro" if (n // 40) % 2 else "free" for n in range(rows)],
            "score": [float(n // 80) for n in range(rows)],
            "name": ["Viewed" if n % 7 else "  " for n in range(rows)],
            "ts": pa.array([BASE_MS + n for n in range(rows)], pa.int64()),
            "value": [n if n % 11 else None for n in range(rows)],
        }
    )


def test_every_kind_of_source_is_read_as_arrow() -> None:
    table = example_table()
    for source in (table, table.to_batches()[0], table.to_reader(max_chunksize=33)):
        assert mpf.map_rows(source, MAPPING).engine == "arrow"
    duckdb = pytest.importorskip("duckdb")
    connection = duckdb.connect()
    relation = connection.sql("select 1 as id, 'u' as user, 'x' as name, 1 as ts")
    assert arrow.arrow_source_reader(relation) is not None
    assert arrow.arrow_source_reader([{"id": 1}]) is None
    # A cursor stays a cursor, as rows_from reads it, even one that can hand over Arrow.
    assert arrow.arrow_source_reader(connection.execute("select 1")) is None


def test_rejects_name_the_row_and_the_field_as_the_row_path_does() -> None:
    table = example_table()
    run = mpf.map_rows(table.to_reader(max_chunksize=50), MAPPING)
    batches = list(run)
    assert run.rows_rejected == len([n for n in range(250) if n % 7 == 0])
    assert {(p.field, p.reason) for p in run.rejected} == {("event_name", "event name is empty")}
    assert [p.row.row_number for p in run.rejected][:3] == [1, 8, 15]
    assert run.rows_in == run.rows_mapped + run.rows_rejected == 250
    assert sum(len(b.event_rows) for b in batches) == run.rows_mapped
    assert_same(table, MAPPING, chunk=50)


def test_duplicate_column_names_are_refused() -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(mpf.MappingError, match="several columns named 'a'"):
        mpf.map_rows(table, MAPPING)


def test_strict_mode_raises_on_the_first_flagged_row() -> None:
    run = mpf.map_rows(example_table(), MAPPING, strict=True)
    with pytest.raises(mpf.RowError, match="row 1"):
        list(run)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"mpid": "user"}, "mpid"),
        ({"custom_attributes": {"computed": Computed(_row_width)}}, "a computed source"),
        ({"custom_attributes": Attributes(remaining=True)}, "custom_attributes: a prefix"),
        ({"device_identities": {"ios_idfv": "user"}}, "device identities"),
    ],
)
def test_unvectorised_features_send_whole_batches_through_the_row_path(
    change: dict[str, Any], reason: str
) -> None:
    mapping = CustomEventMapping(
        **{
            "primary_key": "id",
            "user_identities": {"customer_id": "user"},
            "event_name": "name",
            "timestamp_unixtime_ms": "ts",
            **change,
        }
    )
    assert (arrow.unvectorised(mapping._compiled) or "").startswith(reason)
    assert_same(example_table(60), mapping, chunk=25)


def test_mapping_kinds_the_engine_does_not_know_go_through_the_row_path() -> None:
    # A screen view's name is required: a null one is rejected (not a crash), as on rows.
    table = example_table(40)
    names = [None if n % 3 == 0 else f"Screen {n % 4}" for n in range(table.num_rows)]
    table = table.append_column("screen", pa.array(names, pa.string()))
    screens = ScreenViewEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        screen_name="screen",
        timestamp_unixtime_ms="ts",
    )
    assert arrow.unvectorised(screens._compiled) == "the mapping kind 'screen_view'"
    assert_same(table, screens, chunk=7)
    events = EventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_type=Constant("screen_view"),
        data={"screen_name": "screen"},
        timestamp_unixtime_ms="ts",
    )
    assert arrow.unvectorised(events._compiled) == "the mapping kind 'event'"
    assert_same(table, events, chunk=7)


def test_a_missing_column_is_one_error_before_any_row_as_on_the_row_path() -> None:
    table = example_table(5).drop_columns(["ts"])
    with pytest.raises(mpf.MappingError, match="'ts'") as arrow_error:
        mpf.map_rows(table, MAPPING)
    with pytest.raises(mpf.MappingError) as rows_error:
        mpf.map_rows(mpf.rows_from(table), MAPPING)
    assert str(arrow_error.value) == str(rows_error.value)


def test_without_pyarrow_the_row_path_serves_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = reference_rows(example_table(), 1000)
    expected = outcome(rows, MAPPING)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now raises ImportError
    assert arrow._pyarrow() is None
    assert arrow.arrow_source_reader(example_table()) is None
    got = outcome(rows, MAPPING)
    assert got == expected
    assert got["engine"] == "rows"


def test_sync_over_arrow_records_the_same_state_and_sends_nothing_the_second_time(
    tmp_path: Path,
) -> None:
    table = example_table()
    rows = reference_rows(table, 1000)
    stored: list[dict[str, Any]] = []
    for label, source in (("rows", rows), ("arrow", table)):
        with (
            FakeEventsServer(now=lambda: NOW) as server,
            mpf.EventsClient(
                "test-key", "test-secret", base_url=server.url, max_workers=1
            ) as client,
            StateStore(tmp_path / f"{label}.sqlite") as state,
        ):
            first = mpf.sync(source, MAPPING, client, state=state, name="t", now=NOW)
            second = mpf.sync(
                table if label == "arrow" else rows, MAPPING, client, state=state, name="t", now=NOW
            )
            keys = [f"r{n}" for n in range(250)]
            stored.append(
                {
                    "entries": state.get_many("t", keys),
                    "first": (first.sent, first.rejected, first.unchanged),
                    "second": (second.sent, second.rejected, second.unchanged),
                }
            )
    assert stored[0] == stored[1]
    assert stored[1]["second"][0] == 0
    assert stored[1]["second"][2] > 0


def test_dates_decimals_and_lists_reach_the_wire_as_the_row_path_sends_them() -> None:
    table = pa.table(
        {
            "id": ["a", "b"],
            "user": ["u", "u"],
            "day": pa.array([date(2024, 1, 2), None], pa.date32()),
            "amount": pa.array([Decimal("1.50"), Decimal("-0.00")], pa.decimal128(5, 2)),
            "tags": pa.array([["x", None], []], pa.list_(pa.string())),
            "name": ["n", "n"],
            "ts": pa.array([BASE_MS, BASE_MS], pa.timestamp("ms", tz="UTC")),
        }
    )
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        user_attributes={"tags": "tags"},
        event_name="name",
        timestamp_unixtime_ms="ts",
        custom_attributes={"day": "day", "amount": "amount"},
    )
    assert_same(table, mapping)


@pytest.mark.parametrize("policy", ["report", "block"])
def test_a_data_plan_validates_the_engines_batches_as_the_row_paths(policy: Any) -> None:
    pytest.importorskip("fastjsonschema")
    plan_path = Path(__file__).resolve().parents[1] / "examples" / "shop_data_plan.json"
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        custom_event_type=Constant("transaction"),
        timestamp_unixtime_ms="ts",
        custom_attributes={"order_id": "order", "total": "total"},
        data_plan=plan_path,
    )
    assert arrow.unvectorised(mapping._compiled) is None
    rows = 30
    table = pa.table(
        {
            "id": [f"r{n}" for n in range(rows)],
            "user": [f"u{n // 4}" for n in range(rows)],
            "name": ["Order Placed" if n % 5 else "Unplanned" for n in range(rows)],
            "ts": pa.array([BASE_MS + n for n in range(rows)], pa.int64()),
            "order": [None if n % 7 == 0 else f"o{n}" for n in range(rows)],
            "total": [float(n - 3) for n in range(rows)],
        }
    )
    results = []
    for source in (reference_rows(table, 8), table.to_reader(max_chunksize=8)):
        run = mpf.map_rows(source, mapping, data_plan_policy=policy)
        batches = [(mpf.dumps(s.batch), s.event_rows, s.rows) for s in run]
        results.append((batches, run.rejected, run.violations, run.rows_in, run.rows_mapped))
    assert results[0] == results[1]
    assert results[1][2]  # the plan found violations


def test_slices_of_a_record_batch_continue_row_numbers_and_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(arrow, "SLICE_ROWS", 7)
    table = example_table()
    assert_same(table, MAPPING, chunk=100, limit=5)
    run = mpf.map_rows(table, MAPPING)
    numbers = [ref.row_number for sourced in run for ref in sourced.rows]
    rejected = [problem.row.row_number for problem in run.rejected]
    assert sorted(numbers + rejected) == list(range(1, 251))


@st.composite
def product_action_tables(draw: Any) -> tuple[Any, RowMapping, int]:
    """Clean rows whose product action, a table of columns and constants, varies: the part
    the engine builds column by column (required fields null, values the models refuse)."""
    rows = draw(st.integers(1, 12))

    def column(values: Any) -> list[Any]:
        return draw(st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows))

    columns: dict[str, Any] = {
        "id": pa.array([f"r{n}" for n in range(rows)]),
        "cid": pa.array([f"u{n // 3}" for n in range(rows)]),
        "ts": pa.array([BASE_MS + n for n in range(rows)], pa.int64()),
        "total": pa.array(column(FLOATS), pa.float64()),
        "txn": pa.array(column(st.one_of(INT64, st.integers(-3, 3))), pa.int64()),
        "code": pa.array(column(TEXTS), pa.string()),
    }
    product_action: dict[str, Any] = {"total_amount": "total", "transaction_id": "txn"}
    if draw(st.booleans()):
        columns["action"] = pa.array(
            column(st.sampled_from(["purchase", "refund", "bogus", " purchase "])), pa.string()
        )
        product_action["action"] = "action"
    else:
        product_action["action"] = Constant(draw(st.sampled_from(["purchase", "bogus", None])))
    product_action["coupon_code"] = draw(
        st.sampled_from(["code", Constant("SAVE"), Constant(7), Constant(None)])
    )
    mapping = CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        timestamp_unixtime_ms="ts",
        product_action=dict(draw(st.permutations(list(product_action.items())))),
    )
    return pa.table(columns), mapping, draw(st.integers(1, 5))


@EXAMPLES
@given(product_action_tables())
def test_product_actions_built_column_by_column_are_byte_identical(case: Any) -> None:
    table, mapping, chunk = case
    assert arrow.unvectorised(mapping._compiled) is None
    assert "product_action" in mapping._compiled.struct_plans
    assert_same(table, mapping, chunk=chunk)


# --- events written as data (WrittenBatch) ------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables("custom_event"), st.integers(2, 4))
def test_a_second_run_compares_written_events_with_the_state_as_the_row_path(
    case: Any, every: int
) -> None:
    table, mapping, chunk, _ = case
    # The second run moves every few rows' timestamp: the differ keeps those events and
    # cuts the rest out of their batches (events_part, on written events), hashing each event.
    stamps = table.column("ts")
    rows = len(stamps)
    # Taken in Arrow: a nanosecond value need not survive a trip through Python (pandas may
    # hand back NaT for the oldest ones).
    changed = stamps.take(
        pa.array(
            [index if index % every else (index + 1) % rows for index in range(rows)], pa.int64()
        )
    )
    again = table.set_column(table.schema.get_field_index("ts"), "ts", changed)
    with tempfile.TemporaryDirectory() as directory:
        with StateStore(Path(directory) / "first.sqlite") as state:
            first = plan(reference_rows(table, chunk), mapping, state=state, name="things", now=NOW)
        expected = plan_outcome(reference_rows(again, chunk), mapping, compared_by_content(first))
        got = plan_outcome(
            again.to_reader(max_chunksize=chunk), mapping, compared_by_content(first)
        )
    assert got == expected


def test_a_written_batch_stands_for_the_row_paths_batch() -> None:
    table = example_table(60)
    written = list(mpf.map_rows(table, MAPPING))
    plain = list(mpf.map_rows(reference_rows(table, 1000), MAPPING))
    assert all(isinstance(sourced, WrittenBatch) for sourced in written)
    assert not any(isinstance(sourced, WrittenBatch) for sourced in plain)
    assert written == plain
    assert plain == written
    # Pickled (a distributed engine's task result) as the plain sourced batch.
    copied = pickle.loads(pickle.dumps(written[0]))
    assert type(copied) is pipeline.SourcedBatch
    assert copied == plain[0]
    first = written[0]
    part = events_part(first, [0, 2])
    assert isinstance(part, WrittenBatch)
    assert part.event_rows == (first.event_rows[0], first.event_rows[2])
    assert part.batch.events == (plain[0].batch.events[0], plain[0].batch.events[2])
    assert part.batch.user_identities == plain[0].batch.user_identities


def test_written_path_is_taken_only_where_it_is_proven() -> None:
    assert arrow.ArrowEngine(MAPPING._compiled).writes
    session = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="ts",
        source_message_id="id",
        session_uuid=Constant("6a3c8f2e-1b7d-4c1a-9f0e-2d5b7c9e1f30"),
    )
    assert arrow.ArrowEngine(session._compiled).writes
    assert_same(example_table(60), session, chunk=25)
    located = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="ts",
        location={"latitude": Constant(1.0), "longitude": Constant(2.0)},
    )
    # A nested model is not written as data: its events are models, as before.
    assert not arrow.ArrowEngine(located._compiled).writes
    assert_same(example_table(60), located, chunk=25)
    # A date attribute: that slice's events are models, carried in the same batches.
    table = example_table(30).append_column("day", pa.array([date(2024, 1, 2)] * 30))
    dated = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="ts",
        custom_attributes={"day": "day", "score": "score"},
    )
    assert_same(table, dated, chunk=10)
    batches = list(mpf.map_rows(table, dated))
    assert batches
    for sourced in batches:
        assert isinstance(sourced, WrittenBatch)
        assert all(isinstance(event, mpf.CustomEvent) for event in sourced.blobs)


def test_routing_packing_and_the_differ_read_written_events_without_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table = example_table()
    with StateStore(tmp_path / "first.sqlite") as state:
        first = plan(reference_rows(table, 1000), MAPPING, state=state, name="things", now=NOW)
    expected = plan_outcome(reference_rows(table, 1000), MAPPING, compared_by_content(first))

    def no_models(self: WrittenBatch) -> Any:
        raise AssertionError("a written batch built its models")

    monkeypatch.setattr(WrittenBatch, "batch", property(no_models))
    # Routed (all historical, 29 days on) and packed with splits by size, then planned over
    # an empty state and over the first run's (the differ's hashes).
    later = NOW + timedelta(days=29)
    split = list(
        pipeline.pack(pipeline.route(mpf.map_rows(table, MAPPING), now=later), max_batch_bytes=600)
    )
    requests = [item for item in split if isinstance(item, pipeline.Request)]
    assert {request.endpoint for request in requests} == {mpf.Endpoint.HISTORICAL}
    assert sum(len(request.batches) for request in requests) > len(
        list(mpf.map_rows(table, MAPPING))
    )
    with StateStore(tmp_path / "arrow-first.sqlite") as state:
        plan(table, MAPPING, state=state, name="things", now=NOW)
    assert plan_outcome(table, MAPPING, compared_by_content(first)) == expected


def test_a_written_batch_refuses_events_and_rows_that_do_not_pair() -> None:
    with pytest.raises(mpf.ModelError, match="2 events but 1 event_rows"):
        WrittenBatch(
            header=mpf.Batch(environment=mpf.Environment.DEVELOPMENT),
            written=(b"{}", b"{}"),
            event_cls=mpf.CustomEvent,
            event_rows=(pipeline.RowRef(row_number=1),),
            rows=(pipeline.RowRef(row_number=1),),
        )


@pytest.mark.parametrize("window", [0, 1000])
def test_a_duplicate_key_row_counts_no_truncation_on_either_path(window: int) -> None:
    import pyarrow as pa

    from mparticle_feed._mapping.run import MappingRun

    long_name = "n" * 300  # cut to 256 characters: one value truncated per kept row
    table = pa.table(
        {
            "id": ["a", "b", "a", "c", "b"],
            "user": ["u1", "u1", "u1", "u2", "u2"],
            "name": [long_name] * 5,
            "ts": [BASE_MS + n for n in range(5)],
        }
    )
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "user"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    )

    def counts(source: Any) -> tuple[int, int, int, int]:
        seen: dict[str, int] = {}

        def key_check(key: str, row: int) -> int | None:
            first = seen.get(key)
            if first is None:
                seen[key] = row
            return first

        run = MappingRun(source, mapping, key_check=key_check, group_window=window)
        list(run)
        return run.rows_in, run.rows_mapped, run.rows_rejected, run.values_truncated

    expected = counts(table.to_pylist())
    assert expected == (5, 3, 2, 3)
    assert counts(table.to_reader()) == expected


def test_rows_and_cursors_never_import_pyarrow() -> None:
    """pyarrow costs tens of megabytes: only an Arrow-shaped source imports it."""
    script = """
import sqlite3, sys, tempfile, pathlib
import mparticle_feed as mpf
mapping = mpf.CustomEventMapping(primary_key="id", user_identities={"customer_id": "user"},
    event_name=mpf.Constant("Thing"), timestamp_unixtime_ms="ts")
rows = [{"id": str(n), "user": "u", "ts": 1767225600000} for n in range(3)]
list(mpf.map_rows(rows, mapping))
db = sqlite3.connect(":memory:")
db.execute("create table t (id text, user text, ts integer)")
db.executemany("insert into t values (:id, :user, :ts)", rows)
list(mpf.map_rows(db.execute("select * from t"), mapping))
with tempfile.TemporaryDirectory() as folder:
    mpf.plan(rows, mapping, state=pathlib.Path(folder) / "s.sqlite")
assert "pyarrow" not in sys.modules, "pyarrow was imported"
"""
    subprocess.run([sys.executable, "-c", script], check=True)


@pytest.mark.parametrize("zeros", [[0.0, -0.0], [-0.0, 0.0, 0.0, -0.0], [0.0, None, -0.0]])
def test_float_zero_user_attributes_keep_each_rows_sign_as_on_the_row_path(
    zeros: list[Any],
) -> None:
    # 0.0 == -0.0, as values and in Arrow, but they are written apart: the batch's merged
    # attributes hold the last row's value, so a run must not lend its first row's to the rest.
    rows = len(zeros)
    table = pa.table(
        {
            "id": [f"r{n}" for n in range(rows)],
            "cid": ["u"] * rows,
            "ts": [BASE_MS + n for n in range(rows)],
            "name": ["e"] * rows,
            "ltv": pa.array(zeros, pa.float64()),
        }
    )
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        user_attributes={"ltv": "ltv"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    )
    assert_same(table, mapping, chunk=rows)
