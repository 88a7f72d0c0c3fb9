"""Models refuse at construction what the wire refuses, and numbers travel exactly."""

from __future__ import annotations

import enum
import types
import typing
from decimal import Decimal
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import mparticle_feed as mpf
from mparticle_feed._mapping.run import map_rows
from mparticle_feed._mapping.spec import UserAttributeMapping
from mparticle_feed._wire import commerce, common, models
from mparticle_feed._wire.sparse import layout


def _is_sparse_model(value: object) -> bool:
    try:
        layout(value)  # type: ignore[arg-type]
    except (TypeError, AttributeError):
        return False
    return True


MODELS = sorted(
    {
        value
        for module in (models, common, commerce)
        for value in vars(module).values()
        if isinstance(value, type)
        and not value.__name__.startswith("_")
        and _is_sparse_model(value)
    },
    key=lambda cls: cls.__name__,
)


def _inner(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007
    return tp


def _valid(tp: Any) -> Any:
    """A value of the declared wire type (minimal: required fields only)."""
    tp = _inner(tp)
    if tp is str:
        return "a"
    if tp is bool:
        return True
    if tp is int:
        return 1
    if tp in (float, Decimal):
        return 1.5
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp))
    if isinstance(tp, type) and attrs.has(tp):
        return _minimal(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return ()
    if origin is dict:
        return {}
    return None  # the scalar unions of user attributes: None is a value


def _minimal(cls: type) -> Any:
    fields = attrs.fields(attrs.resolve_types(cls))
    kwargs = {f.name: _valid(f.type) for f in fields if f.default is attrs.NOTHING}
    if cls is mpf.CommerceEvent:
        kwargs["product_action"] = mpf.ProductAction(action="purchase")
    return cls(**kwargs)


class _Stranger:
    """A value no field takes."""


def _wrong_values(tp: Any) -> list[Any]:
    """Values of JSON types other than the declared one, and a non-JSON object."""
    tp = _inner(tp)
    wrong: list[Any] = [_Stranger()]
    if tp is str:
        wrong += [12, 1.5, True, ["a"], {"a": "b"}]
    elif tp is int:
        wrong += ["12", 1.5, True, [1], {"a": 1}, 2**64]
    elif tp is bool:
        wrong += [1, "true", [True], {"a": True}]
    elif tp in (float, Decimal):
        wrong += ["1.5", True, [1.5], {"a": 1}, float("nan")]
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        wrong += [12, True, "not a member", ["x"]]
    elif tp is mpf.UserIdentities:  # a mapping of identity type to value is taken too
        wrong += [{"nope": "x"}, {"email": 12}, "x", 12, [1]]
    elif isinstance(tp, type) and attrs.has(tp):
        wrong += [{}, "x", 12, [1]]
    elif typing.get_origin(tp) is tuple:
        wrong += ["x", 12, {"a": 1}, [{"not": "a model"}]]
    elif typing.get_origin(tp) is dict:
        wrong += ["x", 12, ["a"], {1: "a"}]
    else:  # the value unions: scalars and lists of scalars
        wrong += [{"a": 1}, float("inf"), Decimal("1E+400")]
    return wrong


CASES = [
    (cls, field.name, field.type)
    for cls in MODELS
    for field in attrs.fields(attrs.resolve_types(cls))
    if field.name != "custom_attributes" or cls is not mpf.Product  # checked below
]


def test_every_typed_field_is_covered() -> None:
    assert len(CASES) > 400


@pytest.mark.parametrize(("cls", "name", "tp"), CASES, ids=lambda v: getattr(v, "__name__", v))
@given(data=st.data())
def test_a_wrong_typed_value_is_refused_at_construction_naming_the_field(
    cls: type, name: str, tp: Any, data: st.DataObject
) -> None:
    wrong = data.draw(st.sampled_from(_wrong_values(tp)))
    fields = attrs.fields(attrs.resolve_types(cls))
    kwargs = {f.name: _valid(f.type) for f in fields if f.default is attrs.NOTHING}
    kwargs[name] = wrong
    with pytest.raises(mpf.ModelError, match=rf"^{cls.__name__}\.{name}: "):
        cls(**kwargs)


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_the_minimal_valid_values_are_accepted(cls: type) -> None:
    assert isinstance(_minimal(cls), cls)


def test_what_loads_refuses_is_refused_with_the_same_words() -> None:
    with pytest.raises(mpf.ModelError, match=r"^Batch\.mpid: expected an integer, got str$"):
        mpf.Batch(mpid="123")  # type: ignore[arg-type]
    with pytest.raises(mpf.PayloadError, match=r"\$\.mpid: expected an integer, got str"):
        mpf.loads(b'{"mpid": "123"}')
    with pytest.raises(mpf.ModelError, match=r"^Batch\.ip: expected a string, got int$"):
        mpf.Batch(ip=123)  # type: ignore[arg-type]


def test_mpids_keep_their_full_64_bit_range() -> None:
    for mpid in (2**63 - 1, -(2**63)):
        document = mpf.dumps(mpf.Batch(mpid=mpid))
        assert orjson.loads(document)["mpid"] == mpid
        loaded = mpf.loads(document)
        assert isinstance(loaded, mpf.Batch)
        assert loaded.mpid == mpid
    with pytest.raises(mpf.ModelError, match="signed 64-bit"):
        mpf.Batch(mpid=2**63)


@pytest.mark.parametrize("address", ["fe80::1%eth0", "fe80::1%1", "not an ip"])
def test_scoped_ipv6_and_non_addresses_are_refused(address: str) -> None:
    with pytest.raises(mpf.ModelError, match=r"^Batch\.ip: "):
        mpf.Batch(ip=address)


def test_device_identities_are_trimmed_and_blanks_refused() -> None:
    device_id = "0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a"
    assert mpf.Batch(mp_deviceid=device_id + "\n").mp_deviceid == device_id
    assert mpf.DeviceInfo(push_token=" tok ").push_token == "tok"
    with pytest.raises(mpf.ModelError, match=r"^DeviceInfo\.push_token: .*blank"):
        mpf.DeviceInfo(push_token=" ")
    with pytest.raises(mpf.ModelError, match=r"^Batch\.mp_deviceid: .*not a UUID"):
        mpf.Batch(mp_deviceid=device_id + "x")


# --- exact numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["1E+400", "1E-400", "-1E+400", "12345678901234567.89", "0.1000000000000000000001"]
)
def test_a_number_a_double_cannot_hold_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(mpf.ModelError, match=r"^Batch\.user_attributes: .*'a'.*exactly"):
        mpf.Batch(user_attributes={"a": Decimal(value)})
    with pytest.raises(mpf.ModelError, match=r"^Product\.price: .*exactly"):
        mpf.Product(price=Decimal(value))
    with pytest.raises(mpf.ModelError, match=r"^CustomEvent\.custom_attributes: .*exactly"):
        mpf.CustomEvent(
            event_name="e", custom_event_type="other", custom_attributes={"a": Decimal(value)}
        )


