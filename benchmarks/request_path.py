"""``make bench-request-path``: the Python CPU of one request, in process, per endpoint.

No gunicorn, no sockets, no load generator: the app (as the app role, on ``bench_<BENCH_EVENTS>``
built by ``make bench``) is called as a WSGI callable, one request at a time, and the process's
own CPU time per request is printed (PostgreSQL's time is not in it; the client's wait is not
CPU). Quick and repeatable enough to compare one change to the request path with the next;
``make bench`` measures the same under gunicorn and wrk. ``BENCH_REQUEST_PATH_PROFILE=name``
also prints cProfile's top functions of that endpoint; ``BENCH_APP_ROOT`` measures another
checkout's app (its ``insights_audit`` imported instead of this one's).
"""

from __future__ import annotations

import cProfile
import io
import logging.config
import os
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

# BENCH_APP_ROOT: the app of another checkout (a before/after comparison on one database).
if os.environ.get("BENCH_APP_ROOT"):
    sys.path.insert(0, os.environ["BENCH_APP_ROOT"])
# As under gunicorn (gunicorn.conf.py): metrics in files shared by processes, JSON log lines.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-metrics-"))

from benchmarks.database import as_app_role, start_database
from benchmarks.dataset import build_dataset, request_plans
from benchmarks.settings import EVENTS, log
from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.web.logs import logging_config

ROUNDS = int(os.environ.get("BENCH_REQUEST_PATH_ROUNDS", "5"))
REQUESTS = int(os.environ.get("BENCH_REQUEST_PATH_REQUESTS", "1000"))
ENDPOINTS: tuple[str, ...] = ("healthz", "recently-viewed", "most-viewed", "stats-30d")
ENDPOINTS += ("audit-log", "dashboard-logs", "view")


def environ(method: str, path: str, token: str, body: str) -> dict[str, Any]:
    path, _, query = path.partition("?")
    data = body.encode()
    return {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8100",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8100",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "HTTP_USER_AGENT": "bench-request-path",
        "CONTENT_TYPE": "application/json" if data else "",
        "CONTENT_LENGTH": str(len(data)) if data else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(data),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def call(app: Callable[..., Iterable[bytes]], env: dict[str, Any]) -> int:
    status: list[str] = []

    def start_response(line: str, headers: Any, exc_info: Any = None) -> None:
        status.append(line)

    result = app(env, start_response)
    try:
        for _ in result:
            pass
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return int(status[0].split()[0])


def cpu_per_request(app: Any, requests: list[dict[str, Any]]) -> float:
    """Milliseconds of this process's CPU per request over ``requests``."""
    started = time.process_time()
    for env in requests:
        env["wsgi.input"].seek(0)
        status = call(app, env)
        if status >= 400:
            sys.exit(f"{env['PATH_INFO']} answered {status}")
    return (time.process_time() - started) * 1000 / len(requests)


def main() -> int:
    logging.config.dictConfig(logging_config("json"))
    for handler in logging.getLogger().handlers:
        handler.setStream(open(os.devnull, "w"))  # type: ignore[attr-defined]  # noqa: SIM115
    server_url, _ = start_database()
    data = build_dataset(server_url, EVENTS)
    plans = request_plans(data, random.Random(7))
    settings = Settings.from_env()
    # Every token stays cached (the warm-up reads each): the numbers do not hinge on how many
    # lookups a time-based cache happened to miss. The last row looks every token up.
    app = create_app(
        replace(settings, database_url=as_app_role(data.url), token_cache_seconds=3600)
    )
    uncached = create_app(
        replace(settings, database_url=as_app_role(data.url), token_cache_seconds=0)
    )
    profiled = os.environ.get("BENCH_REQUEST_PATH_PROFILE")
    log(f"app: {sys.modules['insights_audit'].__file__}")
    log(f"{REQUESTS} requests x {ROUNDS} rounds per endpoint, in process, as the app role")
    results: dict[str, float] = {}
    for name in ENDPOINTS:
        method, reqs = plans[name]
        requests = [environ(method, *random.Random(n).choice(reqs)) for n in range(REQUESTS)]
        cpu_per_request(app, requests)  # warm: statements prepared, tokens cached
        results[name] = min(cpu_per_request(app, requests) for _ in range(ROUNDS))
        if name == profiled:
            profile = cProfile.Profile(time.process_time)
            profile.runcall(cpu_per_request, app, requests)
            stats = pstats.Stats(profile, stream=sys.stdout)
            stats.sort_stats(os.environ.get("BENCH_REQUEST_PATH_SORT", "tottime")).print_stats(60)
    method, reqs = plans["recently-viewed"]
    requests = [environ(method, *random.Random(n).choice(reqs)) for n in range(REQUESTS)]
    cpu_per_request(uncached, requests[:100])
    results["recently-viewed, token looked up"] = min(
        cpu_per_request(uncached, requests) for _ in range(ROUNDS)
    )
    floor = results["healthz"]
    print(f"{'endpoint':<34} {'CPU ms/request':>15} {'x /healthz':>11}")
    for name, ms in results.items():
        print(f"{name:<34} {ms:>15.3f} {ms / floor:>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
