"""How many slow clients one instance survives: clients that trickle their request headers a
byte at a time, and clients that open an export and stop reading. For each count it prints
the latency of ``/healthz`` and of a short read while they hold on (``-`` when it timed out).

Runs gunicorn as in production (``gunicorn.conf.py``, the app role, default workers and
threads) on a fresh database of the PostgreSQL at ``DATABASE_URL`` (default: the local
server), with one org of 40,000 entries to export. ``make bench-slow-clients``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import demo, devserver, embedded
from insights_audit.dev.devserver import APP_ROLE
from insights_audit.web.api import BASE_PATH
from insights_audit.web.tokens import create_token

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PORT = int(os.environ.get("BENCH_PORT", "8100"))
URL = f"http://127.0.0.1:{PORT}"
ORG = "slow-clients"
COUNTS = (8, 12, 15, 16, 24, 48)


def trickle(stop: threading.Event) -> None:
    """One header byte every half second, never ending the request."""
    with socket.create_connection(("127.0.0.1", PORT)) as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\n")
        while not stop.wait(0.5):
            try:
                client.sendall(b"X")
            except OSError:
                return


def stalled_export(token: str, stop: threading.Event) -> None:
    """An export whose client reads its headers and then nothing."""
    with socket.create_connection(("127.0.0.1", PORT)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sendall(
            f"GET {BASE_PATH}/export HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        client.recv(64)
        stop.wait()


def latency_ms(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
    except OSError:
        return "-"
    return f"{(time.perf_counter() - started) * 1000:.0f}"


@contextmanager
def gunicorn(database_url: str) -> Iterator[None]:
    env = {**os.environ, "DATABASE_URL": database_url, "BIND": f"127.0.0.1:{PORT}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while latency_ms(f"{URL}/healthz") == "-":
            time.sleep(0.2)
        yield
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    name = f"insights_audit_slow_{uuid.uuid4().hex[:8]}"
    database_url = embedded.ensure_database(SERVER, name)
    try:
        schema_migrations.upgrade(database_url)
        app = create_app(replace(Settings.from_env(), database_url=database_url))
        with app.app_context():
            demo.seed(engine(), demo.SeedPlan(ORG, 40_000, 200, 50, 30, 7), lambda _: None)
            with transaction() as connection:
                _, reader = create_token(
                    connection,
                    org=ORG,
                    user_id="reader",
                    user_email=None,
                    roles=["Users"],
                    scopes=["api-readonly"],
                    name=None,
                    expires_in_days=None,
                )
                _, auditor = create_token(
                    connection,
                    org=ORG,
                    user_id="auditor",
                    user_email=None,
                    roles=["Auditor"],
                    scopes=["api-readonly"],
                    name=None,
                    expires_in_days=None,
                )
        app_url = devserver.app_role_url(app, database_url, APP_ROLE)
        app.extensions["insights_audit.engine"].dispose()
        read = f"{URL}{BASE_PATH}/dashboard/recently-viewed"
        print("kind              clients  healthz_ms  read_ms")
        with gunicorn(app_url):
            for kind, target in (("trickling headers", trickle), ("stalled exports", None)):
                for count in COUNTS:
                    stop = threading.Event()
                    threads = [
                        threading.Thread(
                            target=target or stalled_export,
                            args=(stop,) if target else (auditor, stop),
                            daemon=True,
                        )
                        for _ in range(count)
                    ]
                    for thread in threads:
                        thread.start()
                    time.sleep(2)
                    healthz = latency_ms(f"{URL}/healthz")
                    reading = latency_ms(read, reader)
                    print(f"{kind:<17} {count:>7}  {healthz:>10}  {reading:>7}", flush=True)
                    stop.set()
                    for thread in threads:
                        thread.join()
                    time.sleep(1)
    finally:
        embedded.drop_database(SERVER, name)


if __name__ == "__main__":
    main()
