"""The Arrow engine's written data against the row path: commerce events written without models
(product actions and product lists), batch headers written without a Batch model, and runs
of rows joining their batch in one step (``RegroupWindow.push_more``)."""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from arrow_examples import arrow_settings
from hypothesis import example, given
from hypothesis import strategies as st

pa = pytest.importorskip("pyarrow")

from test_arrow import (  # noqa: E402
    BASE_MS,
    FLOATS,
    INT64,
    NOW,
    TEXTS,
    assert_same,
    compared_by_content,
    plan_outcome,
    reference_rows,
)

import mparticle_feed as mpf  # noqa: E402
from mparticle_feed import pipeline  # noqa: E402
from mparticle_feed._mapping import arrow, written_structs  # noqa: E402
from mparticle_feed._mapping.arrow_columns import Columns  # noqa: E402
from mparticle_feed._mapping.arrow_slice import dict_maker  # noqa: E402
from mparticle_feed._mapping.compile import _KnownMapped, _Mapped  # noqa: E402
from mparticle_feed._mapping.provenance import events_part  # noqa: E402
from mparticle_feed._mapping.sources import Constant  # noqa: E402
from mparticle_feed._mapping.spec import CommerceEventMapping, CustomEventMapping  # noqa: E402
from mparticle_feed._mapping.written import WrittenBatch  # noqa: E402
from mparticle_feed._mapping.written_header import known_header, written_header  # noqa: E402
from mparticle_feed._sync.run import plan  # noqa: E402
from mparticle_feed._sync.state import StateStore  # noqa: E402

SETTINGS = arrow_settings(60)

#: Raw product values: what the written path keeps, and what it hands to the row path.
PRICES = st.one_of(
    FLOATS,
    st.integers(-5, 50),
    INT64,
    st.integers(2**63, 2**70),
    st.booleans(),
    st.sampled_from(["1.5", "x", "19.99"]),
)
PRODUCT_VALUES: dict[str, Any] = {
    "id": st.one_of(TEXTS, st.integers(-3, 3)),
    "name": TEXTS,
    "brand": st.sampled_from(["b", ""]),
    "position": st.one_of(st.integers(-3, 3), INT64, st.integers(2**63, 2**64), st.just(1.5)),
    "price": PRICES,
    "quantity": PRICES,
    "total_product_amount": PRICES,
    "added_to_cart_time_ms": st.one_of(st.integers(0, 2**41), st.just("2024-01-01T00:00:00Z")),
    "custom_attributes": st.one_of(
        st.dictionaries(st.sampled_from(["k", "l"]), st.one_of(TEXTS, st.integers(0, 3))),
        st.just("not a map"),
    ),
    "unknown": st.just(1),
}


#: The product action's writer of a commerce mapping whose products are JSON text.
PRODUCTS_WRITER = arrow.ArrowEngine(
    CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        timestamp_unixtime_ms="ts",
        product_action={"action": Constant("purchase"), "products": "products"},
    )._compiled
).struct_writers["product_action"]


@st.composite
def products(draw: Any) -> Any:
    """A product: a dict of some fields, in any order, nulls included (now and then a key no
    product has)."""
    known = sorted(name for name in PRODUCT_VALUES if name != "unknown")
    names = draw(st.lists(st.sampled_from(known), max_size=5, unique=True))
    if draw(st.integers(0, 9)) == 0:
        names.insert(draw(st.integers(0, len(names))), "unknown")
    return {name: draw(st.one_of(st.none(), PRODUCT_VALUES[name])) for name in names}


#: Values the column-wise reading of JSON text takes as they are, and their near misses.
CLEAN_TEXTS = st.text("ab é\u2028-", max_size=5)
CLEAN_NUMBERS = st.one_of(st.integers(-99, 99), st.integers(-999, 999).map(lambda c: c / 100))
PLAIN_TEXTS = st.one_of(
    CLEAN_TEXTS,
    CLEAN_TEXTS,
    CLEAN_TEXTS,
    st.text(st.characters(codec="utf-8"), max_size=5),
    st.text("ab é,:-", max_size=5),
    st.sampled_from(["a, b", "a:b", "a: b", "a,", ":", "é\u2028\x7f", 'q"', "\\", "}, {"]),
)
PLAIN_NUMBERS = st.one_of(
    CLEAN_NUMBERS,
    CLEAN_NUMBERS,
    CLEAN_NUMBERS,
    st.integers(-(10**16), 10**16),
    st.integers(0, 9).flatmap(
        lambda places: st.decimals(-(10**7), 10**7, places=places).map(float)
    ),
    st.floats(-1e7, 1e7).map(lambda value: round(value, 3)),
    st.sampled_from([0.0, -0.0, 2.0, 1e-5, 0.0001, 1e16, 1234567.5, 0.30000000000000004]),
)


