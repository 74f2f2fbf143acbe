"""``make bench-import``: ``insights-audit import`` of a view log export, timed.

Writes once (``.data/bench/import/``) a ``mongoexport`` file of ``BENCH_IMPORT_DOCUMENTS``
view logs (default 1,000,000) shaped like the benchmark's big org: 20,000 users and 5,000
dashboards, Zipf-popular, a year of views in the order the store wrote them, relaxed
Extended JSON (``$oid``, ``$date`` as ISO text) with a tenth in the canonical form
(``$date`` as ``$numberLong``, ``$uuid`` dashboard ids). Then, on a fresh database of the
benchmark's server, runs the command as an operator would, three times:

1. the first import (documents/s, the command's peak memory, the aggregates rebuild and the
   sealing it reports);
2. the same import again (everything skipped);
3. a tenth of the file into another org (the peak memory of a small file: memory is flat when
   the two peaks are alike).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg

from benchmarks.database import start_database
from benchmarks.settings import DATA, ROOT, log
from insights_audit.dev import embedded
from insights_audit.dev.demo import zipf_sampler

DOCUMENTS = int(os.environ.get("BENCH_IMPORT_DOCUMENTS", "1000000"))
USERS, DASHBOARDS, DAYS = 20_000, 5_000, 365
ORG = "bench-import"
DATABASE = "bench_import"
NAMES = ("Release velocity", "Quality gates", "Lead time", "Cloud spend", "Pipeline health")


def write_export(path: Path, documents: int, seed: int = 7) -> None:
    """A view log export of ``documents`` views, oldest first, as ``mongoexport`` writes it."""
    rng = np.random.default_rng(seed)
    end = int(time.time()) - 3600
    start = end - DAYS * 86_400
    seconds = np.sort(rng.integers(start, end, size=documents))
    millis = rng.integers(0, 1000, size=documents)
    users = zipf_sampler(rng, USERS)(documents)
    boards = zipf_sampler(rng, DASHBOARDS)(documents)
    canonical = rng.random(documents) < 0.1
    noise = rng.integers(0, 2**63, size=documents)
    dashboard_ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**62, DASHBOARDS)]
    with path.open("w") as out:
        for n in range(documents):
            second, milli, user, board = int(seconds[n]), int(millis[n]), users[n], boards[n]
            oid = f"{second:08x}{int(noise[n]):016x}"
            moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{milli:03d}Z"
            if canonical[n]:
                created = f'{{"$date":{{"$numberLong":"{second * 1000 + milli}"}}}}'
                dashboard = f'{{"$uuid":"{dashboard_ids[board]}"}}'
            else:
                created = f'{{"$date":"{moment}"}}'
                dashboard = f'"{dashboard_ids[board]}"'
            out.write(
                f'{{"_id":{{"$oid":"{oid}"}},"userId":"user-{user:05d}",'
                f'"userEmail":"user-{user:05d}@example.com","dashboardId":{dashboard},'
                f'"dashboardName":"{NAMES[board % len(NAMES)]} #{board}","createdAt":{created},'
                f'"owner":"{ORG}","__v":0}}\n'
            )


def run_import(database_url: str, org: str, export: Path) -> dict[str, object]:
    """One run of the command: its summary, wall time and peak memory (its own, by wait4)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        command = subprocess.Popen(
            [
                *(sys.executable, "-m", "insights_audit", "import", "--org", org),
                *("--views", str(export), "--map", "org="),
                *("--rejects", str(export.with_suffix(".rejects.jsonl"))),
            ],
            env={**os.environ, "DATABASE_URL": database_url},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
        assert command.stdout is not None
        output = command.stdout.read()
        _, status, usage = os.wait4(command.pid, 0)
        command.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        if command.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"import failed:\n{output}\n{errors.read().decode()}")
    done = subprocess.CompletedProcess(command.args, 0, output)
    print(done.stdout, end="")
    rate = re.search(r"\(([\d,]+) documents/s\)", done.stdout)
    rebuild = re.search(r"rollups in ([\d.]+) s", done.stdout)
    seal = re.search(r"Sealed [\d,]+ entries in ([\d.]+) s", done.stdout)
    return {
        "wall_seconds": round(wall, 1),
        "loading_documents_per_second": int(rate.group(1).replace(",", "")) if rate else None,
        "rebuild_seconds": float(rebuild.group(1)) if rebuild else None,
        "seal_seconds": float(seal.group(1)) if seal else None,
        # kB on Linux.
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def main() -> None:
    server_url, _ = start_database()
    folder = DATA / "import"
    folder.mkdir(parents=True, exist_ok=True)
    export = folder / f"views-{DOCUMENTS}.json"
    small = folder / f"views-{DOCUMENTS // 10}.json"
    for path, count in ((export, DOCUMENTS), (small, DOCUMENTS // 10)):
        if not path.exists():
            log(f"writing {count:,} view logs to {path} ...")
            write_export(path, count)
    embedded.drop_database(server_url, DATABASE)
    database_url = embedded.ensure_database(server_url, DATABASE)
    subprocess.run(
        [sys.executable, "-m", "insights_audit", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    log(f"importing {DOCUMENTS:,} view logs ({export.stat().st_size / 2**20:,.0f} MiB) ...")
    small_run = run_import(database_url, "bench-import-small", small)
    first = run_import(database_url, ORG, export)
    log("importing the same file again ...")
    again = run_import(database_url, ORG, export)
    with psycopg.connect(database_url) as connection:
        size = connection.execute(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits"
            " WHERE inhparent = 'audit_entries'::regclass"
        ).fetchone()
    results = {"documents": DOCUMENTS, "first": first, "again": again, "small": small_run}
    print(json.dumps(results, indent=2))
    print(f"trail size after the import: {size[0] if size else '?'}")


if __name__ == "__main__":
    main()
