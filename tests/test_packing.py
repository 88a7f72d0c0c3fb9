from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timezone

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mparticle_feed import (
    Batch,
    CommerceEvent,
    CustomEvent,
    ModelError,
    Product,
    ProductAction,
    UserIdentities,
    dumps,
)
from mparticle_feed._delivery.packing import (
    MAX_BATCH_BYTES,
    MAX_REQUEST_BYTES,
    IdSequence,
    Request,
    derive_source_request_id,
    pack,
    request_body,
)
from mparticle_feed._delivery.routing import Endpoint, RoutedBatch, route
from mparticle_feed._mapping.provenance import RowProblem, RowRef, SourcedBatch, Stage
from mparticle_feed._wire.codec import to_dict

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)

# Multi-byte text so that byte counts and character counts differ.
text = st.text(alphabet=st.sampled_from('ab é€😀"'), max_size=40)


def make_batch(user: str, names: list[str], *, attrs: dict[str, str] | None = None) -> Batch:
    return Batch(
        events=[
            CustomEvent(
                event_name=n, custom_event_type="other", timestamp_unixtime_ms=1_700_000_000_000 + i
            )
            for i, n in enumerate(names)
        ],
        user_identities=UserIdentities(customer_id=user),
        user_attributes=attrs,
    )


def routed(*batches: Batch) -> list[RoutedBatch]:
    return [item for item in route(batches, now=NOW) if isinstance(item, RoutedBatch)]


@st.composite
def batch_lists(draw: st.DrawFn) -> list[Batch]:
    result = []
    for user in range(draw(st.integers(1, 12))):
        repeat = draw(st.integers(0, 300))
        names = draw(
            st.lists(text.map(lambda t, r=repeat: t * r if t else "x"), min_size=0, max_size=6)
        )
        attrs = draw(st.none() | st.dictionaries(text, text, max_size=3))
        result.append(make_batch(f"user-{user % 4}", names, attrs=attrs))
    return result


def event_multiset(documents: list[dict]) -> Counter[bytes]:  # type: ignore[type-arg]
    return Counter(
        orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
        for document in documents
        for event in document.get("events", [])
    )


def check_requests(
    items: list[Request | RowProblem], sent: list[Batch], *, max_request: int, max_batch: int
) -> None:
    requests = [item for item in items if isinstance(item, Request)]
    received: list[dict] = []  # type: ignore[type-arg]
    for request in requests:
        assert len(request.body) <= max_request
        assert 1 <= len(request.batches) <= 100
        document = orjson.loads(request.body)
        assert len(document) == len(request.batches)
        assert request.body == b"[" + b",".join(b.body for b in request.batches) + b"]"
        for packed, part in zip(request.batches, document, strict=True):
            assert len(packed.body) <= max_batch
            expected = to_dict(packed.sourced.batch)
            expected["source_request_id"] = packed.source_request_id
            assert part == expected
        received.extend(document)
    problems = [item for item in items if isinstance(item, RowProblem)]
    assert all(problem.stage is Stage.PACKING for problem in problems)
    refused = len([p for p in problems if p.field is not None])
    expected_events = event_multiset([to_dict(batch) for batch in sent])
    assert sum(event_multiset(received).values()) + refused == sum(expected_events.values())
    assert event_multiset(received) <= expected_events
    # An id never names two contents. (Equal contents may get distinct ids: parts of one
    # split batch, or, with an IdSequence, two changes; see the id-rule tests.)
    content_of: dict[str, bytes] = {}
    for request in requests:
        for packed in request.batches:
            content = orjson.dumps(to_dict(packed.sourced.batch), option=orjson.OPT_SORT_KEYS)
            assert content_of.setdefault(packed.source_request_id, content) == content


def packed_ids(items: list[Request | RowProblem]) -> list[str]:
    return [p.source_request_id for r in items if isinstance(r, Request) for p in r.batches]