@st.composite
def plain_products(draw: Any) -> Any:
    """A product of text and decimal fields in field order (what the column-wise reading
    writes as it is read), with now and then a value it must leave to the writer."""
    names = ["id", "name", "brand", "price", "quantity", "total_product_amount"]
    chosen = [name for name in names if draw(st.booleans())] or ["id"]
    return {
        name: draw(
            st.one_of(
                PLAIN_NUMBERS if "_" in name or name in ("price", "quantity") else PLAIN_TEXTS,
                st.just(None) if draw(st.integers(0, 9)) == 0 else st.nothing(),
            )
        )
        for name in chosen
    }


def product_text(draw: Any) -> Any:
    """A row's products: JSON text of a list, and now and then a value the row path reads
    otherwise (one object, an empty list, null items, text that is not JSON, duplicate keys),
    written with any of the separators warehouses write."""
    kind = draw(
        st.sampled_from(
            ["list"] * 3 + ["plain"] * 6 + ["object", "empty", "null item", "bad", "none", "twice"]
        )
    )
    if kind == "none":
        return None
    if kind == "bad":
        return "[{"
    if kind == "empty":
        return "[]"
    if kind == "object":
        return json.dumps(draw(products()))
    if kind == "twice":
        return '[{"id": "a", "name": "b", "id": "c"}]'
    items: list[Any] = draw(
        st.lists(plain_products() if kind == "plain" else products(), min_size=1, max_size=3)
    )
    if kind == "null item":
        items.append(None)
    separators = draw(st.sampled_from([(", ", ": "), (",", ":"), (",", ": "), (" ,", " : ")]))
    ascii_only = draw(st.integers(0, 3)) == 0
    return json.dumps(items, separators=separators, ensure_ascii=ascii_only)


@SETTINGS
@given(st.data(), st.sampled_from(["string", "large_string"]))
def test_product_lists_read_column_wise_are_what_the_writer_writes(data: Any, kind: str) -> None:
    texts = [product_text(data.draw) for _ in range(data.draw(st.integers(1, 12)))]
    writer = PRODUCTS_WRITER.lists["products"]
    batch = pa.RecordBatch.from_arrays([pa.array(texts, getattr(pa, kind)())], ["p"])
    # Read in slices, as the engine reads a record batch: the text is matched once, over
    # the whole batch, and each slice reads its own rows' matches.
    cut = data.draw(st.integers(0, len(texts)))
    matches: dict[tuple[str, str], Any] = {}
    read = []
    for start, end in [(0, cut), (cut, len(texts))]:
        part = Columns(pa, batch.slice(start, end - start), batch, start, matches)
        written = written_structs._texts_written(part, "p", writer)
        assert written is not None
        read.extend(written)
    assert read == written_structs._each(texts, writer.written_list)


def test_product_lists_read_column_wise_where_the_text_proves_them() -> None:
    writer = PRODUCTS_WRITER.lists["products"]
    pattern = re.compile(writer.list_pattern or "")
    products = [{"id": "sku-1", "name": "Product 1", "price": 4.99, "quantity": 2}]
    for separators in [(", ", ": "), (",", ":")]:
        assert pattern.match(json.dumps(products, separators=separators))
    for refused in [
        [{"name": "Product 1", "id": "sku-1"}],  # not in field order: the writer orders it
        [{"id": "a, b"}],  # a separator in the text
        [{"id": "x", "price": 2.0}],  # integral: written as an int
        [{"id": "x", "price": 1e-05}],  # orjson writes 0.00001
        [{"id": "x", "position": 1}],  # not a text or decimal field
        [{"id": "x", "price": None}],
        [],
    ]:
        assert not pattern.match(json.dumps(refused))


