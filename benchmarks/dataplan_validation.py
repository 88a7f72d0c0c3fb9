"""What data-plan validation costs, in one run.

    python benchmarks/dataplan_validation.py [--batches N] [--repeat N]

(g) maps the SQLite rows of the pipeline benchmark (``map_rows``, both mappings),
(g1) maps the same rows and validates every batch against a plan that plans them all
(7 custom events and a purchase, typed custom attributes, user attributes and identities,
additional properties refused), and (g2) maps them with mappings that name the plan
(``data_plan=``): the pipeline's own step tags each batch and validates it as it is made.
The target: (g1) / (g) ≤ 1.5 and (g2) / (g) ≤ 1.5.

It also times the two JSON Schema libraries on the same event documents, which is how
the ``dataplans`` extra was chosen: fastjsonschema checks every event, jsonschema only
explains the events that fail.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

import attrs
import pipeline
from workload import _SCREENS, CUSTOM_EVENTS_PER_BATCH

import mparticle_feed as mpf
import mparticle_feed.pipeline as mpf_pipeline


def _string() -> dict[str, Any]:
    return {"type": "string"}


def benchmark_plan() -> mpf.LoadedDataPlan:
    """A plan every workload row keeps to: validation finds nothing, as in a healthy sync."""
    attributes = {
        "type": "object",
        "additionalProperties": False,
        "required": ["screen"],
        "properties": {
            "screen": {"type": "string", "enum": list(_SCREENS)},
            "referrer": _string(),
            "position": {"type": "integer", "minimum": 0},
            "experiment": {"type": "string", "pattern": "^exp-[0-9]+$"},
            "duration_ms": {"type": "number", "minimum": 0},
        },
    }
    points: list[dict[str, Any]] = [
        {
            "match": {
                "type": "custom_event",
                "criteria": {"event_name": f"viewed_{screen}", "custom_event_type": "other"},
            },
            "validator": {
                "type": "json_schema",
                "definition": {
                    "properties": {
                        "data": {
                            "type": "object",
                            "additionalProperties": True,
                            "properties": {"custom_attributes": attributes},
                        }
                    }
                },
            },
        }
        for screen in _SCREENS[:CUSTOM_EVENTS_PER_BATCH]
    ]
    points.append(
        {
            "match": {"type": "product_action", "criteria": {"action": "purchase"}},
            "validator": {
                "type": "json_schema",
                "definition": {
                    "properties": {
                        "data": {
                            "properties": {
                                "product_action": {
                                    "required": ["transaction_id"],
                                    "properties": {
                                        "transaction_id": _string(),
                                        "total_amount": {"type": "number", "minimum": 0},
                                        "products": {
                                            "type": "array",
                                            "items": {
                                                "additionalProperties": False,
                                                "properties": {
                                                    "id": _string(),
                                                    "name": _string(),
                                                    "price": {"type": "number"},
                                                    "quantity": {"type": "number"},
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        }
                    }
                },
            },
        }
    )
    points.append(
        {
            "match": {"type": "user_attributes", "criteria": {}},
            "validator": {
                "type": "json_schema",
                "definition": {
                    "additionalProperties": False,
                    "properties": {
                        "plan": {"enum": ["free", "pro", "team", "enterprise"]},
                        "city": _string(),
                        "age": {"type": "integer", "minimum": 0},
                        "newsletter": {"type": "boolean"},
                        "lifetime_value": {"type": "number"},
                    },
                },
            },
        }
    )
    points.append(
        {
            "match": {"type": "user_identities", "criteria": {}},
            "validator": {
                "type": "json_schema",
                "definition": {
                    "additionalProperties": False,
                    "required": ["customerid"],
                    "properties": {
                        "customerid": _string(),
                        "email": {"type": "string", "format": "email"},
                    },
                },
            },
        }
    )
    return mpf.LoadedDataPlan.from_dict(
        {"data_plan_id": "bench", "version": 1, "version_document": {"data_points": points}}
    )


_PLAIN = (
    (pipeline.CUSTOM_QUERY, pipeline.CUSTOM_MAPPING),
    (pipeline.PURCHASE_QUERY, pipeline.PURCHASE_MAPPING),
)


def planned_mappings(plan: mpf.LoadedDataPlan) -> tuple[tuple[str, Any], ...]:
    """The benchmark's mappings naming ``plan`` (built once, as a sync builds its mapping)."""
    return tuple((query, attrs.evolve(mapping, data_plan=plan)) for query, mapping in _PLAIN)