@given(batch_lists())
def test_small_limits_hold_and_nothing_is_lost_or_doubled(batches: list[Batch]) -> None:
    sequence = IdSequence(scope="orders")
    items = list(
        pack(
            routed(*batches),
            max_batches=3,
            max_request_bytes=4_000,
            max_batch_bytes=1_500,
            ids=sequence,
        )
    )
    check_requests(items, batches, max_request=4_000, max_batch=1_500)
    # The id rule, first half: content sent as a new change never shares an id, not even
    # with equal bytes (here: identical parts, identical users) ...
    ids = packed_ids(items)
    assert len(set(ids)) == len(ids)
    # ... nor with the same rows sent again as the next change (a value flipped back).
    again = list(
        pack(
            routed(*batches),
            max_batches=3,
            max_request_bytes=4_000,
            max_batch_bytes=1_500,
            ids=IdSequence(scope="orders", next=sequence.next),
        )
    )
    assert set(packed_ids(again)).isdisjoint(ids)
    # Second half: the same pending content re-sent keeps its id. A retry sends the same
    # body; a bisection half (or an outbox replay of what is left) joins the same bytes.
    for request in (r for r in items if isinstance(r, Request)):
        middle = len(request.batches) // 2
        for half in (request.batches[:middle], request.batches[middle:]):
            if half:
                sent = orjson.loads(request_body(half))
                assert [d["source_request_id"] for d in sent] == [p.source_request_id for p in half]


@given(batch_lists())
def test_without_a_sequence_ids_derive_from_content_alone(batches: list[Batch]) -> None:
    # No state (EventsClient.upload): re-running the same upload repeats its ids, so
    # mParticle de-duplicates the re-run.
    first = packed_ids(list(pack(routed(*batches), max_batch_bytes=1_500, max_request_bytes=4_000)))
    again = packed_ids(list(pack(routed(*batches), max_batch_bytes=1_500, max_request_bytes=4_000)))
    assert first == again


