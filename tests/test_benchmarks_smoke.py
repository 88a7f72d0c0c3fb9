"""The benchmarks run, on a tiny workload, and every variant sends the same JSON values.

Only a smoke test: the figures come from ``python benchmarks/run_all.py``, never from here.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
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
    arguments = ["--batches", str(TINY), "--repeat", "1", "--memory-rows", "200,400"]
    arguments += ["--arrow-rows", "200", "--sync-rows", "100"]
    arguments += ["--ceiling-batches", "300", "--regroup-users", "200"]
    assert run_all.main(arguments) == 0
    out = capsys.readouterr().out
    for label in (
        "(b)",
        "(c)",
        "(d)",
        "(e0)",
        "(e)",
        "(f)",
        "(g)",
        "(g1)",
        *(("(i0)", "(i)", "(j0)", "(j)") if importlib.util.find_spec("pyarrow") else ()),
        "(e, 200 rows)",
        "(e, 400 rows)",
    ):
        assert label in out
    for label in (
        "(k, N=270, paced)",
        "(k, N=1,000, unpaced)",
        "(l, by time, window 0)",
        "(m, second sync)",
    ):
        assert label in out
    for target in (
        "(d) time / (b) time",
        "(e) rows per second",
        "(e) time / (e0) time",
        "(g1) time / (g) time",
        "peak RSS at 400 rows, MB",
        "peak RSS at 400 / at 200 rows",
        "(k) N=270: 429s / requests",
        "(l) blocks of 1,000, default window / by user",
        "sync peak RSS at 400 / at 200 rows",
        *(
            ("(sync, Arrow, 200 rows)", "(sync, Arrow, 400 rows)")
            if importlib.util.find_spec("pyarrow")
            else ()
        ),
    ):
        assert target in out


@pytest.fixture(scope="module")
def bench_more() -> Iterator[tuple[ModuleType, ModuleType, ModuleType]]:
    """The (e) and (f) benchmark modules, imported from the benchmarks folder."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pipeline
        import upload
        import variants

        yield pipeline, upload, variants
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("label", ["e0", "e"])
def test_pipeline_variant_sends_every_user_the_reference_json(
    bench: tuple[ModuleType, ModuleType],
    bench_more: tuple[ModuleType, ModuleType, ModuleType],
    label: str,
) -> None:
    workload, _ = bench
    pipeline, _, variants = bench_more
    db = pipeline.build_database(TINY)
    try:
        assert pipeline.row_count(db) == TINY * workload.EVENTS_PER_BATCH
        run = next(f for name, _, f in pipeline.PIPELINE_VARIANTS if name == label)
        bodies = run(db, pipeline.routing_now(TINY))
    finally:
        db.close()
    reference = variants.variant_b_dicts_json(workload.make_workload(TINY))
    assert all(isinstance(body, bytes) for body in bodies)
    assert pipeline.per_user_hash(bodies) == pipeline.per_user_hash(reference)


def test_pipeline_e_and_e0_send_the_same_batches(
    bench_more: tuple[ModuleType, ModuleType, ModuleType],
) -> None:
    pipeline, _, _ = bench_more
    db = pipeline.build_database(TINY)
    try:
        now = pipeline.routing_now(TINY)
        ours = [json.loads(body) for body in pipeline.variant_e_pipeline(db, now)]
        floor = [json.loads(body) for body in pipeline.variant_e0_dicts_json(db, now)]
    finally:
        db.close()
    for request in ours:
        for batch in request:
            # Deterministic ids (a UUID's 36 characters) are what (e) adds; nothing else.
            assert len(batch.pop("source_request_id")) == 36
    assert ours == floor


def test_per_user_hash_sees_a_changed_value(
    bench: tuple[ModuleType, ModuleType],
    bench_more: tuple[ModuleType, ModuleType, ModuleType],
) -> None:
    workload, _ = bench
    pipeline, _, variants = bench_more
    (body,) = variants.variant_b_dicts_json(workload.make_workload(1))
    document = json.loads(body)
    document[0]["user_attributes"]["plan"] = "other"
    assert pipeline.per_user_hash([json.dumps(document).encode()]) != pipeline.per_user_hash([body])