@st.composite
def commerce_tables(draw: Any) -> tuple[Any, CommerceEventMapping, int, int]:
    """Commerce events whose every field the engine writes as data: products as JSON text
    or as an Arrow list of structs, a product action of columns and constants."""
    rows = draw(st.integers(0, 14))
    users = draw(st.integers(1, 3))
    who = sorted(draw(st.lists(st.integers(0, users - 1), min_size=rows, max_size=rows)))

    def column(values: Any) -> list[Any]:
        drawn: list[Any] = draw(
            st.lists(st.one_of(st.none(), values), min_size=rows, max_size=rows)
        )
        return drawn

    columns: dict[str, Any] = {
        "id": pa.array([f"r{n}" for n in range(rows)], pa.string()),
        "cid": pa.array([f"u{w}" for w in who], pa.string()),
        "ts": pa.array([BASE_MS + n for n in range(rows)], pa.int64()),
        "total": pa.array(column(FLOATS), pa.float64()),
        "txn": pa.array(column(TEXTS), pa.string()),
        "plan": pa.array([draw(st.sampled_from(["a", "b"])) for _ in who], pa.string()),
        "score": pa.array(column(st.integers(-3, 3)), pa.int64()),
    }
    if draw(st.booleans()):
        columns["products"] = pa.array([product_text(draw) for _ in range(rows)], pa.string())
    else:
        struct = pa.struct([("id", pa.string()), ("price", pa.float64()), ("quantity", pa.int64())])
        item = st.fixed_dictionaries(
            {
                "id": st.one_of(st.none(), st.sampled_from(["A", "B"])),
                "price": st.one_of(st.none(), FLOATS),
                "quantity": st.one_of(st.none(), st.integers(-2, 9), INT64),
            }
        )
        columns["products"] = pa.array(
            column(
                st.lists(st.one_of(item, st.none()) if draw(st.booleans()) else item, max_size=3)
            ),
            pa.list_(struct),
        )
    action: Any = Constant(draw(st.sampled_from(["purchase", "refund", "bogus"])))
    if draw(st.booleans()):
        columns["action"] = pa.array(
            column(st.sampled_from(["purchase", "add_to_cart", "bogus"])), pa.string()
        )
        action = "action"
    product_action = {
        "action": action,
        "products": "products",
        "total_amount": "total",
        "transaction_id": "txn",
    }
    mapping = CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        user_attributes={"plan": "plan"},
        timestamp_unixtime_ms="ts",
        custom_attributes={"score": "score"} if draw(st.booleans()) else None,
        event_name=Constant("Bought") if draw(st.booleans()) else None,
        product_action=dict(draw(st.permutations(list(product_action.items())))),
    )
    return pa.table(columns), mapping, draw(st.integers(1, 6)), draw(st.integers(1, 4))


@SETTINGS
@given(commerce_tables())
def test_commerce_events_written_as_data_are_byte_identical(case: Any) -> None:
    table, mapping, chunk, limit = case
    engine = arrow.ArrowEngine(mapping._compiled)
    assert engine.fallback is None
    assert engine.writes
    assert set(engine.struct_writers) == {"product_action"}
    assert_same(table, mapping, chunk=chunk, limit=limit)


@arrow_settings(30)
@given(commerce_tables(), st.integers(2, 4))
def test_written_commerce_events_give_the_row_paths_plans_and_state_entries(
    case: Any, every: int
) -> None:
    table, mapping, chunk, _ = case
    expected = plan_outcome(reference_rows(table, chunk), mapping)
    assert plan_outcome(table.to_reader(max_chunksize=chunk), mapping) == expected
    # A second run where every few rows' total changed: the differ hashes written events
    # and written headers, and keeps or cuts events as for the row path's models.
    with (
        tempfile.TemporaryDirectory() as directory,
        StateStore(Path(directory) / "first.sqlite") as state,
    ):
        first = plan(reference_rows(table, chunk), mapping, state=state, name="things", now=NOW)
        totals = table.column("total").to_pylist()
        moved = [
            None if value is None or n % every else value + 1 for n, value in enumerate(totals)
        ]
        changed = table.set_column(
            table.schema.get_field_index("total"), "total", pa.array(moved, pa.float64())
        )
        rows = plan_outcome(reference_rows(changed, chunk), mapping, compared_by_content(first))
        arrow_plan = plan_outcome(
            changed.to_reader(max_chunksize=chunk), mapping, compared_by_content(first)
        )
    assert arrow_plan == rows


