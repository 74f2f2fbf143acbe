"""Real time, measured: live tails beside the reads, and push streams to a local receiver.

``make bench-realtime`` runs gunicorn as in production (``gunicorn.conf.py``, the app role,
default workers and threads) on a fresh database of the PostgreSQL at ``DATABASE_URL``
(default: the local server) with one org of ``REALTIME_ENTRIES`` entries (default 100,000),
and prints:

1. the reads (wrk, ``-c16`` and ``-c1``, ``BENCH_SECONDS`` each) without tails and with
   ``REALTIME_TAILS`` (200) open tails, side by side, and the memory each open tail costs;
2. commit to receipt on open tails while views arrive at ``REALTIME_VIEWS_PER_SECOND`` (200);
3. a push stream's throughput from the start of the org's trail to a local webhook receiver
   (batches of ``STREAM_BATCH_SIZE``), and commit to receipt on that stream under the same
   views.

Times "from commit" are measured from the moment the view's request was sent (the commit
happens later), so they are upper bounds.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import demo, devserver, embedded
from insights_audit.dev.devserver import APP_ROLE
from insights_audit.web.api import BASE_PATH
from insights_audit.web.tokens import create_token

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PORT = int(os.environ.get("BENCH_PORT", "8100"))
URL = f"http://127.0.0.1:{PORT}"
ORG = "realtime"
ENTRIES = int(os.environ.get("REALTIME_ENTRIES", "100000"))
TAILS = int(os.environ.get("REALTIME_TAILS", "200"))
VIEWS_PER_SECOND = int(os.environ.get("REALTIME_VIEWS_PER_SECOND", "200"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
DATA = ROOT / ".data" / "bench"


def token(roles: list[str], scopes: list[str], user: str) -> str:
    with transaction() as connection:
        _, secret = create_token(
            connection,
            org=ORG,
            user_id=user,
            user_email=None,
            roles=roles,
            scopes=scopes,
            name=None,
            expires_in_days=None,
        )
    return secret


@contextmanager
def gunicorn(database_url: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BIND": f"127.0.0.1:{PORT}",
        "STREAM_ALLOW_HTTP": "1",
        "STREAM_ALLOW_PRIVATE": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(DATA / "gunicorn-realtime.log").open("ab"),
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{URL}/readyz", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield server
    finally:
        server.terminate()
        server.wait()


def workers_rss_kb(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    total = 0
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def wrk(script: Path, connections: int) -> dict[str, float]:
    from benchmarks.load import to_ms

    threads = min(2, connections)
    arguments = [f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency", "-s"]
    out = subprocess.run(
        ["wrk", *arguments, str(script), URL],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    p99 = to_ms(
        next(line.split()[1] for line in out.splitlines() if line.strip().startswith("99%"))
    )
    rps = float(next(line.split()[1] for line in out.splitlines() if "Requests/sec" in line))
    return {"rps": rps, "p99_ms": p99}


def reads_script(reader: str) -> Path:
    from benchmarks.load import lua_script

    requests = [
        (f"{BASE_PATH}/dashboard/recently-viewed", reader, ""),
        (f"{BASE_PATH}/dashboard/most-viewed", reader, ""),
    ]
    return lua_script("realtime-reads", "GET", requests)


def open_tail(auditor: str) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", PORT), timeout=30)
    connection.sendall(
        f"GET {BASE_PATH}/stream HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {auditor}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(1)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return connection


def follow(connection: socket.socket, arrivals: dict[str, float], stop: threading.Event) -> None:
    """Record when each entry id arrives on a tail."""
    buffer = b""
    connection.settimeout(0.5)
    while not stop.is_set():
        try:
            chunk = connection.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        now = time.monotonic()
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            # The hub sends whole events in each chunk: a data line is never cut by framing.
            if line.startswith(b"data: "):
                arrivals.setdefault(json.loads(line[6:])["id"], now)


def write_views(writer: str, per_second: int, seconds: int) -> dict[str, float]:
    """POST views at ``per_second`` for ``seconds`` from 4 threads; each id with the time its
    request was sent."""
    sent: dict[str, float] = {}
    lock = threading.Lock()
    interval = 4 / per_second
    deadline = time.monotonic() + seconds

    def run() -> None:
        next_at = time.monotonic()
        while next_at < deadline:
            time.sleep(max(0.0, next_at - time.monotonic()))
            request = urllib.request.Request(
                f"{URL}{BASE_PATH}/dashboard/{uuid.uuid4()}/view",
                method="POST",
                headers={"Authorization": f"Bearer {writer}"},
            )
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                entry_id = json.load(response)["data"]["auditLogId"]
            with lock:
                sent[entry_id] = started
            next_at += interval

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def latencies(sent: dict[str, float], arrivals: dict[str, float]) -> str:
    delays = sorted(
        arrivals[entry] - started for entry, started in sent.items() if entry in arrivals
    )
    if not delays:
        return "nothing arrived"
    p50 = statistics.median(delays)
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return (
        f"{len(delays)}/{len(sent)} arrived, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
        f" max {delays[-1] * 1000:.0f} ms"
    )


class Receiver:
    """A webhook receiver that records when each entry arrives."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.entries = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.monotonic()
                entries = json.loads(body)["entries"]
                receiver.entries += len(entries)
                for entry in entries:
                    receiver.arrivals.setdefault(entry["id"], now)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    from benchmarks.load import ensure_tools

    ensure_tools()
    DATA.mkdir(parents=True, exist_ok=True)
    name = f"insights_audit_realtime_{uuid.uuid4().hex[:8]}"
    database_url = embedded.ensure_database(SERVER, name)
    try:
        schema_migrations.upgrade(database_url)
        app = create_app(replace(Settings.from_env(), database_url=database_url))
        with app.app_context():
            print(f"seeding {ENTRIES:,} entries ...", flush=True)
            demo.seed(engine(), demo.SeedPlan(ORG, ENTRIES, 500, 100, 30, 7), lambda _: None)
            reader = token(["Users"], ["api-readonly"], "reader")
            auditor = token(["Auditor"], ["api-readonly"], "auditor")
            admin = token(["Administrator"], ["api"], "admin")
        app_url = devserver.app_role_url(app, database_url, APP_ROLE)
        app.extensions["insights_audit.engine"].dispose()
        script = reads_script(reader)
        with gunicorn(app_url) as server:
            _tails_beside_reads(server.pid, script, auditor, admin)
            _push_stream(admin)
    finally:
        embedded.drop_database(SERVER, name)