@given(st.lists(st.integers(1, 140_000), min_size=1, max_size=6), text.filter(bool))
def test_real_limits_hold_for_batches_up_to_just_over_128_kb(sizes: list[int], unit: str) -> None:
    batches = []
    for number, size in enumerate(sizes):
        chunk = (unit * (size // len(unit.encode()) + 1))[: max(size // 4, 1)]
        batches.append(make_batch(f"u{number}", [chunk, chunk[: size // 8] or "y", "z"]))
    items = list(pack(routed(*batches)))
    check_requests(items, batches, max_request=MAX_REQUEST_BYTES, max_batch=MAX_BATCH_BYTES)


def test_hundred_batch_limit() -> None:
    batches = [make_batch(f"u{i}", ["e"]) for i in range(250)]
    requests = [item for item in pack(routed(*batches)) if isinstance(item, Request)]
    assert [len(r.batches) for r in requests] == [100, 100, 50]


def test_oversized_batch_is_split_by_events_keeping_user_fields() -> None:
    batch = make_batch("big", ["x" * 30_000 for _ in range(10)], attrs={"tier": "gold"})
    (request, second) = [i for i in pack(routed(batch)) if isinstance(i, Request)]
    parts = [*request.batches, *second.batches]
    assert len(parts) >= 3
    for part in parts:
        assert len(part.body) <= MAX_BATCH_BYTES
        assert part.sourced.batch.user_attributes == {"tier": "gold"}
        assert part.sourced.batch.user_identities == UserIdentities(customer_id="big")
    assert sum(len(p.sourced.batch.events or ()) for p in parts) == 10
    assert len({p.source_request_id for p in parts}) == len(parts)


def test_identical_parts_get_distinct_ids() -> None:
    same = CustomEvent(event_name="x" * 60_000, custom_event_type="other", timestamp_unixtime_ms=1)
    batch = Batch(events=[same] * 4, user_identities=UserIdentities(customer_id="same"))
    parts = [p for i in pack(routed(batch)) if isinstance(i, Request) for p in i.batches]
    assert len({p.source_request_id for p in parts}) == len(parts) == 2


def test_single_event_too_large_is_refused_with_its_row() -> None:
    rows = (RowRef(1, "k1"), RowRef(2, "k2"))
    batch = make_batch("u", ["x" * 200_000, "small"])
    sourced = SourcedBatch(batch=batch, event_rows=rows, rows=rows)
    items = list(pack(route([sourced], now=NOW)))
    problems = [i for i in items if isinstance(i, RowProblem)]
    assert [(p.row, p.stage, p.field) for p in problems] == [(rows[0], Stage.PACKING, "events[0]")]
    assert "128,000" in problems[0].reason
    (request,) = [i for i in items if isinstance(i, Request)]
    assert request.batches[0].sourced.rows == (rows[1],)


def test_ids_are_deterministic_and_content_derived() -> None:
    batches = [make_batch(f"u{i}", [f"e{i}"]) for i in range(20)]
    first = [
        p.source_request_id
        for r in pack(routed(*batches))
        if isinstance(r, Request)
        for p in r.batches
    ]
    again = [
        p.source_request_id
        for r in pack(routed(*batches), max_batches=3)
        if isinstance(r, Request)
        for p in r.batches
    ]
    assert first == again
    assert len(set(first)) == 20
    parsed = uuid.UUID(first[0])
    assert parsed.version == 8


def test_identical_batches_of_different_primary_keys_get_distinct_ids() -> None:
    batch = make_batch("u", ["e"])
    one = SourcedBatch(batch=batch, event_rows=(RowRef(1, "a"),), rows=(RowRef(1, "a"),))
    two = SourcedBatch(batch=batch, event_rows=(RowRef(2, "b"),), rows=(RowRef(2, "b"),))
    (request,) = list(pack(route([one, two], now=NOW)))
    assert isinstance(request, Request)
    assert request.batches[0].source_request_id != request.batches[1].source_request_id


def test_user_set_id_is_kept_when_whole_and_derived_when_split() -> None:
    whole = Batch(
        events=[CustomEvent(event_name="e", custom_event_type="other")], source_request_id="mine"
    )
    mixed = Batch(
        events=[
            CustomEvent(event_name="old", custom_event_type="other", timestamp_unixtime_ms=1_000),
            CustomEvent(event_name="new", custom_event_type="other"),
        ],
        source_request_id="mine",
    )
    ids = [
        p.source_request_id
        for r in pack(route([whole, mixed], now=NOW))
        if isinstance(r, Request)
        for p in r.batches
    ]
    assert ids[0] == "mine"
    assert len(set(ids)) == 3
    assert all(i != "mine" for i in ids[1:])


def test_same_user_batches_keep_order_per_endpoint() -> None:
    batches = [make_batch("u", [f"e{i}"]) for i in range(250)]
    names = [
        p.sourced.batch.events[0].event_name  # type: ignore[index, union-attr]
        for r in pack(routed(*batches))
        if isinstance(r, Request)
        for p in r.batches
    ]
    assert names == [f"e{i}" for i in range(250)]


def test_endpoints_get_separate_requests() -> None:
    batch = Batch(
        events=[
            CustomEvent(event_name="old", custom_event_type="other", timestamp_unixtime_ms=1_000),
            CustomEvent(event_name="new", custom_event_type="other"),
        ]
    )
    requests = [r for r in pack(route([batch], now=NOW)) if isinstance(r, Request)]
    assert {r.endpoint for r in requests} == {Endpoint.LIVE, Endpoint.HISTORICAL}


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="room"):
        list(pack([], max_request_bytes=1000, max_batch_bytes=999))
    with pytest.raises(ValueError, match="max_batches"):
        list(pack([], max_batches=0))


def test_derived_id_is_uuid_shaped() -> None:
    assert uuid.UUID(derive_source_request_id(b"{}")).variant == uuid.RFC_4122


def test_a_batch_json_cannot_carry_is_rejected_not_raised() -> None:
    too_big = Batch(
        # Attribute maps check ints only when written (the models check typed fields).
        events=[
            CustomEvent(event_name="x", custom_event_type="other", custom_attributes={"n": 2**70})
        ]
    )
    with pytest.raises(ModelError, match="cannot be written as JSON"):
        dumps(too_big)
    sourced = SourcedBatch(batch=too_big, event_rows=(RowRef(1, "k1"),), rows=(RowRef(1, "k1"),))
    (problem,) = list(pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=sourced, whole=True)]))
    assert isinstance(problem, RowProblem)
    assert problem.stage is Stage.PACKING
    assert problem.row.primary_key == "k1"
    assert "cannot be written as JSON" in problem.reason
    assert problem.field == "custom_attributes.n"


#: Text JSON cannot carry: what undecodable bytes read leniently (surrogateescape) give.
LONE = "caf\udce9"


def _events_batch(user: str, attributes: list[dict[str, object]]) -> Batch:
    return Batch(
        events=[
            CustomEvent(
                event_name=f"e{i}",
                custom_event_type="other",
                timestamp_unixtime_ms=1_700_000_000_000 + i,
                custom_attributes=values,
            )
            for i, values in enumerate(attributes)
        ],
        user_identities=UserIdentities(customer_id=user),
    )


def _one_per_row(batch: Batch, first: int = 1) -> SourcedBatch:
    refs = tuple(RowRef(first + i, f"k{first + i}") for i in range(len(batch.events or ())))
    return SourcedBatch(batch=batch, event_rows=refs, rows=refs)


def _packed_bodies(items: list[Request | RowProblem]) -> list[bytes]:
    return [b.body for r in items if isinstance(r, Request) for b in r.batches]


@given(st.lists(st.booleans(), min_size=1, max_size=12))
def test_only_the_rows_whose_events_json_cannot_carry_are_rejected(bad: list[bool]) -> None:
    """A lone surrogate in one row's event rejects that row, naming the field; the user's
    other rows are packed as a batch of those events alone would be."""
    attributes = [{"city": LONE if is_bad else f"city {i}"} for i, is_bad in enumerate(bad)]
    whole = _events_batch("u1", attributes)
    sourced = _one_per_row(whole)
    out = list(pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=sourced, whole=True)]))
    problems = [item for item in out if isinstance(item, RowProblem)]
    assert [p.row.row_number for p in problems] == [i + 1 for i, b in enumerate(bad) if b]
    assert {(p.field, p.stage) for p in problems} <= {("custom_attributes.city", Stage.PACKING)}
    assert all("surrogates not allowed" in p.reason for p in problems)
    kept = [i for i, b in enumerate(bad) if not b]
    sent = [row for r in out if isinstance(r, Request) for b in r.batches for row in b.sourced.rows]
    assert [row.row_number for row in sent] == [i + 1 for i in kept]
    if kept:
        alone = attrs.evolve(whole, events=[whole.events[i] for i in kept])  # type: ignore[index]
        refs = tuple(RowRef(i + 1, f"k{i + 1}") for i in kept)
        expected = pack(
            [
                RoutedBatch(
                    endpoint=Endpoint.LIVE,
                    sourced=SourcedBatch(batch=alone, event_rows=refs, rows=refs),
                    whole=True,
                )
            ]
        )
        assert _packed_bodies(out) == _packed_bodies(list(expected))


