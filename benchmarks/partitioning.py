"""``make bench-partitioning``: what partitioning the trail and retention cost at scale.

1. Converting: a ``bench_<N>`` database still at migration 0008 (an unpartitioned trail, as
   ``make bench`` of a commit before migration 0009 builds it) is upgraded while a reader
   queries the trail every 20 ms and a sampler lists the locks the migration holds. Prints
   the migration's time, the longest a read waited and every lock seen on the trail's tables.
2. Retention: ``retention_<N>`` (one org of N events over 365 days, loaded into month
   partitions and sealed) has everything older than ``BENCH_RETENTION_DAYS`` (180) removed
   by ``retention.apply``. Prints seconds per dropped partition and the disk freed, read
   from ``pg_total_relation_size``.

Results are added to ``benchmarks/results/partitioning.json``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
from sqlalchemy import func, select

from benchmarks.database import seal_all, start_database
from benchmarks.dataset import seed_org
from benchmarks.settings import BIG_SHAPE, EVENTS, ROOT, log
from insights_audit import create_app
from insights_audit.audit.keys import signing_key
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.unit_of_work import EVERY_ORG, transaction
from insights_audit.dev import embedded
from insights_audit.integrity import retention

RESULTS = ROOT / "benchmarks" / "results" / "partitioning.json"
UNPARTITIONED = "0008"
RETENTION_DAYS = int(os.environ.get("BENCH_RETENTION_DAYS", "180"))
TRAIL_SIZE = """
    SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
    FROM pg_class AS c
    WHERE c.relkind = 'r' AND (c.relname = 'audit_entries' OR c.relname LIKE 'audit_entries_%%')
"""
TRAIL_LOCKS = """
    SELECT c.relname, l.mode
    FROM pg_locks AS l JOIN pg_class AS c ON c.oid = l.relation
    WHERE l.pid <> ALL(%s) AND l.granted AND c.relkind IN ('r', 'p')
      AND c.relname LIKE 'audit_entries%%'
"""
PROBE = "SELECT id FROM audit_entries WHERE org = 'bench-org-0' ORDER BY created_at DESC LIMIT 1"


def revision(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def convert(url: str) -> dict[str, Any]:
    """Upgrade an unpartitioned trail to the newest schema, timing it and watching what it
    blocks."""
    done = threading.Event()
    waits: list[float] = []
    locks: dict[tuple[str, str], float] = {}
    # The probes' own backends, whose locks are not the migration's.
    probe_pids: list[int] = []

    def read_the_trail() -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            probe_pids.append(connection.info.backend_pid)
            while not done.is_set():
                started = time.perf_counter()
                connection.execute(PROBE).fetchall()
                waits.append(time.perf_counter() - started)
                time.sleep(0.02)

    def sample_locks() -> None:
        with psycopg.connect(url, autocommit=True) as connection:
            probe_pids.append(connection.info.backend_pid)
            while not done.is_set():
                for relname, mode in connection.execute(TRAIL_LOCKS, (probe_pids,)):
                    locks[(relname, mode)] = locks.get((relname, mode), 0.0) + 0.02
                time.sleep(0.02)

    probes = [threading.Thread(target=read_the_trail), threading.Thread(target=sample_locks)]
    for probe in probes:
        probe.start()
    started = time.perf_counter()
    try:
        schema_migrations.upgrade(url)
    finally:
        seconds = time.perf_counter() - started
        done.set()
        for probe in probes:
            probe.join()
    with psycopg.connect(url, autocommit=True) as connection:
        counted = connection.execute("SELECT count(*) FROM audit_entries").fetchone()
    entries = counted[0] if counted else 0
    seen = {f"{name} {mode}": round(s, 2) for (name, mode), s in locks.items()}
    result: dict[str, Any] = {
        "entries": entries,
        "migration_s": round(seconds, 1),
        "longest_read_wait_s": round(max(waits, default=0.0), 2),
        "reads": len(waits),
        "locks_seen_s": seen,
    }
    log(
        f"converted {entries:,} entries in {seconds:.1f} s; longest read wait"
        f" {result['longest_read_wait_s']} s over {len(waits)} reads"
    )
    for lock, held in sorted(seen.items()):
        log(f"  seen for about {held} s: {lock}")
    return result


def build_retention_database(server_url: str, name: str, events: int) -> None:
    """One org of ``events`` events over a year, loaded into month partitions."""
    url = embedded.database_url(server_url, name)
    embedded.drop_database(server_url, name)
    embedded.ensure_database(server_url, name)
    schema_migrations.upgrade(url)
    log(f"building {name}: {events:,} events over 365 days ...")
    seed_org(url, "retention-org", events, BIG_SHAPE)


def retention_run(server_url: str, events: int) -> dict[str, Any]:
    """Seed one org over a year into month partitions (or, with ``BENCH_REUSE_RETENTION``,
    reuse it), seal it, and remove the months older than ``BENCH_RETENTION_DAYS``."""
    name = f"retention_{events}"
    url = embedded.database_url(server_url, name)
    if os.environ.get("BENCH_REUSE_RETENTION") and revision(url):
        log(f"reusing {name}")
    else:
        build_retention_database(server_url, name, events)
    seal_all(url)
    app = create_app(replace(Settings.from_env(), database_url=url))
    key = signing_key(app.config["SETTINGS"])
    with app.app_context():
        with transaction(EVERY_ORG) as connection:
            before = int(connection.exec_driver_sql(TRAIL_SIZE).scalar_one())
            horizon = connection.execute(select(func.now())).scalar_one() - timedelta(
                days=RETENTION_DAYS
            )
        started = time.perf_counter()
        lines = retention.apply(transaction, key, horizon)
        seconds = time.perf_counter() - started
        with transaction(EVERY_ORG) as connection:
            after = int(connection.exec_driver_sql(TRAIL_SIZE).scalar_one())
            left: int = connection.exec_driver_sql(
                "SELECT count(*) FROM audit_entries"
            ).scalar_one()
    app.extensions["insights_audit.engine"].dispose()
    dropped = sum(1 for line in lines if ": removed " in line)
    for line in lines:
        log(f"  {line}")
    result = {
        "events": events,
        "retention_days": RETENTION_DAYS,
        "partitions_dropped": dropped,
        "seconds": round(seconds, 2),
        "seconds_per_partition": round(seconds / dropped, 3) if dropped else None,
        "trail_bytes_before": before,
        "trail_bytes_after": after,
        "entries_left": left,
    }
    log(
        f"retention: {dropped} partitions in {seconds:.2f} s; trail {before / 2**20:,.0f} MB"
        f" -> {after / 2**20:,.0f} MB; {left:,} entries left"
    )
    return result


def main() -> int:
    server_url, _ = start_database()
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    url = embedded.database_url(server_url, f"bench_{EVENTS}")
    if revision(url) == UNPARTITIONED:
        results["conversion"] = convert(url)
    else:
        log(f"bench_{EVENTS} is not an unpartitioned trail at {UNPARTITIONED}: no conversion")
    results["retention"] = retention_run(server_url, EVENTS)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