def test_a_written_commerce_batch_stands_for_the_row_paths_batch() -> None:
    products = [
        {"id": "A", "price": 19.99, "quantity": 2},
        {"price": 3.0, "name": "B", "custom_attributes": {"k": "v"}, "position": 2},
    ]
    table = pa.table(
        {
            "id": ["r1", "r2", "r3"],
            "cid": ["u1", "u1", "u2"],
            "ts": [BASE_MS, BASE_MS + 1, BASE_MS + 2],
            "products": [json.dumps(products)] * 3,
            "total": [42.0, 0.5, -0.0],
        }
    )
    mapping = _purchases()
    written = list(mpf.map_rows(table, mapping))
    plain = list(mpf.map_rows(reference_rows(table, 1000), mapping))
    assert all(isinstance(sourced, WrittenBatch) for sourced in written)
    assert all(
        blob.__class__ is bytes
        for sourced in written
        for blob in sourced.blobs  # type: ignore[attr-defined]
    )
    assert written == plain
    assert [mpf.dumps(s.batch) for s in written] == [mpf.dumps(s.batch) for s in plain]
    copied = pickle.loads(pickle.dumps(written[0]))
    assert type(copied) is pipeline.SourcedBatch
    assert copied == plain[0]
    part = events_part(written[0], [1])
    assert part.batch.events == (plain[0].batch.events or ())[1:]


# --- headers written without a model ------------------------------------------------------------

ATTRIBUTE_VALUES = st.one_of(
    TEXTS, INT64, st.booleans(), FLOATS, st.none(), st.decimals(allow_nan=False, places=2)
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["customer_id", "email", "other", "mobile_number"]), TEXTS, min_size=1
    ),
    st.dictionaries(st.text(min_size=1, max_size=3), ATTRIBUTE_VALUES, max_size=4),
    st.sampled_from([None, mpf.Environment.PRODUCTION, mpf.Environment.DEVELOPMENT]),
)
# The user key is cut from the header after its identities' key: values holding that text.
@example(
    {"customer_id": '"user_identities":{"x":"', "email": '\\"user_identities":'},
    {'"user_identities":': '"user_identities":{'},
    None,
)
def test_a_written_header_is_the_models_bytes(
    identities: dict[str, str], attributes: dict[str, Any], environment: Any
) -> None:
    pairs = tuple(identities.items())
    first = _Mapped(pairs, pairs, (), None, None, None, None, None, attributes, None, 0)
    written = written_header(environment, first, attributes)
    try:
        batch = mpf.Batch(
            environment=environment, user_identities=identities, user_attributes=attributes or None
        )
        expected = mpf.dumps(batch)
    except (mpf.ModelError, orjson.JSONEncodeError):
        assert written is None  # the model refuses it: the model is built, and says why
        return
    plain = all(
        value is None
        or type(value) in (str, int, bool)
        or (type(value) is float and value - value == 0)
        for value in attributes.values()
    )
    if not plain:
        assert written is None
        return
    assert written is not None
    header, user_key = written
    assert header == expected
    assert user_key == orjson.dumps([None, None, orjson.loads(expected)["user_identities"]])
    # A row the Arrow engine proved plain: the same bytes, its values not checked again.
    known = _KnownMapped(pairs, pairs, (), None, None, None, None, None, attributes, None, 0)
    assert known_header(environment, known, attributes) == written


@SETTINGS
@given(st.lists(st.text(max_size=4), min_size=1, max_size=6), st.data())
def test_a_run_s_attribute_dict_is_the_dict_of_its_names_and_values(
    names: list[str], data: Any
) -> None:
    # Names repeat (the last value stands, at the first's place) and hold quotes: they are
    # the function's globals, not its source.
    values = data.draw(st.lists(ATTRIBUTE_VALUES, min_size=len(names), max_size=len(names)))
    made = dict_maker(names)(*values)
    expected = dict(zip(names, values, strict=True))
    assert made == expected
    assert list(made) == list(expected)


