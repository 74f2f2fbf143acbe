"""Load generation: wrk (installed when missing) with a Lua script per endpoint, its report
parsed, and gunicorn started and stopped as in production."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.database import as_app_role, settle
from benchmarks.settings import DATA, PORT, ROOT, SECONDS, URL, log


def ensure_tools() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing wrk (Debian package) ...")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
        return
    sys.exit("wrk is missing: install it (Debian/Ubuntu: sudo apt-get install wrk) and rerun.")


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
    """One wrk run: rps, p50 and p99, non-2xx responses, requests, and wrk's own CPU seconds
    (by ``wait4``: the load generator's share of the box)."""
    threads = min(2, connections)
    command = subprocess.Popen(
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
        stdout=subprocess.PIPE,
        text=True,
    )
    assert command.stdout is not None
    out = command.stdout.read()
    _, status, usage = os.wait4(command.pid, 0)
    command.returncode = os.waitstatus_to_exitcode(status)
    if command.returncode != 0:
        raise subprocess.CalledProcessError(command.returncode, command.args, out)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    if "99" not in percentiles:
        log(f"  {script.stem}: no successful request\n{out}")
        percentiles = {"50": "0us", "99": "0us"}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        problems = [match.group(0) for match in (errors, socket_errors) if match]
        log(f"  {script.stem}: {'; '.join(problems)}")
    requests = re.search(r"(\d+) requests in", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": to_ms(percentiles["50"]),
        "p99_ms": to_ms(percentiles["99"]),
        "errors": float(errors.group(1)) if errors else 0.0,
        "requests": float(requests.group(1)) if requests else 0.0,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def start_gunicorn(database_url: str, **env: str) -> subprocess.Popen[bytes]:
    try:
        with urllib.request.urlopen(f"{URL}/healthz", timeout=1):
            sys.exit(f"something already answers on {URL} (a gunicorn of an earlier run?)")
    except OSError:
        pass  # the port is free
    settle(database_url)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{PORT}"],
        # BENCH_APP_ROOT: another checkout's app (a before/after comparison on one database).
        cwd=os.environ.get("BENCH_APP_ROOT", ROOT),
        # The service runs as the least-privileged app role, under row-level security.
        env={**os.environ, "DATABASE_URL": as_app_role(database_url), **env},
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
