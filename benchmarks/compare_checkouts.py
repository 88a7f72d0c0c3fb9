"""Two checkouts of the project, timed on the (i) workload in one process, taking turns.

    python benchmarks/compare_checkouts.py OLD [NEW] [--source arrow|cursor] [--rows N]
                                           [--repeat N]

``OLD`` and ``NEW`` (default: this checkout) are project folders, for example a
``git worktree add /tmp/old HEAD~1``. Each one's ``mparticle_feed`` and benchmark helpers
are imported once; before each of its runs its modules are put back in ``sys.modules``,
so a name either imports at run time is its own. Both then map the same DuckDB rows
(``arrow_source.py``'s ``rows → request bytes``) in turns, and must send byte-identical
bodies.

Why: on a shared machine the CPU time of one process differs from the next by 10% or more
(its layout, the other work), so a 5% change measured in separate processes is noise.
In one process, in turns, the two differ by about 3% at most when both are the same code.
The figure printed is thread CPU (the calling thread's; DuckDB's threads do little here).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType

#: The benchmark helpers each checkout brings with its package.
_HELPERS = ("arrow_source", "pipeline", "workload")


def _ours(name: str) -> bool:
    return name == "mparticle_feed" or name.startswith("mparticle_feed.") or name in _HELPERS


def _clear() -> None:
    for name in [name for name in sys.modules if _ours(name)]:
        del sys.modules[name]


def load(root: Path) -> tuple[ModuleType, dict[str, ModuleType]]:
    """``root``'s ``arrow_source`` benchmark module and every module it imported of ours."""
    if not (root / "benchmarks" / "arrow_source.py").is_file():
        raise SystemExit(f"{root} has no benchmarks/arrow_source.py: not a checkout to compare")
    _clear()
    sys.path[:0] = [str(root / "benchmarks"), str(root)]
    try:
        module = importlib.import_module("arrow_source")
    finally:
        del sys.path[:2]
    return module, {name: mod for name, mod in sys.modules.items() if _ours(name)}


def use(modules: dict[str, ModuleType]) -> None:
    _clear()
    sys.modules.update(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=Path(__file__).resolve().parents[1])
    parser.add_argument("--source", choices=("arrow", "cursor"), default="arrow")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=12)
    args = parser.parse_args(argv)
    roots = [args.old.resolve(), args.new.resolve()]
    loaded = [load(root) for root in roots]
    first, first_modules = loaded[0]
    use(first_modules)
    connection = first.build_duckdb(args.rows)
    now = first.pipeline.routing_now(-(-args.rows // 10))
    expected = None
    for module, modules in loaded:
        use(modules)
        source = getattr(module, f"{args.source}_source")
        bodies = module.requests(connection, source, now)
        if expected is not None and bodies != expected:
            raise SystemExit("the two checkouts do not send byte-identical bodies")
        expected = bodies
    seconds: list[list[float]] = [[], []]
    for _ in range(args.repeat):
        for index, (module, modules) in enumerate(loaded):
            use(modules)
            source = getattr(module, f"{args.source}_source")
            gc.collect()
            start = time.thread_time()
            module.requests(connection, source, now)
            seconds[index].append(time.thread_time() - start)
    print(
        f"{args.source} source, {args.rows:,} rows → request bytes, thread CPU s, {args.repeat} turns"
    )
    for root, times in zip(roots, seconds, strict=True):
        print(f"  {root}: median {statistics.median(times):.3f}, min {min(times):.3f}")
    old, new = (statistics.median(times) for times in seconds)
    print(f"  new / old: {new / old:.3f} (medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
