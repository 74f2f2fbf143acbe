"""``make run``: PostgreSQL (embedded unless DATABASE_URL is set), migrations, a token, gunicorn."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import psycopg
from flask import Flask
from psycopg import sql
from sqlalchemy import select
from sqlalchemy.engine import make_url

from insights_audit import create_app
from insights_audit.audit.entries import RequestMeta, service_actor
from insights_audit.audit.keys import app_signing_key
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.app_role import grant_app_role
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import demo, embedded
from insights_audit.integrity.sealing import seal
from insights_audit.models import AuditEntry
from insights_audit.viewer import links
from insights_audit.web.auth import principal_for
from insights_audit.web.tokens import create_token

PROJECT_DIR = Path(__file__).resolve().parents[2]
DATA_DIR = PROJECT_DIR / ".data"
PG_DIR = DATA_DIR / "pg"
DEV_ORG = "dev-org"
DEV_USER = "dev-user"
BIND = "127.0.0.1:8000"
# The embedded server's service role: least privilege, under row-level security.
APP_ROLE = "insights_audit_app"


def seed_demo_once(app: Flask) -> None:
    """A few thousand demo events in the development org, so Swagger UI answers at once."""
    with app.app_context():
        with transaction(DEV_ORG) as db:
            query = select(AuditEntry.id).where(AuditEntry.org == DEV_ORG).limit(1)
            if db.execute(query).first():
                return
        # The development user is one of the demo's viewers.
        plan = demo.SeedPlan(DEV_ORG, events=5_000, users=40, dashboards=25, days=60, seed=1)
        report = demo.seed(engine(), plan, lambda _: None, user_ids=[DEV_USER])
    print(f"Seeded {report.entries:,} demo audit entries into {DEV_ORG}.")


def development_token(app: Flask, database_url: str) -> str:
    """The development token of this database, created on first start and kept after."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:12]
    token_file = DATA_DIR / f"dev-token-{digest}"
    with app.app_context():
        if token_file.exists():
            secret = token_file.read_text().strip()
            if principal_for(secret) is not None:
                return secret
        with transaction() as connection:
            _, secret = create_token(
                connection,
                org=DEV_ORG,
                user_id=DEV_USER,
                # The address the demo gives the development user, so top viewers agree.
                user_email=f"{DEV_USER}@{DEV_ORG}.example.com",
                roles=["Administrator"],
                scopes=["api"],
                name="make run",
                expires_in_days=None,
            )
    write_private(token_file, secret + "\n")
    return secret


def viewer_link(app: Flask) -> str:
    """A day's read-only link that opens the viewer as the development user."""
    actor = service_actor(DEV_ORG)
    with app.app_context(), transaction(DEV_ORG) as connection:
        link = links.mint(
            connection,
            actor,
            RequestMeta(None, None, "make run"),
            f"http://{BIND}",
            user_id=DEV_USER,
            user_email=f"{DEV_USER}@{DEV_ORG}.example.com",
            roles=["Administrator", "Users"],
            ttl_seconds=links.MAX_TTL_SECONDS,
            via="make run",
        )
    return str(link["url"])


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the moment it exists."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def main() -> int:
    DATA_DIR.mkdir(mode=0o700, exist_ok=True)
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        return serve(database_url)
    print("DATABASE_URL is not set: starting an embedded PostgreSQL in .data/pg ...")
    # Stopped in the finally below, once (the library's own stop at exit would repeat it).
    server_url = embedded.start_embedded_server(PG_DIR, delete_on_exit=False, stop_on_exit=False)
    # The embedded server (run as its own system user when we are root) adds g+rx,o+rx to the
    # folders above its data; others keep the right to pass through .data, not to list it.
    DATA_DIR.chmod(0o711)
    try:
        return serve(embedded.ensure_database(server_url, "insights_audit"), serve_as=APP_ROLE)
    finally:
        embedded.stop_embedded_server(PG_DIR)


def app_role_url(app: Flask, database_url: str, role: str) -> str:
    """Create the login role ``role`` if missing, grant it the service's privileges, its URL."""
    with psycopg.connect(database_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if not exists.fetchone():
            connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    with app.app_context(), transaction() as connection:
        grant_app_role(connection, role)
    return make_url(database_url).set(username=role).render_as_string(hide_password=False)


def serve(database_url: str, serve_as: str | None = None) -> int:
    """Migrate, seed and seal the demo, print a token, and run gunicorn in the foreground
    until it stops (as the login role ``serve_as``, if given, under row-level security)."""
    schema_migrations.upgrade(database_url)
    settings = replace(Settings.from_env(), database_url=database_url, pool_size=1, max_overflow=0)
    app = create_app(settings)
    seed_demo_once(app)
    with app.app_context():
        seal(transaction, DEV_ORG, app_signing_key(app))
    token = development_token(app, database_url)
    viewer = viewer_link(app)
    service_url = app_role_url(app, database_url, serve_as) if serve_as else database_url
    print(
        "\n"
        f"  insights-audit is starting on http://{BIND}\n"
        f"  Viewer:       {viewer}\n"
        "                (signed in as the development user, read-only, for a day)\n"
        f"  Swagger UI:   http://{BIND}/docs  (Authorize with the token below)\n"
        f"  Org / user:   {DEV_ORG} / {DEV_USER} (Administrator, scope api)\n"
        f"  Token:        {token}\n\n"
        f"  CLI:          DATABASE_URL='{database_url}' .venv/bin/insights-audit --help\n"
        "                (in another terminal, while this one runs)\n\n"
        f"  curl -H 'Authorization: Bearer {token}' \\\n"
        f"       http://{BIND}/api/v2/insights/kpis/audit-logs/dashboard/most-viewed\n\n"
        "  Ctrl-C stops the server (and the embedded PostgreSQL).\n",
        flush=True,
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", BIND],
        cwd=PROJECT_DIR,
        # Readable lines for a person at a terminal; production's default is JSON.
        env={
            **os.environ,
            "DATABASE_URL": service_url,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
        },
    )
    # Ctrl-C reaches gunicorn too; SIGTERM (e.g. from a supervisor) is passed on to it.
    signal.signal(signal.SIGTERM, lambda *_: server.send_signal(signal.SIGTERM))
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.send_signal(signal.SIGTERM)
        return server.wait()


if __name__ == "__main__":
    sys.exit(main())
