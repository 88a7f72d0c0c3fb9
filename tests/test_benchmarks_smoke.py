"""The benchmarks run, on a tiny workload, and every variant sends the same JSON values.

Only a smoke test: the figures come from ``python benchmarks/run_all.py``, never from here.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = 3  # batches: enough for a bulk body of several batches, fast enough to not matter


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    """The benchmark modules, imported the way run_all.py imports them (from its folder)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import variants
        import workload

        yield workload, variants
    finally:
        sys.path.remove(str(BENCHMARKS))


def _variant(variants: ModuleType, label: str) -> Any:
    return next(run for name, _, run in variants.SPEED_VARIANTS if name == label)


@pytest.mark.parametrize("label", ["b", "c", "d"])
def test_variant_sends_the_reference_json(bench: tuple[ModuleType, ModuleType], label: str) -> None:
    workload, variants = bench
    rows = workload.make_workload(TINY)
    reference = workload.canonical_hash(_variant(variants, "b")(rows))
    bodies = _variant(variants, label)(rows)
    assert all(isinstance(body, bytes) for body in bodies)
    assert workload.canonical_hash(bodies) == reference


def test_official_sdk_sends_the_same_json_but_customerid(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    pytest.importorskip("mparticle")
    workload, variants = bench
    rows = workload.make_workload(TINY)
    bodies = variants.variant_a_official(rows)
    first = json.loads(bodies[0])[0]
    # The one allowed difference, and proof the comparison below does not hide others.
    assert "customerid" in first["user_identities"]
    assert workload.canonical_hash(bodies) != workload.canonical_hash(
        variants.variant_b_dicts_json(rows)
    )
    assert workload.canonical_hash(bodies, official=True) == workload.canonical_hash(
        variants.variant_b_dicts_json(rows)
    )


def test_the_workload_has_the_issue_shape(bench: tuple[ModuleType, ModuleType]) -> None:
    workload, variants = bench
    (document,) = json.loads(variants.variant_d_mparticle_feed(workload.make_workload(1))[0])
    assert set(document["user_identities"]) == {"customer_id", "email"}
    assert len(document["user_attributes"]) == 5
    kinds = [event["event_type"] for event in document["events"]]
    assert kinds == ["custom_event"] * 7 + ["commerce_event"] * 3
    for event in document["events"][:7]:
        assert event["data"]["custom_event_type"] == "other"
        assert len(event["data"]["custom_attributes"]) == 5
    for event in document["events"][7:]:
        action = event["data"]["product_action"]
        assert action["action"] == "purchase"
        assert {"transaction_id", "total_amount"} <= set(action)
        assert len(action["products"]) == 3


def test_the_workload_is_deterministic(bench: tuple[ModuleType, ModuleType]) -> None:
    workload, _ = bench
    assert workload.make_workload(TINY) == workload.make_workload(TINY)


def test_canonical_hash_sees_a_changed_value(bench: tuple[ModuleType, ModuleType]) -> None:
    workload, variants = bench
    rows = workload.make_workload(1)
    (body,) = variants.variant_c_dicts_orjson(rows)
    document = json.loads(body)
    document[0]["events"][0]["data"]["event_name"] = "something else"
    assert workload.canonical_hash([json.dumps(document).encode()]) != workload.canonical_hash(
        [body]
    )


def test_run_all_prints_the_table_and_ratios(
    bench: tuple[ModuleType, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert (
        run_all.main(["--batches", str(TINY), "--repeat", "1", "--memory-rows", "20,40"]) == 0
    )
    out = capsys.readouterr().out
    for label in ("(b)", "(c)", "(d)"):
        assert label in out
    assert "(d) time / (b) time" in out