def test_json_text_it_cannot_carry_is_found_in_nested_fields_and_in_user_fields() -> None:
    nested = Batch(
        events=[
            CommerceEvent(
                timestamp_unixtime_ms=1_700_000_000_000,
                product_action=ProductAction(
                    action="purchase",
                    products=[Product(id="p1", name="ok"), Product(id="p2", name=LONE)],
                ),
            )
        ],
        user_identities=UserIdentities(customer_id="u1"),
    )
    (problem,) = pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=_one_per_row(nested))])
    assert isinstance(problem, RowProblem)
    assert problem.field == "product_action.products[1].name"

    # An identity is every row's: all of the batch's rows are rejected, naming it.
    user = _events_batch(LONE, [{"a": "1"}, {"a": "2"}])
    problems = list(pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=_one_per_row(user))]))
    assert [(p.row.row_number, p.field) for p in problems if isinstance(p, RowProblem)] == [
        (1, "user_identities.customer_id"),
        (2, "user_identities.customer_id"),
    ]
    assert all(isinstance(p, RowProblem) for p in problems)


def test_a_row_with_an_event_json_cannot_carry_is_not_sent_in_part() -> None:
    # Row 1 gave two events, the second holding a lone surrogate: the row is rejected once
    # and neither of its events is sent; row 2 is.
    batch = _events_batch("u1", [{"a": "fine"}, {"a": LONE}, {"a": "row two"}])
    one, two = RowRef(1, "k1"), RowRef(2, "k2")
    sourced = SourcedBatch(batch=batch, event_rows=(one, one, two), rows=(one, two))
    out = list(pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=sourced)]))
    problems = [item for item in out if isinstance(item, RowProblem)]
    assert [(p.row, p.field) for p in problems] == [(one, "custom_attributes.a")]
    (body,) = _packed_bodies(out)
    assert b"row two" in body
    assert b"fine" not in body


def test_an_attribute_name_json_cannot_carry_is_named_escaped() -> None:
    # A JSON column's key read leniently: the path names it, and can itself be written out.
    batch = _events_batch("u1", [{LONE: "x"}, {"fine": "y"}])
    out = list(pack([RoutedBatch(endpoint=Endpoint.LIVE, sourced=_one_per_row(batch))]))
    (problem,) = [item for item in out if isinstance(item, RowProblem)]
    assert problem.field == "custom_attributes.caf\\udce9"
    problem.field.encode("utf-8")  # no lone surrogate left in the path
    assert len(_packed_bodies(out)) == 1
