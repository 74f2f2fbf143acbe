"""Where a request's CPU goes: gunicorn's workers, PostgreSQL and the load generator, per
request, read from ``/proc`` around a wrk run.

A process's ``utime`` and ``stime`` (``/proc/PID/stat``) count every thread of it. The
workers are the gunicorn master's children; PostgreSQL is the postmaster and every process
it started (backends and its own background processes); wrk is measured by ``wait4``.

The *irreducible ceiling* of an endpoint is what the box would serve if the service added
nothing to the framework's floor but its own SQL: the machine's cores divided by
(``/healthz``'s Python CPU per request + the endpoint's PostgreSQL CPU per request + the load
generator's CPU per request). The *share* is the rps measured over that ceiling.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # the process ended
    # The command name, in parentheses, may hold spaces: the fields after it are split.
    return text[text.rindex(")") + 2 :].split()


def cpu_by_process(pids: list[int]) -> dict[int, float]:
    """User and system CPU of each of ``pids`` so far, in seconds (those gone are left out)."""
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return found


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two readings: by the processes still there, and all of that of the
    processes started since (a process gone meanwhile loses what it spent since ``before``)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster of ``pgdata`` and every process it started."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    return [postmaster, *children(postmaster)]


@dataclass(frozen=True)
class CpuSplit:
    """CPU milliseconds per request of one run, by where they were spent."""

    python_ms: float
    postgres_ms: float
    load_ms: float

    def ceiling_rps(self, healthz_python_ms: float) -> float:
        """The irreducible ceiling (see the module's docstring)."""
        floor = healthz_python_ms + self.postgres_ms + self.load_ms
        return CORES * 1000 / floor if floor else float("nan")


class CpuMeter:
    """CPU of gunicorn's workers and of PostgreSQL, read before and after a run."""

    def __init__(self, gunicorn_master: int, pgdata: Path) -> None:
        self._master = gunicorn_master
        self._pgdata = pgdata
        self._start: tuple[dict[int, float], dict[int, float]] = ({}, {})

    def _now(self) -> tuple[dict[int, float], dict[int, float]]:
        # Both sets are read again each time: PostgreSQL starts a backend per new connection.
        return (
            cpu_by_process(children(self._master)),
            cpu_by_process(postgres_pids(self._pgdata)),
        )

    def start(self) -> None:
        self._start = self._now()

    def split(self, requests: int, load_seconds: float) -> CpuSplit:
        """The run's CPU per request; ``load_seconds``: the load generator's CPU."""
        python, postgres = self._now()
        per = 1000 / max(requests, 1)
        return CpuSplit(
            python_ms=round(cpu_spent(self._start[0], python) * per, 3),
            postgres_ms=round(cpu_spent(self._start[1], postgres) * per, 3),
            load_ms=round(load_seconds * per, 3),
        )
