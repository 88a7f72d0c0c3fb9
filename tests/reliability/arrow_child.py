"""One sync from a DuckDB warehouse read as Arrow (R18's child process, SIGKILLed at will).

    python arrow_child.py WAREHOUSE QUERY MAPPING STATE NAME BASE_URL NOW

Exits 0 when every row ended accepted, unchanged or rejected, 3 when rows are left pending
or failed, 4 when another run of the same sync holds the state.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime

import duckdb

import mparticle_feed as mpf


def main(argv: list[str]) -> int:
    warehouse, query, mapping, state, name, base_url, now = argv
    connection = duckdb.connect(warehouse, read_only=True)
    try:
        with mpf.EventsClient(
            os.environ["MPARTICLE_API_KEY"],
            os.environ["MPARTICLE_API_SECRET"],
            base_url=base_url,
            max_workers=2,
            rate_limit=None,
        ) as client:
            try:
                report = mpf.sync(
                    connection.sql(query),  # a relation: the Arrow engine reads it
                    mpf.load_mapping(mapping),
                    client,
                    state=state,
                    name=name,
                    now=datetime.fromisoformat(now),
                )
            except mpf.StateLockedError:
                return 4
    finally:
        connection.close()
    return 0 if report.ok and not report.pending and not report.failed else 3


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
