"""What the search indexes cost a view: the view's throughput under gunicorn with and without
them, side by side on one database (BENCH_EVENTS // 10 events, the scaling database).

Measures with the indexes, drops the search indexes that hold view rows, measures again,
builds them back and measures a third time; prints the rps of each run and the ratio.
``make bench-view-indexes``.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import psycopg

from benchmarks.database import start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import EVENTS, log

# The indexes migration 0007 added for search that take view rows (the action index does not).
SEARCH_INDEXES = ("ix_audit_entries_text", "ix_audit_entries_user")
RUNS = 3


def view_rps(url: str, script: Path) -> float:
    server = start_gunicorn(url)
    try:
        return statistics.median(wrk(script, 16)["rps"] for _ in range(RUNS))
    finally:
        stop_gunicorn(server)


def main() -> None:
    ensure_tools()
    server_url, _ = start_database()
    data = build_dataset(server_url, max(EVENTS // 10, 10_000))
    method, requests = request_plans(data, random.Random(7))["view"]
    script = lua_script("view-indexes", method, requests)
    with_indexes = view_rps(data.url, script)
    log(f"view with the search indexes: {with_indexes:.0f} rps")
    with psycopg.connect(data.url, autocommit=True) as connection:
        # Built back exactly as the migrations made them: on the partitioned table, hence on
        # every partition (its definition reads "ON ONLY", which would build the parent's).
        definitions = [
            str(row[0]).replace(" ON ONLY ", " ON ")
            for row in connection.execute(
                "SELECT pg_get_indexdef(to_regclass(name)) FROM unnest(%s::text[]) AS name",
                (list(SEARCH_INDEXES),),
            )
        ]
        for name in SEARCH_INDEXES:
            connection.execute(f"DROP INDEX {name}")
    without = view_rps(data.url, script)
    log(f"view without them: {without:.0f} rps")
    with psycopg.connect(data.url, autocommit=True) as connection:
        for definition in definitions:
            connection.execute(definition)
    again = view_rps(data.url, script)
    log(f"view with them again: {again:.0f} rps")
    print(
        f"view rps: with {with_indexes:.0f} / {again:.0f}, without {without:.0f};"
        f" with/without {statistics.mean([with_indexes, again]) / without:.3f}"
    )


if __name__ == "__main__":
    main()
