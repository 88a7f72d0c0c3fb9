"""The sparse models' invariants: same signature, same behaviour as plain frozen attrs classes.

The models store only the fields a caller set (``mparticle_feed._wire.sparse``) and ``dumps``
compiles one function per shape of set fields (``mparticle_feed._wire.unstructure``); these tests pin
what that must never change.
"""

from __future__ import annotations

import copy
import inspect
import pickle
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._wire import commerce as _models_commerce
from mparticle_feed._wire import common as _models_common
from mparticle_feed._wire import models as _models
from mparticle_feed._wire import sparse as _sparse
from mparticle_feed._wire import unstructure as _unstructure
from mparticle_feed.testing import strategies as mps

MODELS = sorted(
    {
        value
        for module in (_models, _models_common, _models_commerce)
        for value in vars(module).values()
        if isinstance(value, type) and attrs.has(value) and value.__module__ == module.__name__
    },
    key=lambda cls: cls.__qualname__,
)


def test_every_model_is_sparse() -> None:
    assert len(MODELS) >= 30
    for cls in MODELS:
        assert _sparse.layout(cls).always >= {
            f.name for f in attrs.fields(cls) if f.default is attrs.NOTHING
        }, cls
        assert "__slots__" not in cls.__dict__, cls


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__qualname__)
def test_init_takes_exactly_the_attrs_signature(cls: type) -> None:
    init = vars(cls)["__init__"]
    parameters = list(inspect.signature(init).parameters.values())[1:]
    expected = [
        inspect.Parameter(
            field.alias,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if field.default is attrs.NOTHING else field.default,
        )
        for field in attrs.fields(cls)
    ]
    assert [(p.name, p.kind, p.default) for p in parameters] == [
        (p.name, p.kind, p.default) for p in expected
    ]
    # The annotations attrs wrote (the converters' input types) are kept for introspection.
    assert set(init.__annotations__) == {f.name for f in attrs.fields(cls)} | {"return"}


def test_init_refuses_what_attrs_refuses() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        mpf.Product(colour="red")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="positional"):
        mpf.Product("sku-1")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'event_name'"):
        mpf.CustomEvent(custom_event_type="other")  # type: ignore[call-arg]


def test_converters_still_check_every_set_value() -> None:
    with pytest.raises(mpf.ModelError, match="'sometimes' is not a valid CustomEventType"):
        mpf.CustomEvent(event_name="a", custom_event_type="sometimes")
    with pytest.raises(mpf.ModelError, match="not bool"):
        mpf.Product(price=True)
    with pytest.raises(mpf.ModelError, match="is not a finite number"):
        mpf.Product(price=float("nan"))
    with pytest.raises(mpf.ModelError, match="naive datetime"):
        mpf.CustomEvent(
            event_name="a",
            custom_event_type="other",
            timestamp_unixtime_ms=__import__("datetime").datetime(2024, 1, 1),
        )
    with pytest.raises(mpf.ModelError, match="attribute 'x': list is not allowed"):
        mpf.CustomEvent(event_name="a", custom_event_type="other", custom_attributes={"x": []})  # type: ignore[dict-item]
    with pytest.raises(mpf.ModelError, match=r"events\[1\] is a str"):
        mpf.Batch(events=[mpf.SessionStartEvent(), "x"])  # type: ignore[list-item]
    # A value that is not the default goes through the converter, None included (None:
    # unset, which mParticle reads as production).
    with pytest.raises(mpf.ModelError, match="not a valid Environment"):
        mpf.Batch(environment="staging")  # type: ignore[arg-type]
    assert mpf.Batch(environment=None).environment is None


def test_frozen() -> None:
    product = mpf.Product(id="sku-1")
    for name in ("id", "name", "brand"):
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            setattr(product, name, "x")
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            delattr(product, name)


def _every_optional_as_default(cls: type, **required: Any) -> dict[str, Any]:
    return {
        field.name: field.default
        for field in attrs.fields(cls)
        if field.default is not attrs.NOTHING
    } | required


@pytest.mark.parametrize(
    ("cls", "required"),
    [
        (mpf.Product, {}),
        (mpf.Batch, {}),
        (mpf.DeviceInfo, {}),
        (mpf.CustomEvent, {"event_name": "a", "custom_event_type": "other"}),
        (
            mpf.UserIdentityChangeEvent,
            {"new": mpf.UserIdentity(identity_type="email", identity="a", timestamp_unixtime_ms=1)},
        ),
    ],
)
def test_defaults_passed_explicitly_equal_defaults_omitted(
    cls: type, required: dict[str, Any]
) -> None:
    sparse = cls(**required)
    explicit = cls(**_every_optional_as_default(cls, **required))
    assert sparse == explicit
    assert hash(sparse) == hash(explicit)
    assert repr(sparse) == repr(explicit)
    assert attrs.asdict(sparse) == attrs.asdict(explicit)


