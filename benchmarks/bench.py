"""``make bench``: the service under gunicorn at BENCH_EVENTS events, driven by wrk.

Builds (or reuses) an embedded PostgreSQL holding BENCH_EVENTS seeded events, and a tenth of
that for the scaling ratios; starts gunicorn with ``gunicorn.conf.py``; measures every
endpoint with wrk at ``-c 16`` (throughput) and ``-c 1`` (latency), and in the same run two
ceilings: ``GET /healthz`` under the same gunicorn and pgbench running the view's exact SQL.
Prints a table and writes ``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

from benchmarks.cpu import CpuMeter, CpuSplit
from benchmarks.database import bytes_per_event, pgbench_view, seal_all, start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import DATA, EVENTS, READS, RESULTS, ROOT, SECONDS, SMALL_EVENTS, log
from benchmarks.trail_out import measure as measure_trail_out

# BENCH_TRAIL_OUT=off skips export, feed and search (minutes at 10M), for repeated runs.
TRAIL_OUT = os.environ.get("BENCH_TRAIL_OUT", "on") != "off"
SETTLE_SECONDS = 3
# Endpoints measured again with request metrics off, for what metrics cost.
METRICS_PROBES = ("recently-viewed", "audit-log", "view")


def main() -> int:
    ensure_tools()
    DATA.mkdir(parents=True, exist_ok=True)
    server_url, pgdata = start_database()
    data = build_dataset(server_url, EVENTS)
    small = build_dataset(server_url, SMALL_EVENTS)
    rng = random.Random(7)
    plans = request_plans(data, rng)
    scripts = {name: lua_script(name, method, reqs) for name, (method, reqs) in plans.items()}

    sealing_rate = seal_all(data.url)
    seal_all(small.url)

    log(f"measuring at {EVENTS:,} events, {SECONDS} s per run ...")
    server = start_gunicorn(data.url)
    meter = CpuMeter(server.pid, pgdata)
    # A first run warms the workers (imports, statements prepared on each connection): the
    # /healthz measured next is the framework's floor, not its start-up.
    wrk(scripts["healthz"], 16)
    measured: dict[str, dict[str, float]] = {}
    cpu: dict[str, CpuSplit] = {}
    for name in ("healthz", *READS, "view", "view-hot"):
        meter.start()
        throughput = wrk(scripts[name], 16)
        cpu[name] = meter.split(int(throughput["requests"]), throughput["cpu_seconds"])
        # Requests of a slow endpoint may still be running after wrk's window: let them end
        # before timing one request at a time.
        time.sleep(SETTLE_SECONDS)
        latency = wrk(scripts[name], 1)
        measured[name] = {
            **throughput,
            "c1_p50_ms": latency["p50_ms"],
            "c1_p99_ms": latency["p99_ms"],
        }
        log(
            f"  {name}: {throughput['rps']:.0f} rps,"
            f" c1 p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms"
        )
    trail_out: dict[str, Any] = {}
    if TRAIL_OUT:
        log("measuring search, export and feed ...")
        trail_out = measure_trail_out(data.url)
    rss = stop_gunicorn(server)
    log("measuring the cost of request metrics (the same endpoints with METRICS_ENABLED=off) ...")
    server = start_gunicorn(data.url, METRICS_ENABLED="off")
    without_metrics = {name: wrk(scripts[name], 16)["rps"] for name in METRICS_PROBES}
    stop_gunicorn(server)
    for name, rps_off in without_metrics.items():
        log(f"  {name}: {measured[name]['rps']:.0f} rps with metrics, {rps_off:.0f} without")
    storage = bytes_per_event(data.url, EVENTS)
    tps = pgbench_view(data, pgdata)
    log(f"  pgbench view: {tps:.0f} tps")

    log(f"measuring latency at {small.events:,} events for the scaling ratios ...")
    small_scripts = {
        name: lua_script(f"{name}-small", method, reqs)
        for name, (method, reqs) in request_plans(small, random.Random(7)).items()
    }
    server = start_gunicorn(small.url)
    small_p50 = {name: wrk(small_scripts[name], 1)["p50_ms"] for name in (*READS, "view")}
    stop_gunicorn(server)

    healthz = measured["healthz"]["rps"]
    endpoints = {
        name: {
            "rps": round(m["rps"], 1),
            "p50_ms": m["p50_ms"],
            "p99_ms": m["p99_ms"],
            "c1_p50_ms": m["c1_p50_ms"],
            "c1_p99_ms": m["c1_p99_ms"],
            "ratio_to_healthz": round(m["rps"] / healthz, 3),
            "errors": m["errors"],
        }
        for name, m in measured.items()
        if name not in ("healthz", "view-hot")
    }
    results: dict[str, Any] = {
        "events": EVENTS,
        "seconds_per_run": SECONDS,
        "ceilings": {"healthz_rps": round(healthz, 1), "pgbench_view_tps": round(tps, 1)},
        "endpoints": endpoints,
        "view": {
            "ratio_to_pgbench": round(measured["view"]["rps"] / tps, 3),
            "hot_dashboard_rps": round(measured["view-hot"]["rps"], 1),
            "hot_to_spread_ratio": round(measured["view-hot"]["rps"] / measured["view"]["rps"], 3),
        },
        # None where the smaller database gave no answer to time (every request timed out).
        "scaling": {
            name: round(measured[name]["c1_p50_ms"] / small_p50[name], 3)
            if small_p50[name]
            else None
            for name in small_p50
        },
        "scaling_events": [small.events, EVENTS],
        "worker_rss_mb": round(rss, 1),
        # Bytes per event of each table and index (month partitions folded into the trail).
        "storage_bytes_per_event": storage,
        # CPU per request of the -c 16 runs (benchmarks/cpu.py), and the share of each
        # endpoint's irreducible ceiling its rps reached.
        "cpu_per_request_ms": {
            name: {
                "python": split.python_ms,
                "postgres": split.postgres_ms,
                "load_generator": split.load_ms,
                "python_to_healthz": round(split.python_ms / cpu["healthz"].python_ms, 2)
                if cpu["healthz"].python_ms
                else None,
                "ceiling_rps": round(split.ceiling_rps(cpu["healthz"].python_ms), 1),
                "share_of_ceiling": round(
                    measured[name]["rps"] / split.ceiling_rps(cpu["healthz"].python_ms), 3
                ),
            }
            for name, split in cpu.items()
        },
        "sealing_entries_per_s": round(sealing_rate),
        "trail_out": trail_out,
        "metrics_cost": {
            name: {
                "rps_on": round(measured[name]["rps"], 1),
                "rps_off": round(rps_off, 1),
                "cost": round(1 - measured[name]["rps"] / rps_off, 3),
            }
            for name, rps_off in without_metrics.items()
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\nevents: {results['events']:,}   healthz: {results['ceilings']['healthz_rps']:.0f} rps"
        f"   pgbench view: {results['ceilings']['pgbench_view_tps']:.0f} tps\n"
    )
    print(
        f"{'endpoint':<22}{'rps':>8}{'/healthz':>10}{'p50':>8}{'p99':>8}"
        f"{'c1 p50':>8}{'c1 p99':>8}{'scale':>7}"
    )
    for name, m in results["endpoints"].items():
        scale = results["scaling"].get(name) or float("nan")
        print(
            f"{name:<22}{m['rps']:>8.0f}{m['ratio_to_healthz']:>10.2f}{m['p50_ms']:>8.2f}"
            f"{m['p99_ms']:>8.2f}{m['c1_p50_ms']:>8.2f}{m['c1_p99_ms']:>8.2f}{scale:>7.2f}"
        )
    view = results["view"]
    print(
        f"\nview / pgbench: {view['ratio_to_pgbench']:.2f}   hot dashboard: "
        f"{view['hot_dashboard_rps']:.0f} rps ({view['hot_to_spread_ratio']:.2f} x spread)"
        f"   worker RSS: {results['worker_rss_mb']:.0f} MB"
    )
    print(
        f"\n{'CPU per request (ms)':<22}{'python':>8}{'x hz':>6}{'postgres':>10}{'wrk':>7}"
        f"{'ceiling':>9}{'share':>7}"
    )
    for name, split in results["cpu_per_request_ms"].items():
        ratio = split["python_to_healthz"] or float("nan")
        print(
            f"{name:<22}{split['python']:>8.3f}{ratio:>6.1f}{split['postgres']:>10.3f}"
            f"{split['load_generator']:>7.3f}{split['ceiling_rps']:>9.0f}"
            f"{split['share_of_ceiling']:>7.2f}"
        )
    storage = results["storage_bytes_per_event"]
    print(f"\nbytes per event: {storage['total']:.0f} in all")
    for name, size in storage["relations"].items():
        print(f"  {name:<60}{size:>8.1f}")
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
