"""``make bench-engagement``: the engagement endpoints timed one request at a time.

wrk's windows suit fast endpoints; these take tens to hundreds of milliseconds, and their
``-c 16`` requests outlive a run. Here each endpoint is asked ``BENCH_REQUESTS`` times in a
row (the app in this process, on the ``make bench`` database of ``BENCH_EVENTS`` events, as
the app role, the benchmark's real viewers' tokens), and the median and worst times are
printed. Related and recommended are asked twice: with no kept answers (each request
computes its answer) and again (each uses the answer kept by the first); then the worker's
pass that computes the kept answers again is timed, and the store's size printed. Run
``make bench`` first: it builds the database.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import replace

from sqlalchemy import text

from benchmarks.database import as_app_role, start_database
from benchmarks.settings import BASE, BIG_ORG, DATA, EVENTS, log
from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.worker import keep_answers_fresh, keep_windows_counted

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "15"))


def main() -> None:
    server_url, _ = start_database()
    name = f"bench_{EVENTS}"
    manifest = DATA / f"{name}.json"
    if not manifest.exists():
        raise SystemExit(f"no {name}: run `BENCH_EVENTS={EVENTS} make bench` first")
    dataset = json.loads(manifest.read_text())
    url = as_app_role(embedded.database_url(server_url, name))
    app = create_app(replace(Settings.from_env(), database_url=url))
    client = app.test_client()
    tokens, boards = dataset["tokens"][:REQUESTS], dataset["dashboards"]
    plans = {
        "trending": [("/dashboard/trending", tokens[0])] * REQUESTS,
        "related (most viewed)": [
            (f"/dashboard/{d}/related", tokens[0]) for d in boards[:REQUESTS]
        ],
        "related (random)": [
            (f"/dashboard/{d}/related", tokens[0]) for d in boards[len(boards) // 5 :][:REQUESTS]
        ],
        "recommended": [("/dashboard/recommended", token) for token in tokens],
        "usage report (30 days)": [("/reports/usage", tokens[0])] * min(REQUESTS, 5),
    }
    # Related and recommended are computed on the first ask, then kept for a minute: each
    # plan is run with no kept answers ("computed"), then again ("kept").
    kept_plans = {f"{label}, kept": plan for label, plan in plans.items() if label.startswith("re")}
    plans = {
        **{(f"{k}, computed" if k.startswith("re") else k): plan for k, plan in plans.items()},
        **kept_plans,
    }
    with app.app_context(), transaction(BIG_ORG) as connection:
        forget = text("DELETE FROM engagement_answers WHERE org = :org")
        connection.execute(forget, {"org": BIG_ORG})
    log(f"{EVENTS:,} events, one request at a time, as the app role")
    for label, plan in plans.items():
        # What gunicorn's background thread does every AUDIT_SEAL_INTERVAL_SECONDS: the
        # windows asked for are counted again, so that a request corrects a minute of views
        # at most (not every view recorded since the last run of a benchmark).
        with app.app_context():
            keep_windows_counted(BIG_ORG)
        times = []
        for path, token in plan:
            started = time.perf_counter()
            response = client.get(f"{BASE}{path}", headers={"Authorization": f"Bearer {token}"})
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{path}: {response.status_code} {response.get_data()[:200]!r}")
        print(
            f"{label:<32} p50 {statistics.median(times):8.1f} ms   max {max(times):8.1f} ms"
            f"   (n={len(times)})",
            flush=True,
        )
    with app.app_context():
        with transaction(BIG_ORG) as connection:  # each kept answer asked for again
            connection.execute(
                text("UPDATE engagement_answers SET asks = 1 WHERE org = :org"), {"org": BIG_ORG}
            )
        started = time.perf_counter()
        computed = keep_answers_fresh(BIG_ORG)
        seconds = time.perf_counter() - started
        with transaction(BIG_ORG) as connection:
            row = connection.execute(
                text(
                    "SELECT count(*), coalesce(sum(pg_column_size(a.*)), 0)"
                    " FROM engagement_answers AS a WHERE org = :org"
                ),
                {"org": BIG_ORG},
            ).one()
            count, size = int(row[0]), int(row[1])
    print(
        f"the worker computed {computed} kept answers again in {seconds:.2f} s"
        f" ({seconds / max(computed, 1) * 1000:.0f} ms each); {count} answers kept,"
        f" {size / 1024:.0f} KiB ({size / max(count, 1) / 1024:.1f} KiB each)",
        flush=True,
    )
    app.extensions["insights_audit.engine"].dispose()


if __name__ == "__main__":
    main()