def test_unset_fields_read_their_converted_default() -> None:
    batch = mpf.Batch()
    assert batch.environment is mpf.Environment.DEVELOPMENT
    assert batch.events is None
    assert mpf.Batch(environment="development").environment is mpf.Environment.DEVELOPMENT


def test_money_cache_keeps_each_float_exact() -> None:
    # -0.0 == 0.0 as dict keys; their Decimals must not be confused.
    for first, second in ((0.0, -0.0), (-0.0, 0.0)):
        assert repr(mpf.Product(price=first).price) == f"Decimal('{first!r}')"
        assert repr(mpf.Product(price=second).price) == f"Decimal('{second!r}')"
    # 1.0 == 1 as keys; an int and a float keep their own Decimal.
    assert repr(mpf.Product(price=1.0).price) == "Decimal('1.0')"
    assert repr(mpf.Product(price=1).price) == "Decimal('1')"
    assert repr(mpf.Product(price=1.0).price) == "Decimal('1.0')"
    assert mpf.Product(price=19.99).price == Decimal("19.99")


@given(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63) + 1, 2**63 - 1))
def test_money_conversion_is_the_uncached_one(value: float) -> None:
    expected = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    for _ in range(2):  # the second call may come from a cache
        converted = mpf.Product(price=value).price
        assert repr(converted) == repr(expected)


def _expected_wire_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**12))
def test_decimal_numbers_on_the_wire(value: Decimal) -> None:
    if value != value.to_integral_value() and Decimal(repr(float(value))) != value:
        # A double cannot hold it: refused rather than sent changed.
        with pytest.raises(mpf.ModelError, match="cannot be sent exactly"):
            _purchase(value)
        return
    for _ in range(2):  # the second time from the cache
        document = orjson.loads(mpf.dumps(mpf.Batch(events=[_purchase(value)])))
        price = document["events"][0]["data"]["product_action"]["products"][0]["price"]
        assert price == _expected_wire_number(value)
        assert type(price) is type(_expected_wire_number(value))


def _purchase(price: Decimal) -> mpf.CommerceEvent:
    return mpf.CommerceEvent(
        product_action=mpf.ProductAction(action="purchase", products=[mpf.Product(price=price)])
    )


@given(mps.batches())
def test_dumps_equals_orjson_of_to_dict(batch: mpf.Batch) -> None:
    assert mpf.dumps(batch) == orjson.dumps(mpf.to_dict(batch))
    assert mpf.dumps([batch, batch]) == orjson.dumps([mpf.to_dict(batch)] * 2)


@given(mps.batches())
def test_copies_equal_and_hash_alike(batch: mpf.Batch) -> None:
    for twin in (
        attrs.evolve(batch),
        pickle.loads(pickle.dumps(batch)),
        copy.copy(batch),
        copy.deepcopy(batch),
    ):
        assert twin == batch
        assert repr(twin) == repr(batch)
        assert mpf.dumps(twin) == mpf.dumps(batch)
    try:
        expected = hash(batch)
    except TypeError:  # a dict field: unhashable, as before
        with pytest.raises(TypeError):
            hash(attrs.evolve(batch))
    else:
        assert hash(attrs.evolve(batch)) == expected


def test_many_shapes_of_one_class() -> None:
    """Past the compiled-shape limit a generic function writes the same documents."""
    names = [
        field.name
        for field in attrs.fields(mpf.DeviceInfo)
        if field.type in ("str | None", str | None) and field.converter is None
    ]
    assert len(names) >= 10
    shapes = 0
    for mask in range(1, 2 ** len(names[:10])):
        values: dict[str, Any] = {
            name: f"v{bit}" for bit, name in enumerate(names[:10]) if mask >> bit & 1
        }
        info = mpf.DeviceInfo(**values)
        assert orjson.loads(mpf.dumps(mpf.Batch(device_info=info)))["device_info"] == values
        assert mpf.to_dict(mpf.Batch(device_info=info))["device_info"] == values
        shapes += 1
    assert shapes > _unstructure.SHAPES_PER_CLASS


def test_only_plain_frozen_attrs_classes_can_be_sparse() -> None:
    @attrs.frozen(kw_only=True)
    class Slotted:
        a: int | None = None

    with pytest.raises(TypeError, match="non-slotted"):
        _sparse.sparse_model(kw_only=True, slots=False)(Slotted)
    with pytest.raises(TypeError, match="non-slotted"):
        _sparse.sparse_model(kw_only=True, slots=True)
    with pytest.raises(TypeError, match="keyword-only"):
        _sparse.sparse_model(kw_only=False, slots=False)

    class Validated:
        a: int = attrs.field(validator=attrs.validators.instance_of(int))

    with pytest.raises(TypeError, match="not supported"):
        _sparse.sparse_model(kw_only=True, slots=False)(Validated)

    with pytest.raises(TypeError, match="not a sparse model"):
        _sparse.layout(Slotted)
