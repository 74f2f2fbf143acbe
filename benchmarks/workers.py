"""``make bench-workers``: gunicorn's worker model (processes x threads) chosen by measurement.

On the ``make bench`` database of ``BENCH_EVENTS`` events, as the app role, each model of
``BENCH_WORKER_MODELS`` (default ``2x8,4x4,3x6``; ``P x T``: ``WEB_CONCURRENCY`` processes of
``GUNICORN_THREADS`` threads) serves ``/healthz``, four short reads and the view at
``-c 16`` for ``BENCH_SECONDS`` each (``P x T@DIR`` runs the app of the checkout in ``DIR``:
a before/after comparison of one model); the models take turns for ``BENCH_WORKER_ROUNDS``
rounds (default 3) so that the machine's drift falls on all of them, and the median rps of
each is printed, with the workers' Python CPU per request (benchmarks/cpu.py).
"""

from __future__ import annotations

import json
import os
import random
import statistics

from benchmarks.cpu import CpuMeter
from benchmarks.database import start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import EVENTS, log

MODELS = os.environ.get("BENCH_WORKER_MODELS", "2x8,4x4,3x6").split(",")
ROUNDS = int(os.environ.get("BENCH_WORKER_ROUNDS", "3"))
ENDPOINTS = tuple(
    os.environ.get(
        "BENCH_WORKER_ENDPOINTS",
        "healthz,recently-viewed,most-viewed,stats-30d,dashboard-logs,view",
    ).split(",")
)


def main() -> None:
    ensure_tools()
    server_url, pgdata = start_database()
    data = build_dataset(server_url, EVENTS)
    plans = request_plans(data, random.Random(7))
    scripts = {name: lua_script(name, *plans[name]) for name in ENDPOINTS}
    rps: dict[str, dict[str, list[float]]] = {m: {e: [] for e in ENDPOINTS} for m in MODELS}
    python: dict[str, dict[str, list[float]]] = {m: {e: [] for e in ENDPOINTS} for m in MODELS}
    for round_ in range(ROUNDS):
        for model in MODELS:
            shape, _, app_root = model.partition("@")
            processes, threads = shape.split("x")
            if app_root:
                os.environ["BENCH_APP_ROOT"] = app_root
            else:
                os.environ.pop("BENCH_APP_ROOT", None)
            server = start_gunicorn(data.url, WEB_CONCURRENCY=processes, GUNICORN_THREADS=threads)
            try:
                meter = CpuMeter(server.pid, pgdata)
                wrk(scripts[ENDPOINTS[0]], 16)  # warm-up
                for name in ENDPOINTS:
                    meter.start()
                    run = wrk(scripts[name], 16)
                    split = meter.split(int(run["requests"]), run["cpu_seconds"])
                    rps[model][name].append(run["rps"])
                    python[model][name].append(split.python_ms)
            finally:
                stop_gunicorn(server)
            log(
                f"round {round_ + 1} {model}: "
                + ", ".join(f"{name} {rps[model][name][-1]:.0f}" for name in ENDPOINTS)
            )
    medians = {
        model: {
            name: {
                "rps": round(statistics.median(rps[model][name]), 1),
                "python_ms": round(statistics.median(python[model][name]), 3),
            }
            for name in ENDPOINTS
        }
        for model in MODELS
    }
    print(f"\nmedian rps of {ROUNDS} rounds at {EVENTS:,} events (workers' Python ms/request)")
    print(f"{'endpoint':<18}" + "".join(f"{model[-18:]:>18}" for model in MODELS))
    for name in ENDPOINTS:
        cells = "".join(
            f"{medians[m][name]['rps']:>10.0f} ({medians[m][name]['python_ms']:.2f})"
            for m in MODELS
        )
        print(f"{name:<18}{cells}")
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
