"""``make mutation``: mutation testing of the modules where a slipped bug costs the most.

Each module is mutated by cosmic-ray (every operator, module-level code and decorated
functions included), one mutant at a time, and run against its own tests only. Prints tried /
killed / survived per module and writes the survivors to ``.data/mutation/survivors.txt``.
Mutants inside type annotations (never evaluated under ``from __future__ import annotations``)
or ``metadata=`` arguments (OpenAPI examples and descriptions), and those listed in
``tools/equivalent-mutants.txt`` (``path operator occurrence  # reason``)
are equivalent to the original code and set aside. Slow (minutes per module): not in CI.

``MUTATION_MODULES=auth,idempotency make mutation`` runs some modules only. A run that was
stopped goes on where it stopped with ``MUTATION_RESUME=1`` (the mutants already tried keep
their results; the source must not have changed in between); with ``MUTATION_RETRY_SURVIVORS=1``
as well, the survivors run again, against the tests written since.
"""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import WorkerOutcome, WorkResult

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".data" / "mutation"
EQUIVALENT = ROOT / "tools" / "equivalent-mutants.txt"
BIN = Path(sys.executable).parent

# Module -> the tests that specify it.
MODULES = {
    "auth": ("insights_audit/web/auth.py", ["tests/test_auth.py", "tests/test_cli.py"]),
    "idempotency": ("insights_audit/web/idempotency.py", ["tests/test_concurrency.py"]),
    "cursors": (
        "insights_audit/trail/cursors.py",
        [
            "tests/test_parsing.py",
            "tests/test_properties.py",
            "tests/test_tenancy.py",
            "tests/test_feed.py",
            "tests/test_search.py",
            "tests/test_hosts.py",
        ],
    ),
    "trail_schemas": (
        "insights_audit/trail/schemas.py",
        ["tests/test_trail.py", "tests/test_search.py", "tests/test_feed.py"],
    ),
    "canonical": ("insights_audit/integrity/canonical.py", ["tests/test_integrity.py"]),
    "checkpoints": ("insights_audit/integrity/checkpoints.py", ["tests/test_integrity.py"]),
    "sealing": ("insights_audit/integrity/sealing.py", ["tests/test_integrity.py"]),
    "verification": (
        "insights_audit/integrity/verification.py",
        ["tests/test_integrity.py", "tests/test_retention.py"],
    ),
    "files": ("insights_audit/integrity/files.py", ["tests/test_integrity.py"]),
}


def equivalent() -> set[tuple[str, str, int]]:
    found = set()
    for line in EQUIVALENT.read_text().splitlines() if EQUIVALENT.exists() else []:
        line = line.split("#", 1)[0].strip()
        if line:
            path, operator, occurrence = line.split()
            found.add((path, operator, int(occurrence)))
    return found


Span = tuple[tuple[int, int], tuple[int, int]]


def _span(node: ast.expr) -> Span:
    return (node.lineno, node.col_offset), (node.end_lineno or 0, node.end_col_offset or 0)


def never_run_spans(path: str) -> list[Span]:
    """Where a mutant cannot change what the program does, so it is equivalent to the
    original: type annotations (never evaluated under ``from __future__ import annotations``)
    and ``metadata=`` arguments (examples and descriptions for the OpenAPI document, which
    no request reads)."""
    spans: list[Span] = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            every += [a for a in (arguments.vararg, arguments.kwarg) if a]
            found = [a.annotation for a in every if a.annotation] + [node.returns]
            spans += [_span(annotation) for annotation in found if annotation]
        elif isinstance(node, ast.AnnAssign):
            spans.append(_span(node.annotation))
        elif isinstance(node, ast.keyword) and node.arg == "metadata":
            spans.append(_span(node.value))
    return spans


def set_aside_before_running(session: Path, path: str, known: set[tuple[str, str, int]]) -> None:
    """Mark the mutants known to be equivalent as skipped, so that no time is spent on them."""
    spans = never_run_spans(path)
    skipped = WorkResult(worker_outcome=WorkerOutcome.SKIPPED)
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in db.pending_work_items:
            mutation = item.mutations[0]
            start, end = tuple(mutation.start_pos), tuple(mutation.end_pos)
            listed = (path, mutation.operator_name, mutation.occurrence) in known
            if listed or any(low <= start and end <= high for low, high in spans):
                db.set_result(item.job_id, skipped)


def run_module(name: str, path: str, tests: list[str]) -> list[dict[str, object]]:
    """Mutate ``path``, run ``tests`` against each mutant; one result per mutant."""
    config, session = WORK / f"{name}.toml", WORK / f"{name}.sqlite"
    test_command = f"{BIN / 'python'} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{path}"\n'
        "timeout = 300.0\n"
        "excluded-modules = []\n"
        f'test-command = "{test_command}"\n\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )
    resuming = os.environ.get("MUTATION_RESUME") and session.exists()
    if resuming and os.environ.get("MUTATION_RETRY_SURVIVORS"):
        # Survivors run again (against tests written since); every other result is kept.
        with sqlite3.connect(session) as db:
            db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")
    if not resuming:
        session.unlink(missing_ok=True)
        subprocess.run([BIN / "cosmic-ray", "init", config, session], cwd=ROOT, check=True)
    set_aside_before_running(session, path, equivalent())
    subprocess.run([BIN / "cosmic-ray", "exec", config, session], cwd=ROOT, check=True)
    dumped = subprocess.run(
        [BIN / "cosmic-ray", "dump", session], cwd=ROOT, check=True, capture_output=True, text=True
    )
    results = []
    for line in dumped.stdout.splitlines():
        item, result = json.loads(line)
        mutation = item["mutations"][0]
        results.append(
            {
                "path": path,
                "operator": mutation["operator_name"],
                "occurrence": mutation["occurrence"],
                "line": mutation["start_pos"][0],
                "outcome": (
                    "equivalent"
                    if (result or {}).get("worker_outcome") == WorkerOutcome.SKIPPED
                    else (result or {}).get("test_outcome")
                ),
            }
        )
    return results


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    wanted = [n for n in os.environ.get("MUTATION_MODULES", "").split(",") if n] or list(MODULES)
    set_aside = equivalent()
    survivors: list[str] = []
    print(
        f"{'module':<15} {'tried':>6} {'killed':>7} {'survived':>9} {'equivalent':>11} {'score':>6}"
    )
    for name in wanted:
        path, tests = MODULES[name]
        results = run_module(name, path, tests)
        known = [
            r
            for r in results
            if r["outcome"] == "equivalent"
            or (r["path"], r["operator"], r["occurrence"]) in set_aside
        ]
        counted = [r for r in results if r not in known and r["outcome"] != "incompetent"]
        killed = [r for r in counted if r["outcome"] == "killed"]
        survived = [r for r in counted if r["outcome"] != "killed"]
        score = 100 * len(killed) / len(counted) if counted else 100.0
        print(
            f"{name:<15} {len(results):>6} {len(killed):>7} {len(survived):>9}"
            f" {len(known):>11} {score:>5.1f}%"
        )
        survivors += [
            f"{r['path']}:{r['line']} {r['operator']} {r['occurrence']}" for r in survived
        ]
    (WORK / "survivors.txt").write_text("\n".join(survivors) + "\n")
    print(f"survivors: {WORK / 'survivors.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