def _mapped(
    db: Any, mappings: tuple[tuple[str, Any], ...] = _PLAIN
) -> list[mpf_pipeline.SourcedBatch]:
    out: list[mpf_pipeline.SourcedBatch] = []
    for query, mapping in mappings:
        rows = mpf.rows_from_cursor(db.execute(query), chunk_size=pipeline.FETCH)
        run = mpf.map_rows(rows, mapping)
        out.extend(run)
        if run.violations:
            raise SystemExit(f"the benchmark plan found {len(run.violations)} violations")
    return out


def map_only(db: Any) -> int:
    return len(_mapped(db))


def map_and_validate(db: Any, plan: mpf.LoadedDataPlan) -> int:
    found = 0
    for sourced in _mapped(db):
        found += len(plan.validate(sourced.batch))
    if found:
        raise SystemExit(f"the benchmark plan found {found} violations; it should find none")
    return found


def map_with_plan(db: Any, mappings: tuple[tuple[str, Any], ...]) -> int:
    return len(_mapped(db, mappings))


def _median(run: Callable[[], object], repeat: int) -> float:
    run()
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(batches: int, repeat: int) -> dict[str, float]:
    """Median seconds of (g) and (g1), interleaved, and the per-event cost of each library."""
    import fastjsonschema
    import jsonschema

    plan = benchmark_plan()
    db = pipeline.build_database(batches)
    rows = pipeline.row_count(db)
    map_only(db)
    map_and_validate(db, plan)
    planned = planned_mappings(plan)
    map_with_plan(db, planned)
    plain: list[float] = []
    checked: list[float] = []
    in_pipeline: list[float] = []
    for _ in range(repeat):
        for times, run in (
            (plain, lambda: map_only(db)),
            (checked, lambda: map_and_validate(db, plan)),
            (in_pipeline, lambda: map_with_plan(db, planned)),
        ):
            gc.collect()
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    documents = [
        event
        for sourced in _mapped(db)[:200]
        for event in mpf.to_dict(sourced.batch).get("events", ())
    ]
    db.close()
    schema = plan.versions[0].data_points[0].schema
    fast = fastjsonschema.compile(schema)
    slow = jsonschema.Draft7Validator(schema)
    custom = [d for d in documents if d["event_type"] == "custom_event"]

    def run_fast() -> None:
        for document in custom:
            with contextlib.suppress(fastjsonschema.JsonSchemaValueException):
                fast(document)

    def run_slow() -> None:
        for document in custom:
            slow.is_valid(document)

    return {
        "rows": rows,
        "map": statistics.median(plain),
        "map_validate": statistics.median(checked),
        "map_plan": statistics.median(in_pipeline),
        "fastjsonschema_us": _median(run_fast, repeat) / len(custom) * 1e6,
        "jsonschema_us": _median(run_slow, repeat) / len(custom) * 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args(argv)
    result = measure(options.batches, options.repeat)
    ratio = result["map_validate"] / result["map"]
    print(f"{int(result['rows']):,} rows, median of {options.repeat}")
    print(f"(g)  map_rows                    {result['map']:.3f} s")
    print(f"(g1) map_rows + plan.validate    {result['map_validate']:.3f} s")
    print(f"(g2) map_rows, mapping names it   {result['map_plan']:.3f} s")
    print(f"(g1) / (g) = {ratio:.2f}  (target <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})")
    ratio = result["map_plan"] / result["map"]
    print(f"(g2) / (g) = {ratio:.2f}  (target <= 1.50: {'met' if ratio <= 1.5 else 'NOT met'})")
    print(
        f"one custom event against its schema: fastjsonschema {result['fastjsonschema_us']:.1f} µs, "
        f"jsonschema {result['jsonschema_us']:.1f} µs"
    )


if __name__ == "__main__":
    main()
