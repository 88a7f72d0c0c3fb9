"""Examples per second: ``batches()`` beside a ``st.fixed_dictionaries`` of the same shape.

    python benchmarks/strategies.py [--examples N] [--repeat N]

The shape (issue 14): up to ten custom events of up to five attributes each, user
identities, user attributes. (s0) generates it as plain dicts, the cheapest way Hypothesis
has; (s1) as models, with ``batches()`` shaped by its ``fields`` options; (s2) is
``batches()`` with every optional field, for scale. Each variant runs a ``@given`` test of
``--examples`` examples (generation only: no shrinking, no database), interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mparticle_feed import IdentityType
from mparticle_feed.testing import strategies as mps

MAX_EVENTS = 10
MAX_ATTRIBUTES = 5

_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=16)
_text = st.text(st.characters(codec="utf-8"), max_size=16)
_scalars = st.one_of(
    st.none(),
    _text,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)

#: (s0): the same content as plain dicts, as a test without the models would write it.
FIXED = st.fixed_dictionaries(
    {
        "events": st.lists(
            st.fixed_dictionaries(
                {
                    "event_name": _names,
                    "custom_event_type": st.sampled_from(
                        [t.value for t in mps.SCHEMA_CUSTOM_EVENT_TYPES]
                    ),
                    "custom_attributes": st.none()
                    | st.dictionaries(_names, _scalars, max_size=MAX_ATTRIBUTES),
                }
            ),
            max_size=MAX_EVENTS,
        ),
        "environment": st.sampled_from(["development", "production"]),
        "user_identities": st.none()
        | st.dictionaries(st.sampled_from([t.value for t in IdentityType]), _names, max_size=4),
        "user_attributes": st.none()
        | st.dictionaries(
            _names, _scalars | st.lists(_scalars, max_size=3), max_size=MAX_ATTRIBUTES
        ),
    }
)

#: (s1): the same shape as models.
SHAPED = mps.batches(
    max_events=MAX_EVENTS,
    event_strategy=mps.custom_events(fields=["custom_attributes"], max_attributes=MAX_ATTRIBUTES),
    fields=["user_identities", "user_attributes"],
)


def examples_per_second(strategy: st.SearchStrategy[Any], examples: int) -> float:
    count = 0

    @settings(
        max_examples=examples,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(_: Any) -> None:
        nonlocal count
        count += 1

    start = time.perf_counter()
    run()
    return count / (time.perf_counter() - start)


VARIANTS: list[tuple[str, str, Callable[[int], float]]] = [
    ("s0", "st.fixed_dictionaries of the shape (dicts)", lambda n: examples_per_second(FIXED, n)),
    ("s1", "batches(fields=...) of the shape (models)", lambda n: examples_per_second(SHAPED, n)),
    ("s2", "batches() with every optional field", lambda n: examples_per_second(mps.batches(), n)),
]


def measure(examples: int, repeat: int) -> dict[str, float]:
    """Median examples per second of each variant, the variants taking turns."""
    rates: dict[str, list[float]] = {label: [] for label, _, _ in VARIANTS}
    for _ in range(repeat):
        for label, _, run in VARIANTS:
            rates[label].append(run(examples))
    return {label: statistics.median(values) for label, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    medians = measure(args.examples, args.repeat)
    print("| variant | what | examples/s |")
    print("|---|---|---:|")
    for label, description, _ in VARIANTS:
        print(f"| ({label}) | {description} | {medians[label]:,.0f} |")
    print(f"\n(s1) / (s0): {medians['s1'] / medians['s0']:.2f} (target >= 1)")


if __name__ == "__main__":
    main()