def test_a_header_with_any_other_user_field_is_the_models() -> None:
    pairs = (("customer_id", "c"),)
    with_mpid = _Mapped(pairs, pairs, (), 7, None, None, None, None, None, None, 0)
    assert written_header(mpf.Environment.PRODUCTION, with_mpid, {}) is None
    with_device = _Mapped(
        pairs, pairs, (("ios_idfv", "x"),), None, None, None, None, None, None, None, 0
    )
    assert written_header(mpf.Environment.PRODUCTION, with_device, {}) is None
    plain = _Mapped(pairs, pairs, (), None, None, None, None, None, None, None, 0)
    assert written_header("production", plain, {}) is None  # not the enum: the model's
    assert written_header(mpf.Environment.PRODUCTION, plain, {}) is not None


# --- a run's rows join their batch in one step ------------------------------------------------


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(1, 12)), min_size=1, max_size=12),
    st.sampled_from([0, 1, 2, 5, 20, 10_000]),
    st.sampled_from([1, 2, 3, 7, 100]),
)
def test_runs_join_batches_as_rows_do_under_any_window_and_limit(
    runs: list[tuple[int, int]], window: int, limit: int
) -> None:
    users = [user for user, length in runs for _ in range(length)]
    rows = len(users)
    table = pa.table(
        {
            "id": [f"r{n}" for n in range(rows)],
            "cid": [f"u{user}" for user in users],
            "name": ["viewed"] * rows,
            "ts": [BASE_MS + n for n in range(rows)],
        }
    )
    mapping = CustomEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        event_name="name",
        timestamp_unixtime_ms="ts",
    )

    def batches(source: Any) -> tuple[Any, ...]:
        run = mpf.map_rows(source, mapping, group_window=window, max_events_per_batch=limit)
        made = [(mpf.dumps(s.batch), s.event_rows, s.rows) for s in run]
        return made, run.split_users, run.rows_in, run.rows_mapped

    assert batches(table.to_reader(max_chunksize=5)) == batches(reference_rows(table, 5))


def test_only_the_product_action_is_written_without_a_model() -> None:
    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "cid": ["u", "u", "v"],
            "ts": [BASE_MS, BASE_MS + 1, BASE_MS + 2],
            "lon": [2.0, None, -0.0],
            "cart": ['[{"id": "x"}]', "[]", None],
        }
    )
    mapping = CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        timestamp_unixtime_ms="ts",
        product_action={"action": Constant("purchase")},
        location={"latitude": Constant(1.0), "longitude": "lon"},
        shopping_cart={"products": "cart"},
    )
    engine = arrow.ArrowEngine(mapping._compiled)
    assert set(engine.struct_writers) == {"product_action"}
    assert not engine.writes  # a location and a cart: the events are models
    assert_same(table, mapping, chunk=2)


@pytest.mark.parametrize(
    "totals",
    [
        [19.99, None, 1e300, 5e-324, -2.5, 2.0**63],  # each kept as it is
        [19.99, 2.0, -0.0, -1e16],  # integers below 2**63 are written as ints: per value
        [1.5, float("nan")],  # refused: the row path rejects it
    ],
)
def test_product_action_columns_kept_by_the_writer_are_read_as_they_are(totals: list[Any]) -> None:
    rows = len(totals)
    table = pa.table(
        {
            "id": [f"r{n}" for n in range(rows)],
            "cid": ["u"] * rows,
            "ts": [BASE_MS + n for n in range(rows)],
            "total": pa.array(totals, pa.float64()),
            "txn": ["t", None, "é", 'q"', "", "\\", "x"][:rows],
            "products": ['[{"id": "a", "price": 1.25}]'] * rows,
        }
    )
    mapping = _purchases(transaction_id="txn")
    assert_same(table, mapping, chunk=rows)


def _purchases(**product_action: Any) -> CommerceEventMapping:
    """Purchases of the column ``products`` for ``total`` by the user ``cid``; and more of
    the product action's fields (column names)."""
    return CommerceEventMapping(
        primary_key="id",
        user_identities={"customer_id": "cid"},
        timestamp_unixtime_ms="ts",
        product_action={
            "action": Constant("purchase"),
            "products": "products",
            "total_amount": "total",
            **product_action,
        },
    )
