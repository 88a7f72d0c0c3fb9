"""CPU and memory per primary key of ``SeenKeys``, the duplicate-key set of a sync run.

    python benchmarks/seen_keys.py [--keys 1000000] [--run 500] [--repeat-every 1000] [--shuffle]

N text keys (``user-000123-evt-7``, ten per user; in key order, or with ``--shuffle`` in a
fixed pseudo-random order) go through a fresh ``SeenKeys`` in three ways, each in its own
pass:

- ``runs``: ``first_seen_run`` over runs of ``--run`` keys, as a sync over unchanged rows
  checks them (all keys new);
- ``one-by-one``: ``first_seen`` per key, as the row path checks them (all keys new);
- ``runs-repeats``: as ``runs``, but every ``--repeat-every``-th key repeats a key from
  long before (so it is on disk once the set has spilled): the answer is checked.

Only the calls are timed (``time.process_time``: CPU of the whole process, SQLite's
included); building the keys is not. Each pass runs in a fresh process. Memory is the
growth of the process's peak resident set over the pass (Linux: read from /proc), SQLite's
cache included, and the peak of Python's own allocations (tracemalloc, in a second, untimed
run of the pass); each run's keys are built just before its call, so neither counts more
than one run of keys.
Not a timed test: figures to compare versions on one machine.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mparticle_feed._sync.seen import SeenKeys

KEYS_PER_USER = 10


def multiplier(count: int) -> int:
    """A multiplier m coprime with ``count``: n -> n * m % count shuffles range(count)."""
    m = 738_181
    while math.gcd(m, count) != 1:
        m += 2
    return m


def key(n: int) -> str:
    return f"user-{n // KEYS_PER_USER:06d}-evt-{n % KEYS_PER_USER}"


def runs(
    count: int, size: int, repeat_every: int, shuffle: bool
) -> Iterator[tuple[int, list[str]]]:
    """(first row, keys) for runs of ``size`` keys, in key order or shuffled; with
    ``repeat_every``, every such key repeats the key at half its position (row numbers
    start at 1)."""
    m = multiplier(count) if shuffle else 1
    for start in range(0, count, size):
        keys = [key(n * m % count) for n in range(start, min(start + size, count))]
        if repeat_every:
            for n in range(start, start + len(keys)):
                if n % repeat_every == repeat_every - 1:
                    keys[n - start] = key(n // 2 * m % count)
        yield start + 1, keys


def expected_repeats(count: int, size: int, repeat_every: int, shuffle: bool) -> dict[int, int]:
    """Row → first row, for the repeated keys of :func:`runs`."""
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for start, keys in runs(count, size, repeat_every, shuffle):
        for i, k in enumerate(keys):
            row = start + i
            if k in first:
                repeats[row] = first[k]
            else:
                first[k] = row
    return repeats


def _rss_kb(field: str) -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")  # resets VmHWM to the current resident set
    except OSError:
        return False
    return True


Pass = Callable[[SeenKeys, int, list[str]], dict[int, int]]


def _by_run(seen: SeenKeys, first: int, keys: list[str]) -> dict[int, int]:
    return {first + i: row for i, row in seen.first_seen_run(keys, first).items()}


def _one_by_one(seen: SeenKeys, first: int, keys: list[str]) -> dict[int, int]:
    found: dict[int, int] = {}
    check = seen.first_seen
    for i, k in enumerate(keys):
        row = check(k, first + i)
        if row is not None:
            found[first + i] = row
    return found


def measure(
    check: Pass, count: int, size: int, repeat_every: int, shuffle: bool
) -> dict[str, float]:
    seen = SeenKeys()
    found: dict[int, int] = {}
    cpu = 0.0
    reset = _reset_peak_rss()
    rss_before = _rss_kb("VmRSS")
    try:
        for first, keys in runs(count, size, repeat_every, shuffle):
            start = time.process_time()
            answer = check(seen, first, keys)
            cpu += time.process_time() - start
            found.update(answer)
        spilled = seen.spilled
        rss_peak = _rss_kb("VmHWM") if reset else 0
    finally:
        seen.close()
    if found != expected_repeats(count, size, repeat_every, shuffle):
        msg = "SeenKeys answered differently from a dict"
        raise SystemExit(msg)
    seen = SeenKeys()
    tracemalloc.start()
    try:
        for first, keys in runs(count, size, repeat_every, shuffle):
            check(seen, first, keys)
        _, python_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        seen.close()
    return {
        "us_per_key": cpu / count * 1e6,
        "spilled": spilled,
        "rss_growth_mb": (rss_peak - rss_before) / 1024 if reset else float("nan"),
        "python_peak_mb": python_peak / 2**20,
    }


PASSES: dict[str, tuple[Pass, bool]] = {
    "runs": (_by_run, False),
    "one-by-one": (_one_by_one, False),
    "runs-repeats": (_by_run, True),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys (default 1,000,000)")
    parser.add_argument("--run", type=int, default=500, help="keys a run (default 500)")
    parser.add_argument(
        "--repeat-every", type=int, default=1000, help="every Nth key repeats (default 1000)"
    )
    parser.add_argument(
        "--shuffle", action="store_true", help="keys in a shuffled order (default: key order)"
    )
    parser.add_argument("--only", choices=sorted(PASSES), help="one pass, in this process")
    args = parser.parse_args(argv)
    if args.only:
        check, repeats = PASSES[args.only]
        repeat_every = args.repeat_every if repeats else 0
        result = measure(check, args.keys, args.run, repeat_every, args.shuffle)
        print(json.dumps(result))
        return 0
    order = "shuffled" if args.shuffle else "in key order"
    print(f"SeenKeys: {args.keys:,} keys {order}, runs of {args.run}, a process a pass")
    print(
        f"{'pass':<14} {'CPU µs/key':>10} {'spilled':>10} {'peak RSS +MB':>13} {'py peak MB':>11}"
    )
    for name in PASSES:
        # A fresh process a pass, so one pass's heap does not hide the next one's growth.
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                *(argv if argv is not None else sys.argv[1:]),
                "--only",
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out)
        print(
            f"{name:<14} {result['us_per_key']:>10.3f} {result['spilled']:>10,.0f}"
            f" {result['rss_growth_mb']:>13.1f} {result['python_peak_mb']:>11.1f}"
        )
    print(f"(runs-repeats: every {args.repeat_every}th key repeats an earlier one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
