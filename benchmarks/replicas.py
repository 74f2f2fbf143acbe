"""``make bench-replicas``: what routing reads to a streaming replica costs.

On the ``make bench`` database of ``BENCH_EVENTS`` events, a streaming replica of the
benchmark's server is made (``pg_basebackup -R``, under ``.data/bench/replica``, removed at
the end) and gunicorn serves the reads, as the app role, with ``DATABASE_REPLICA_URLS``
unset and then pointing at the replica, taking turns for ``BENCH_REPLICA_ROUNDS`` rounds
(default 3); each read runs at ``-c 16`` for ``BENCH_SECONDS``. Prints the median rps of
each and their ratio, and the share of reads the replica served (from ``/metrics``). Both
servers share this machine's two cores, so this shows what routing costs, not what a replica
on its own host gains.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import urllib.request

from sqlalchemy.engine import make_url

from benchmarks.database import as_app_role, start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import DATA, EVENTS, URL, log
from insights_audit.dev import embedded

ROUNDS = int(os.environ.get("BENCH_REPLICA_ROUNDS", "3"))
ENDPOINTS = tuple(
    os.environ.get(
        "BENCH_REPLICA_ENDPOINTS",
        "recently-viewed,most-viewed,stats-30d,audit-log,dashboard-logs,trending,related",
    ).split(",")
)
MODES = ("primary only", "with replica")


def replica_reads() -> dict[str, float]:
    """The service's reads so far, by destination (its /metrics)."""
    with urllib.request.urlopen(f"{URL}/metrics", timeout=10) as response:
        text = response.read().decode()
    reads: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("insights_audit_reads_total{"):
            labels, _, value = line.rpartition(" ")
            destination = labels.split('destination="', 1)[1].split('"', 1)[0]
            reads[destination] = reads.get(destination, 0.0) + float(value)
    return reads


def main() -> None:
    ensure_tools()
    server_url, pgdata = start_database()
    data = build_dataset(server_url, EVENTS)
    replica_dir = DATA / "replica"
    log("making a streaming replica of the benchmark's server ...")
    replica_server = embedded.start_streaming_replica(pgdata, replica_dir, delete_on_exit=False)
    socket_dir = make_url(replica_server).query["host"]
    replica_url = (
        make_url(as_app_role(data.url))
        .update_query_dict({"host": socket_dir})
        .render_as_string(hide_password=False)
    )
    plans = request_plans(data, random.Random(7))
    scripts = {name: lua_script(name, *plans[name]) for name in ENDPOINTS}
    rps: dict[str, dict[str, list[float]]] = {m: {e: [] for e in ENDPOINTS} for m in MODES}
    served: dict[str, float] = {}
    try:
        for round_ in range(ROUNDS):
            for mode in MODES:
                env = {"DATABASE_REPLICA_URLS": replica_url} if mode == MODES[1] else {}
                server = start_gunicorn(data.url, **env)
                wrk(scripts[ENDPOINTS[0]], 16)  # warm-up
                for name in ENDPOINTS:
                    rps[mode][name].append(wrk(scripts[name], 16)["rps"])
                if env:
                    for destination, count in replica_reads().items():
                        served[destination] = served.get(destination, 0.0) + count
                stop_gunicorn(server)
                log(
                    f"round {round_ + 1} {mode}: "
                    + ", ".join(f"{name} {rps[mode][name][-1]:.0f}" for name in ENDPOINTS)
                )
    finally:
        embedded.stop_embedded_server(replica_dir)
        shutil.rmtree(replica_dir, ignore_errors=True)
    medians = {m: {e: round(statistics.median(rps[m][e]), 1) for e in ENDPOINTS} for m in MODES}
    total = sum(served.values()) or 1.0
    print(f"\nmedian rps of {ROUNDS} rounds at {EVENTS:,} events, -c 16")
    print(f"{'endpoint':<18}{MODES[0]:>16}{MODES[1]:>16}{'ratio':>8}")
    for name in ENDPOINTS:
        before, after = medians[MODES[0]][name], medians[MODES[1]][name]
        print(f"{name:<18}{before:>16.0f}{after:>16.0f}{after / before:>8.2f}")
    print("reads by destination: " + ", ".join(f"{d} {n / total:.1%}" for d, n in served.items()))
    print(json.dumps({"medians": medians, "reads": served}))


if __name__ == "__main__":
    main()