ROUNDS = 3


def _tails_beside_reads(master: int, script: Path, auditor: str, writer: str) -> None:
    """Reads without and with open tails, alternating, ``ROUNDS`` times: medians."""
    wrk(script, 16)  # warm up
    runs: dict[tuple[bool, int], list[dict[str, float]]] = {}
    growth = []
    tails: list[socket.socket] = []
    for _ in range(ROUNDS):
        for connection in tails:
            connection.close()
        time.sleep(1)
        for connections in (16, 1):
            runs.setdefault((False, connections), []).append(wrk(script, connections))
        rss_before = workers_rss_kb(master)
        tails = [open_tail(auditor) for _ in range(TAILS)]
        time.sleep(2)
        growth.append((workers_rss_kb(master) - rss_before) / TAILS)
        for connections in (16, 1):
            runs.setdefault((True, connections), []).append(wrk(script, connections))

    def median(key: tuple[bool, int], figure: str) -> float:
        return statistics.median(run[figure] for run in runs[key])

    print(
        f"\nreads (recently-viewed, most-viewed), without and with {TAILS} open tails,"
        f" medians of {ROUNDS} alternating runs:"
    )
    print("connections   rps without   rps with   ratio   p99 without   p99 with   ratio")
    for connections in (16, 1):
        a_rps, b_rps = median((False, connections), "rps"), median((True, connections), "rps")
        a_p99 = median((False, connections), "p99_ms")
        b_p99 = median((True, connections), "p99_ms")
        print(
            f"{connections:>11}  {a_rps:>12.0f}  {b_rps:>9.0f}  {b_rps / a_rps:>6.2f}"
            f"  {a_p99:>9.2f} ms  {b_p99:>6.2f} ms  {b_p99 / a_p99:>5.2f}"
        )
    print(f"memory per open tail: {statistics.median(growth):.1f} KiB (workers' RSS, median)")
    arrivals: list[dict[str, float]] = [{} for _ in range(10)]
    stop = threading.Event()
    followers = [
        threading.Thread(target=follow, args=(tails[n * (TAILS // 10)], arrivals[n], stop))
        for n in range(10)
    ]
    for thread in followers:
        thread.start()
    sent = write_views(writer, VIEWS_PER_SECOND, SECONDS)
    time.sleep(3)
    stop.set()
    for thread in followers:
        thread.join()
    merged = {entry: max(a.get(entry, 0) for a in arrivals) for entry in sent}
    merged = {entry: at for entry, at in merged.items() if at}
    print(
        f"\nviews sent to {TAILS} open tails at {VIEWS_PER_SECOND}/s for {SECONDS} s, from"
        f" request sent to arrival on the slowest of 10 watched tails: {latencies(sent, merged)}"
    )
    for connection in tails:
        connection.close()


def _push_stream(admin: str) -> None:
    receiver = Receiver()
    request = urllib.request.Request(
        f"{URL}{BASE_PATH}/streams",
        data=json.dumps(
            {"name": "bench", "kind": "webhook", "url": receiver.url, "startAt": "beginning"}
        ).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=10):
        pass
    while receiver.entries < ENTRIES:
        time.sleep(0.05)
        if time.monotonic() - started > 600:
            break
    elapsed = time.monotonic() - started
    print(
        f"\npush stream from the beginning: {receiver.entries:,} entries in {elapsed:.1f} s,"
        f" {receiver.entries / elapsed:,.0f} entries/s"
    )
    time.sleep(2)
    sent = write_views(admin, VIEWS_PER_SECOND, SECONDS)
    time.sleep(3)
    print(
        f"views at {VIEWS_PER_SECOND}/s for {SECONDS} s, from request sent to the receiver:"
        f" {latencies(sent, receiver.arrivals)}"
    )


if __name__ == "__main__":
    main()
