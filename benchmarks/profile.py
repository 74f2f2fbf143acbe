"""``make bench-profile``: where a gunicorn worker spends its CPU, per endpoint.

Starts gunicorn on ``bench_<BENCH_EVENTS>`` (built by ``make bench``), drives each endpoint
named in ``BENCH_PROFILE`` (default: three reads and the view) with wrk at ``-c 16`` for
``BENCH_SECONDS`` while py-spy samples the thread holding the GIL in each worker (Python's
own CPU time; waiting on PostgreSQL or a socket is not sampled), and prints, per endpoint,
the share of samples by the layer of the innermost frame: the service's own code, SQLAlchemy,
psycopg, Flask and its extensions, JSON, metrics and logging, gunicorn, the rest.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from benchmarks.database import start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import DATA, EVENTS, SECONDS, log

WANTED = os.environ.get("BENCH_PROFILE", "recently-viewed,dashboard-logs,audit-log,view")
# The innermost frame's file decides the layer; the first match wins.
LAYERS = (
    ("service", ("insights_audit/",)),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("psycopg", ("psycopg/", "psycopg_c", "psycopg_pool/")),
    (
        "flask, werkzeug, smorest, webargs, marshmallow",
        (
            "flask/",
            "werkzeug/",
            "flask_smorest/",
            "webargs/",
            "marshmallow/",
            "apispec/",
        ),
    ),
    ("json", ("json/",)),
    ("metrics, logging", ("prometheus_client/", "logging/")),
    ("gunicorn", ("gunicorn/",)),
)


def layer(frame: str) -> str:
    for name, paths in LAYERS:
        if any(path in frame for path in paths):
            return name
    return "other (stdlib, sockets, threads)"


def shares(raw: Path) -> Counter[str]:
    """Samples per layer of the innermost frame, from py-spy's collapsed stacks."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack:
            counts[layer(stack.split(";")[-1])] += int(samples)
    return counts


def profile(name: str, script: Path, server_pid: int) -> Counter[str]:
    raw = DATA / f"profile-{name}.txt"
    spy = subprocess.Popen(
        [
            Path(sys.executable).parent / "py-spy",
            "record",
            "--pid",
            str(server_pid),
            "--subprocesses",
            # Only the thread holding the GIL: Python's CPU, not threads waiting on sockets.
            "--gil",
            "--format",
            "raw",
            "--rate",
            "250",
            "--duration",
            str(SECONDS),
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    load = threading.Thread(target=wrk, args=(script, 16))
    load.start()
    spy.wait()
    load.join()
    return shares(raw)


def main() -> int:
    ensure_tools()
    server_url, _ = start_database()
    data = build_dataset(server_url, EVENTS)
    plans = request_plans(data, random.Random(7))
    server = start_gunicorn(data.url)
    try:
        for name in WANTED.split(","):
            method, requests = plans[name]
            counts = profile(name, lua_script(name, method, requests), server.pid)
            total = sum(counts.values()) or 1
            log(f"{name}: {total} samples holding the GIL")
            for part, samples in counts.most_common():
                log(f"  {100 * samples / total:5.1f}%  {part}")
    finally:
        stop_gunicorn(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
