"""The mapping is checked against the source's columns before the first row: one error, not N rejects."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.sources import Column, Struct
from mparticle_feed.testing import FakeEventsServer


def _views() -> sqlite3.Cursor:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE v (view_id INTEGER, customer_no TEXT, page TEXT)")
    db.executemany("INSERT INTO v VALUES (?, ?, ?)", [(i, f"c{i % 3}", "home") for i in range(200)])
    return db.execute("SELECT * FROM v ORDER BY customer_no")


def _mapping(**fields: object) -> mpf.CustomEventMapping:
    base: dict[str, object] = {
        "primary_key": "view_id",
        "user_identities": {"customer_id": "customer_no"},
        "event_name": mpf.Constant("Page Viewed"),
        # Events with no timestamp column are dated by mParticle on arrival: said explicitly.
        "stamp_arrival_time": "timestamp_unixtime_ms" not in fields,
    }
    return mpf.CustomEventMapping(**{**base, **fields})  # type: ignore[arg-type]


def test_a_misspelt_column_is_one_error_naming_the_columns_and_the_closest() -> None:
    cursor = _views()
    with pytest.raises(mpf.MappingError) as caught:
        mpf.map_rows(cursor, _mapping(user_identities={"customer_id": "customer_id"}))
    message = str(caught.value)
    assert "column 'customer_id' is not in the source (did you mean 'customer_no'?)" in message
    assert "'view_id', 'customer_no', 'page'" in message
    assert len(cursor.fetchall()) == 200  # not a row was read


def test_an_enum_value_given_as_a_column_suggests_a_constant() -> None:
    with pytest.raises(mpf.MappingError, match=r'write \{ const = "navigation" \}'):
        mpf.map_rows(_views(), _mapping(custom_event_type="navigation"))


def test_sync_refuses_before_sending_anything() -> None:
    with (
        FakeEventsServer() as server,
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as client,
    ):
        with pytest.raises(mpf.MappingError, match="'pages' is not in the source"):
            mpf.sync(_views(), _mapping(custom_attributes={"page": "pages"}), client)
        assert server.requests == []


def test_plan_refuses_too() -> None:
    with pytest.raises(mpf.MappingError, match="'pages' is not in the source"):
        mpf.plan(_views(), _mapping(custom_attributes={"page": "pages"}))


def test_an_inline_table_typo_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "views.toml"
    path.write_text(
        'kind = "custom_event"\nprimary_key = "view_id"\nstamp_arrival_time = true\n'
        'event_name = { cosnt = "Page Viewed" }\n'
        '[user_identities]\ncustomer_id = "customer_no"\n',
        encoding="utf-8",
    )
    with pytest.raises(
        mpf.MappingError, match="unknown key 'cosnt' in an inline table; did you mean 'const'"
    ):
        mpf.load_mapping(path)


def test_a_table_where_a_scalar_is_expected_is_refused_in_code() -> None:
    with pytest.raises(mpf.MappingError, match="event_name: expected a column"):
        _mapping(event_name={"name": "page"})._compiled  # noqa: B018 - compiled at construction


def test_a_one_key_struct_with_a_real_field_name_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    path.write_text(
        'kind = "commerce_event"\nprimary_key = "id"\nstamp_arrival_time = true\n'
        'product_action = { action = { const = "purchase" }, products = [{ id = "sku" }] }\n'
        'location = { city_name = "town" }\n'
        '[user_identities]\ncustomer_id = "c"\n',
        encoding="utf-8",
    )
    mapping = mpf.load_mapping(path)
    assert isinstance(mapping, mpf.CommerceEventMapping)
    assert mapping.location == Struct(fields=(("city_name", Column(name="town")),))


@given(st.sets(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=6), st.data())
def test_exactly_the_missing_columns_are_named(columns: set[str], data: st.DataObject) -> None:
    used = data.draw(st.sets(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=4))
    mapping = _mapping(primary_key=sorted(used)[0], custom_attributes={c: c for c in used})
    rows = mpf.rows_from([dict.fromkeys(columns)])
    cursor_like = mpf.Rows(iter(list(rows)), sorted(columns))
    missing = sorted((used | {"customer_no"}) - columns)
    if not missing:
        mpf.map_rows(cursor_like, mapping)
        return
    with pytest.raises(mpf.MappingError) as caught:
        mpf.map_rows(cursor_like, mapping)
    named = [
        part.split("'")[1] for part in str(caught.value).split(". The source's")[0].split("; ")
    ]
    assert named == missing


def test_a_refused_sync_leaves_the_state_as_it_was(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    with (
        FakeEventsServer() as server,
        mpf.EventsClient("test-key", "test-secret", base_url=server.url, max_workers=1) as client,
    ):
        with pytest.raises(mpf.MappingError):
            mpf.sync(_views(), _mapping(custom_attributes={"page": "pages"}), client, state=state)
        report = mpf.sync(
            _views(), _mapping(custom_attributes={"page": "page"}), client, state=state
        )
    assert report.ok
    assert report.sent == 200
    assert not report.resumed


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        (
            {"user_identities": {"customer_id": {"col": "customer_no"}}},
            "user_identities.customer_id",
        ),
        ({"timestamp_unixtime_ms": {"colum": "at"}}, "timestamp_unixtime_ms"),
        ({"custom_event_type": ["navigation"]}, "custom_event_type"),
        ({"mpid": {"x": "y"}}, "mpid"),
    ],
)
def test_a_table_for_a_single_value_is_refused_when_the_mapping_is_made(
    fields: dict[str, object], path: str
) -> None:
    with pytest.raises(mpf.MappingError, match=f"^{path}: expected a column, a constant"):
        _mapping(**fields)
