"""Exports are bounded (second security review, findings 1, 2 and 10): a deadline, a reader
that must keep reading, database work cancelled when the client leaves, a cap per org and per
worker; none of it can stop the rest of the API. Through a real gunicorn as the app role."""

from __future__ import annotations

import dataclasses
import http.client
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view, running_gunicorn

AUDITOR = ("Auditor",)


def export_backends(database_url: str) -> list[tuple[str, str | None]]:
    """The state and wait event of every backend serving an export (its snapshot is the only
    REPEATABLE READ, read-only work of the service)."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT state, wait_event_type FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'insights-audit'"
            " AND (query LIKE 'FETCH FORWARD%%' OR query LIKE 'DECLARE%%'"
            "      OR query LIKE '%%pg_try_advisory_xact_lock%%')"
            " AND state <> 'idle'"
        ).fetchall()
    return [(row[0], row[1]) for row in rows]


def wait_until(condition: object, seconds: float) -> float:
    """Seconds until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, "condition never held"
        time.sleep(0.1)
    return time.monotonic() - started


def open_export(url: str, token: str, receive_buffer: int | None = None) -> socket.socket:
    """An export request sent on a raw socket (with a small receive buffer if given)."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.socket()
    if receive_buffer is not None:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    client.connect((host, int(port)))
    head = f"GET {BASE}/export HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}"
    client.sendall(f"{head}\r\n\r\n".encode())
    return client


def healthz_seconds(url: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"{url}/healthz", timeout=10) as response:
        assert response.status == 200
    return time.monotonic() - started


def test_a_reader_that_stops_reading_is_dropped(
    app_role_url: str, database_url: str, make_token: TokenFactory, big_org: str, tmp_path: Path
) -> None:
    token = make_token(roles=AUDITOR, scopes=("api-readonly",))
    log = tmp_path / "gunicorn.log"
    with running_gunicorn(app_role_url, str(log), EXPORT_STALL_SECONDS="2") as url:
        client = open_export(url, token, receive_buffer=4096)
        received = 0
        while received < 64 * 1024:
            received += len(client.recv(4096))
        # Stalled now: the snapshot transaction stays open only until the stall limit.
        wait_until(lambda: ("idle in transaction", "Client") in export_backends(database_url), 5)
        wait_until(lambda: not export_backends(database_url), 15)
        with psycopg.connect(database_url, autocommit=True) as admin:
            idle = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND application_name = 'insights-audit'"
            ).fetchone()
        assert idle == (0,)
        # The connection was cut: the rest of the body never comes.
        client.settimeout(10)
        rest = b""
        try:
            while chunk := client.recv(1 << 20):
                rest += chunk
        except ConnectionResetError:
            pass
        assert not rest.endswith(b"0\r\n\r\n")  # no clean end of the chunked body
        client.close()
    text = log.read_text()
    assert "export cut short" in text and "read nothing for 2 s" in text
    assert "Traceback" not in text


def test_an_export_stops_at_its_deadline(
    app_role_url: str, make_token: TokenFactory, big_org: str, tmp_path: Path
) -> None:
    token = make_token(roles=AUDITOR)
    log = tmp_path / "gunicorn.log"
    with running_gunicorn(app_role_url, str(log), EXPORT_MAX_SECONDS="2") as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", f"{BASE}/export", headers=bearer(token))
        response = connection.getresponse()
        assert response.status == 200
        started = time.monotonic()
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            while response.read(1024):
                time.sleep(0.05)  # a slow reader: the whole file would take minutes
        assert 1.5 < time.monotonic() - started < 10
    text = log.read_text()
    assert "export cut short" in text and "ran longer than 2 s" in text
    assert "request_id=" in text and f"org={big_org}" in text
    assert "Traceback" not in text


def test_database_work_stops_when_the_client_goes_away(
    app_role_url: str, database_url: str, make_token: TokenFactory, org: str, client: FlaskClient
) -> None:
    """The export's first query waits on a lock; its client leaves; the query is cancelled
    within seconds instead of running on until the lock is gone."""
    record_view(client, make_token(), new_id())
    token = make_token(roles=AUDITOR)
    with running_gunicorn(app_role_url) as url, psycopg.connect(database_url) as holder:
        holder.execute("LOCK TABLE audit_entries IN ACCESS EXCLUSIVE MODE")
        export = open_export(url, token)
        assert export.recv(12).startswith(b"HTTP/1.1 200")
        wait_until(lambda: ("active", "Lock") in export_backends(database_url), 10)
        export.close()
        gone = wait_until(lambda: not export_backends(database_url), 10)
        holder.rollback()
    assert gone < 5


def test_exports_of_one_org_beyond_the_limit_get_429(
    app: Flask, client: FlaskClient, make_token: TokenFactory
) -> None:
    token = make_token(roles=AUDITOR)
    open_ones = [client.get(f"{BASE}/export", headers=bearer(token), buffered=False)]
    open_ones.append(client.get(f"{BASE}/export", headers=bearer(token), buffered=False))
    try:
        assert [response.status_code for response in open_ones] == [200, 200]
        refused = client.get(f"{BASE}/export", headers=bearer(token))
        assert refused.status_code == 429
        assert refused.json["code"] == 429 and refused.json["status"] == "Too Many Requests"
        assert int(refused.headers["Retry-After"]) > 0
        other_org = make_token(roles=AUDITOR, token_org=f"org-z-{new_id()[:8]}")
        elsewhere = client.get(f"{BASE}/export", headers=bearer(other_org))
        assert elsewhere.status_code == 200
        elsewhere.close()
    finally:
        # Streamed responses of the test client hold request contexts: the last opened first.
        for response in reversed(open_ones):
            response.close()
    again = client.get(f"{BASE}/export", headers=bearer(token))
    assert again.status_code == 200
    again.close()


@pytest.fixture
def two_thread_app(app: Flask) -> Iterator[Flask]:
    """The app as a worker of two threads sees it: one place for streamed responses."""
    yield create_app(dataclasses.replace(app.config["SETTINGS"], worker_threads=2))


def test_streams_never_take_every_thread_of_a_worker(
    two_thread_app: Flask, make_token: TokenFactory
) -> None:
    client = two_thread_app.test_client()
    first = client.get(f"{BASE}/export", headers=bearer(make_token(roles=AUDITOR)), buffered=False)
    assert first.status_code == 200
    try:
        other_org = make_token(roles=AUDITOR, token_org=f"org-w-{new_id()[:8]}")
        refused = client.get(f"{BASE}/export", headers=bearer(other_org))
        assert refused.status_code == 429 and "Retry-After" in refused.headers
        assert client.get("/healthz").status_code == 200
    finally:
        first.close()
    again = client.get(f"{BASE}/export", headers=bearer(other_org))
    assert again.status_code == 200
    again.close()


def test_stalled_exports_never_stop_the_rest_of_the_api(
    app_role_url: str, database_url: str, make_token: TokenFactory, big_org: str
) -> None:
    """The review's 24 stalled readers (the org's own limit lifted, so that only the worker's
    limit stands between them and every thread): the API keeps answering."""
    token = make_token(roles=AUDITOR)
    reader = make_token()
    with running_gunicorn(app_role_url, EXPORT_STALL_SECONDS="600", EXPORT_CONCURRENCY="24") as url:
        stalled = [open_export(url, token, receive_buffer=4096) for _ in range(24)]
        try:
            time.sleep(1)
            assert healthz_seconds(url) < 1
            request = urllib.request.Request(
                f"{url}{BASE}/dashboard/recently-viewed", headers=bearer(reader)
            )
            started = time.monotonic()
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
            assert time.monotonic() - started < 1
            statuses = []
            for export in stalled:
                export.settimeout(5)
                statuses.append(export.recv(12)[9:12])
            assert b"429" in statuses and b"200" in statuses
        finally:
            for export in stalled:
                export.close()