@pytest.mark.parametrize("value", ["19.99", "0.1", "1E+300", "9223372036854775807", "-0.5"])
def test_numbers_that_survive_a_double_are_sent_as_they_are(value: str) -> None:
    document = orjson.loads(mpf.dumps(mpf.Batch(user_attributes={"a": Decimal(value)})))
    assert Decimal(repr(document["user_attributes"]["a"])) == Decimal(value)


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_a_decimal_is_sent_exactly_or_refused(value: Decimal) -> None:
    representable = Decimal(repr(float(value))) == value or (
        value == value.to_integral_value() and abs(value) < 2**63
    )
    if not representable:
        with pytest.raises(mpf.ModelError, match="cannot be sent exactly"):
            mpf.Product(price=value)
        return
    product = mpf.Product(price=value)
    batch = mpf.Batch(
        events=[
            mpf.CommerceEvent(
                product_action=mpf.ProductAction(action="purchase", products=[product])
            )
        ]
    )
    document = orjson.loads(mpf.dumps(batch))
    sent = document["events"][0]["data"]["product_action"]["products"][0]["price"]
    assert Decimal(repr(sent)) == value


def test_mapping_rejects_a_row_whose_number_a_double_cannot_hold() -> None:
    mapping = UserAttributeMapping(
        primary_key="id", user_identities={"email": "email"}, user_attributes={"a": "a"}
    )
    rows = [
        {"id": 1, "email": "x@y.z", "a": Decimal("1E+400")},
        {"id": 2, "email": "x@y.z", "a": Decimal("12345678901234567.89")},
        {"id": 3, "email": "x@y.z", "a": Decimal("19.99")},
    ]
    run = map_rows(rows, mapping)
    batches = list(run)
    assert (run.rows_mapped, run.rows_rejected) == (1, 2)
    assert [p.field for p in run.rejected] == ["user_attributes.a", "user_attributes.a"]
    assert all("cannot be sent exactly" in p.reason for p in run.rejected)
    assert orjson.loads(mpf.dumps(batches[0].batch))["user_attributes"] == {"a": 19.99}


# --- loads keeps meaning ------------------------------------------------------------------


def test_a_document_without_environment_stays_without_one() -> None:
    loaded = mpf.loads(b'{"mpid": 1}')
    assert isinstance(loaded, mpf.Batch)
    assert loaded.environment is None
    assert b"environment" not in mpf.dumps(loaded)  # mParticle reads it as production
    assert mpf.Batch(mpid=1).environment is mpf.Environment.DEVELOPMENT  # code: development
    with pytest.raises(mpf.PayloadError, match=r"\$\.environment: None is not a valid"):
        mpf.loads(b'{"mpid": 1, "environment": null}')


@given(st.integers(-(2**53), 2**53))
def test_whole_numbers_written_as_floats_load_as_integers(value: int) -> None:
    loaded = mpf.loads(orjson.dumps({"mpid": float(value)}))
    assert isinstance(loaded, mpf.Batch)
    assert loaded.mpid == value
    assert type(loaded.mpid) is int


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({"mpid": 1.5}, "$.mpid: expected an integer, got float"),
        ({"user_identities": {"email": 12}}, "$.user_identities.email: expected a string"),
        ({"application_info": {"application_name": 1}}, "expected a string"),
        (
            {"context": {"location": {"latitude": 1, "longitude": 2, "location_source": "gps"}}},
            "'gps' is not a valid LocationSource",
        ),
        (
            {"consent_state": {"ccpa": {"other": {"consented": True, "timestamp_unixtime_ms": 1}}}},
            "data_sale_opt_out",
        ),
    ],
)
def test_the_documented_refusals_of_loads(document: dict[str, Any], problem: str) -> None:
    with pytest.raises(mpf.PayloadError) as caught:
        mpf.loads(orjson.dumps(document))
    assert any(problem in line for line in caught.value.problems), caught.value.problems