def test_upload_variants_deliver_the_reference_json_to_the_sink(
    bench: tuple[ModuleType, ModuleType],
    bench_more: tuple[ModuleType, ModuleType, ModuleType],
) -> None:
    workload, _ = bench
    pipeline, upload, variants = bench_more
    rows = workload.make_workload(TINY)
    reference = pipeline.per_user_hash(variants.variant_b_dicts_json(rows))
    with upload.running_sink() as sink:
        ours = upload.feed_uploader(sink, variants.feed_batches(rows), pipeline.routing_now(TINY))
        try:
            with sink.keeping() as bodies:
                ours()
        finally:
            ours.close()
        assert pipeline.per_user_hash(bodies) == reference
        if importlib.util.find_spec("mparticle") is not None:
            official = upload.official_uploader(sink, variants.official_batches(rows))
            try:
                with sink.keeping() as bodies:
                    official()
            finally:
                official.close()
            assert pipeline.per_user_hash(bodies, official=True) == reference
        assert sink.requests >= 1


def test_memory_script_reports_rows_and_peak_rss() -> None:
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "pipeline_memory.py"), "--rows", "30", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["rows"] == 30
    assert result["requests"] >= 1
    assert 0 < result["peak_rss_mb"] < 1024


def test_arrow_benchmark_sends_byte_identical_bodies_and_syncs() -> None:
    """(g) and (h) on a few rows: the script's own checks (identical bodies, nothing sent the
    second time) raise SystemExit when they fail."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("duckdb")
    finished = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "arrow_source.py"),
            "--rows",
            "200",
            "--sync-rows",
            "100",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert "byte-identical" in finished.stdout
    assert "(j0) / (j)" in finished.stdout


def test_the_cli_duckdb_benchmark_runs_both_ways() -> None:
    """The script's own checks (the first sync sends rows, the second nothing, for Arrow and
    for --no-arrow) raise SystemExit when they fail."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("duckdb")
    finished = subprocess.run(
        [sys.executable, str(BENCHMARKS / "cli_duckdb.py"), "--rows", "200"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr
    for command in ("first sync", "second sync", "plan"):
        assert command in finished.stdout


def test_sync_cost_runs_and_the_second_sync_sends_nothing() -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sync_cost

        result = sync_cost.measure(TINY, 1)
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert result["requests_first"] >= 1
    assert result["requests_second"] == 0
    assert set(result["seconds"]) == {"n0", "n1", "n2", "n3"}
    # The calling thread's share never exceeds the process's; the bare pipeline has no workers.
    assert all(result["main_seconds"][k] <= result["seconds"][k] + 0.01 for k in result["seconds"])


def _compare_checkouts(old: Path, new: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "compare_checkouts.py"),
            str(old),
            str(new),
            *("--rows", "200", "--repeat", "1"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_compare_checkouts_times_both_and_refuses_different_bodies(tmp_path: Path) -> None:
    """Compared with itself the script prints both checkouts' times; with a copy whose ids
    differ it stops, since the two no longer do the same work."""
    pytest.importorskip("pyarrow")
    pytest.importorskip("duckdb")
    project = BENCHMARKS.parent
    same = _compare_checkouts(project, project)
    assert same.returncode == 0, same.stderr
    assert "new / old" in same.stdout
    other = tmp_path / "other"
    for folder in ("mparticle_feed", "benchmarks"):
        shutil.copytree(project / folder, other / folder)
    packing = other / "mparticle_feed" / "_delivery" / "packing.py"
    text = packing.read_text()
    version = "-8{text[13:16]}"
    assert version in text
    packing.write_text(text.replace(version, "-4{text[13:16]}"))  # another id version
    different = _compare_checkouts(project, other)
    assert different.returncode != 0
    assert "byte-identical" in different.stderr
