"""Run every benchmark side by side in one process and print medians and target ratios.

    python benchmarks/run_all.py [--repeat N] [--batches N] [--check]

Each section is a function returning measurements and target checks; add a section by
appending it to ``SECTIONS``. Variants inside a section run interleaved, one repetition
of each in turn, so a slow spell of the machine hits them all alike.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib.util
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anatomy
import orjson
import variants
import workload

import mparticle_feed


@dataclass(frozen=True)
class Measurement:
    label: str
    description: str
    seconds: float
    #: What the throughput column counts (events, rows, ...) and how many.
    unit: str
    units: int

    @property
    def rate(self) -> float:
        return self.units / self.seconds


@dataclass(frozen=True)
class Target:
    description: str
    value: float
    #: ">=" or "<=" against ``limit``.
    relation: str
    limit: float

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.relation == ">=" else self.value <= self.limit


@dataclass(frozen=True)
class SectionResult:
    title: str
    measurements: list[Measurement]
    targets: list[Target]
    notes: list[str]


@dataclass(frozen=True)
class Options:
    repeat: int
    batches: int


Section = Callable[[Options], SectionResult]


def median_seconds(
    contenders: Sequence[tuple[str, Callable[[], object]]], repeat: int
) -> dict[str, float]:
    """Median wall time of each callable; one warm-up run each, then interleaved repetitions."""
    for _, run in contenders:
        run()
    times: dict[str, list[float]] = {label: [] for label, _ in contenders}
    for _ in range(repeat):
        for label, run in contenders:
            gc.collect()
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def official_sdk_installed() -> bool:
    return importlib.util.find_spec("mparticle") is not None


def serialisation_section(options: Options) -> SectionResult:
    """(a)-(d): build the objects for the workload and write the request bodies."""
    rows = workload.make_workload(options.batches)
    events = workload.event_count(rows)
    chosen = [v for v in variants.SPEED_VARIANTS if v[0] != "a" or official_sdk_installed()]
    notes = [
        f"{options.batches:,} batches, {events:,} events, "
        f"{workload.BATCHES_PER_REQUEST} batches a request; median of {options.repeat}"
    ]
    hashes = {
        label: workload.canonical_hash(run(rows), official=label == "a") for label, _, run in chosen
    }
    if len(set(hashes.values())) != 1:
        raise SystemExit(f"variants disagree on the JSON they send: {hashes}")
    notes.append(
        f"all variants send the same JSON values (sha256 {next(iter(hashes.values()))[:16]})"
    )
    medians = median_seconds(
        [(label, functools.partial(run, rows)) for label, _, run in chosen], options.repeat
    )
    measurements = [
        Measurement(label, description, medians[label], "events", events)
        for label, description, _ in chosen
    ]
    targets = [
        Target("(d) time / (b) time", medians["d"] / medians["b"], "<=", 1.5),
    ]
    if "a" in medians:
        targets.insert(0, Target("(a) time / (d) time", medians["a"] / medians["d"], ">=", 5.0))
    else:
        notes.append(
            "(a) skipped: the official SDK is not installed (pip install mparticle==0.16.1)"
        )
    return SectionResult("Serialisation: models to request bytes", measurements, targets, notes)


def anatomy_section(options: Options) -> SectionResult:
    """(d) split into building and dumps, beside bare frozen attrs construction."""
    rows = workload.make_workload(options.batches)
    events = workload.event_count(rows)
    anatomy.split_d(rows)
    anatomy.floor(rows)
    building, writing, bare = [], [], []
    for _ in range(options.repeat):
        gc.collect()
        build_seconds, dumps_seconds = anatomy.split_d(rows)
        building.append(build_seconds)
        writing.append(dumps_seconds)
        gc.collect()
        bare.append(anatomy.floor(rows))
    parts = [
        ("d0", "same objects, bare frozen attrs classes (no checks, no JSON)", bare),
        ("d1", "(d) building mparticle_feed models (converters, checks)", building),
        ("d2", "(d) mparticle_feed.dumps", writing),
    ]
    return SectionResult(
        "Where (d)'s time goes",
        [
            Measurement(label, what, statistics.median(times), "events", events)
            for label, what, times in parts
        ],
        [],
        [
            "(d0) is the floor for any frozen attrs model of these objects; (d1) + (d2) ≈ (d), the split timers add a little",
            f"median of {options.repeat}",
        ],
    )


SECTIONS: list[Section] = [serialisation_section, anatomy_section]


def cpu_name() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo has the model.
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown CPU"


def machine_line() -> str:
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_name()}); "
        f"mparticle_feed {mparticle_feed.__version__}, orjson {orjson.__version__}"
    )


def render(result: SectionResult) -> str:
    lines = [f"## {result.title}", ""]
    lines += [f"- {note}" for note in result.notes]
    lines += [
        "",
        "| variant | what | median s | per second | vs fastest |",
        "|---|---|---:|---:|---:|",
    ]
    fastest = min(m.seconds for m in result.measurements)
    for m in result.measurements:
        lines.append(
            f"| ({m.label}) | {m.description} | {m.seconds:.4f} | "
            f"{m.rate:,.0f} {m.unit} | {m.seconds / fastest:.2f}x |"
        )
    if result.targets:
        lines += ["", "| target | measured | limit | |", "|---|---:|---:|---|"]
        for t in result.targets:
            verdict = "met" if t.met else "MISSED"
            lines.append(
                f"| {t.description} | {t.value:.2f} | {t.relation} {t.limit:g} | {verdict} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="repetitions per variant")
    parser.add_argument("--batches", type=int, default=workload.BATCHES, help="workload size")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    options = Options(repeat=args.repeat, batches=args.batches)
    print(f"# mparticle_feed benchmarks\n\n{machine_line()}\n")
    missed = 0
    for section in SECTIONS:
        result = section(options)
        print(render(result), end="\n\n", flush=True)
        missed += sum(not t.met for t in result.targets)
    print("all targets met" if not missed else f"{missed} target(s) missed")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
