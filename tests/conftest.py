"""Fixtures: a throwaway PostgreSQL database migrated by Alembic, the app, tokens per test org."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import demo, embedded
from insights_audit.web.api import BASE_PATH
from insights_audit.web.tokens import create_token

BASE = BASE_PATH
TokenFactory = Callable[..., str]


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def pytest_configure(config: pytest.Config) -> None:
    """A temporary folder of this run's own: runs at once never share or clean each other's."""
    if not config.option.basetemp:
        config.option.basetemp = tempfile.mkdtemp(prefix="insights-audit-pytest-")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """Admin URL of a real PostgreSQL: TEST_DATABASE_URL, else a container, else embedded."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        # Sealing waits for every older transaction on the server, so two runs on one server
        # would hold each other's seals back: a run waits here for the other to finish.
        with psycopg.connect(configured, autocommit=True) as lock:
            lock.execute("SELECT pg_advisory_lock(hashtext('insights-audit test run'))")
            yield configured
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="insights-audit-test-")) / "pg"
        yield embedded.start_embedded_server(data_dir, delete_on_exit=True)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    """A database of its own for this run, built by the migrations, dropped afterwards."""
    name = f"insights_audit_test_{uuid.uuid4().hex[:12]}"
    url = embedded.ensure_database(server_url, name)
    schema_migrations.upgrade(url)
    yield url
    embedded.drop_database(server_url, name)


# A fixed Ed25519 seed: bytes 0..31.
TEST_SIGNING_KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(scope="session")
def app(database_url: str) -> Flask:
    # No token cache here: tests revoke and expire tokens and expect it at once.
    settings = Settings(
        database_url=database_url,
        pool_size=10,
        max_overflow=60,
        token_cache_seconds=0,
        audit_signing_key=TEST_SIGNING_KEY,
    )
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def org() -> str:
    """A fresh organisation per test: tenancy keeps tests apart without cleanup."""
    return f"org-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def make_token(app: Flask, org: str) -> TokenFactory:
    def make(
        *,
        user: str = "user-1",
        email: str | None = "user-1@example.com",
        roles: tuple[str, ...] = ("Users",),
        scopes: tuple[str, ...] = ("api",),
        token_org: str | None = None,
        expires_in_days: int | None = None,
    ) -> str:
        with app.app_context(), transaction() as connection:
            _, secret = create_token(
                connection,
                org=token_org or org,
                user_id=user,
                user_email=email,
                roles=list(roles),
                scopes=list(scopes),
                name=None,
                expires_in_days=expires_in_days,
            )
        return secret

    return make


@pytest.fixture
def token(make_token: TokenFactory) -> str:
    return make_token()


@pytest.fixture
def big_org(app: Flask, org: str) -> str:
    """An org of 40,000 entries (about 15 MB of NDJSON), loaded with COPY."""
    with app.app_context():
        # A seed of its own: the demo's ids follow from it, and ids are unique across orgs.
        seed = int.from_bytes(org.encode()[-6:], "big")
        demo.seed(engine(), demo.SeedPlan(org, 40_000, 200, 50, 30, seed), lambda _: None)
    return org


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def record_view(
    client: FlaskClient, secret: str, dashboard_id: str, **kwargs: object
) -> dict[str, Any]:
    response = client.post(
        f"{BASE}/dashboard/{dashboard_id}/view", headers=bearer(secret), **kwargs
    )
    assert response.status_code == 200, response.json
    data: dict[str, Any] = response.json["data"]
    return data


def run_sql(
    app: Flask, statement: str, *, maintenance: bool = False, **params: object
) -> list[tuple[Any, ...]]:
    """Run SQL as the table owner (to backdate entries, inspect rows); ``maintenance`` takes
    the documented path around the append-only triggers."""
    from sqlalchemy import text

    with app.app_context(), transaction() as connection:
        if maintenance:
            connection.execute(text("SET LOCAL insights_audit.maintenance = 'on'"))
        result = connection.execute(text(statement), params)
        return [tuple(row) for row in result] if result.returns_rows else []


@contextmanager
def entry_held_open(database_url: str, org: str) -> Iterator[str]:
    """An entry of ``org`` written by a transaction that stays open for the block and commits
    when it ends: the late commit a feed, tail or stream must wait for and never skip."""
    with psycopg.connect(database_url) as slow:
        slow.execute("SELECT set_config('insights_audit.org', %s, true)", (org,))
        row = slow.execute(
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
            " VALUES (audit_object_id(now()), %s, 'kpi', 'slow', gen_random_uuid(), 'w')"
            " RETURNING id",
            (org,),
        ).fetchone()
        assert row is not None
        yield str(row[0])


def new_id() -> str:
    return str(uuid.uuid4())


def rebuild_aggregates(app: Flask, org: str) -> None:
    """Recompute the org's aggregates from its trail (after writing entries with SQL)."""
    from insights_audit.audit import aggregates

    with app.app_context(), transaction(org) as connection:
        aggregates.rebuild(connection, org)


@pytest.fixture
def app_role_url(app: Flask, database_url: str) -> Iterator[str]:
    """A login role given exactly the service's privileges by ``db grant-app-role``."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
    result = app.test_cli_runner().invoke(args=["db", "grant-app-role", role])
    assert result.exit_code == 0, result.output
    url = make_url(database_url).set(username=role, password=None)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"DROP OWNED BY {role}")
        connection.execute(f"DROP ROLE {role}")


ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_gunicorn(database_url: str, log_path: str = "", **env: str) -> Iterator[str]:
    """``gunicorn wsgi:app`` as in production (``gunicorn.conf.py``), two workers unless
    ``env`` says otherwise, its stderr in the file ``log_path`` if given; yields its base URL
    and stops it afterwards."""
    port = _free_port()
    settings = {
        "DATABASE_URL": database_url,
        "AUDIT_SIGNING_KEY": TEST_SIGNING_KEY,
        "WEB_CONCURRENCY": "2",
        "BIND": f"127.0.0.1:{port}",
        "TOKEN_CACHE_SECONDS": "0",
        **env,
    }
    log = Path(log_path or tempfile.mkstemp(prefix="gunicorn-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env={**os.environ, **settings},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            _wait_until_serving(server, url, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    if not log_path:
        log.unlink()


def _wait_until_serving(server: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:]) from None
            time.sleep(0.1)
