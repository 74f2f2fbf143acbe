"""Audit entries are append-only in PostgreSQL itself, with one documented maintenance path."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from insights_audit import create_app
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view, run_sql


@pytest.fixture
def entry_id(app: Flask, make_token: TokenFactory) -> str:
    client = app.test_client()
    return str(record_view(client, make_token(), new_id())["auditLogId"])


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET action = 'edit' WHERE id = :id",
        "UPDATE audit_entries SET details = jsonb_build_object('forged', true) WHERE id = :id",
        "DELETE FROM audit_entries WHERE id = :id",
    ],
)
def test_the_owner_cannot_change_or_delete_an_entry(
    app: Flask, entry_id: str, statement: str
) -> None:
    with pytest.raises(Exception, match="audit entries are append-only"):
        run_sql(app, statement, id=entry_id)
    kept = run_sql(app, "SELECT action, details FROM audit_entries WHERE id = :id", id=entry_id)
    assert kept == [("view", {})]


def test_the_owner_cannot_truncate_the_trail(app: Flask, entry_id: str) -> None:
    with pytest.raises(Exception, match="TRUNCATE refused"):
        run_sql(app, "TRUNCATE audit_entries")
    assert run_sql(app, "SELECT count(*) FROM audit_entries WHERE id = :id", id=entry_id) == [(1,)]


def test_the_maintenance_path_lets_the_owner_through(app: Flask, entry_id: str) -> None:
    change = "UPDATE audit_entries SET action = 'edit' WHERE id = :id"
    run_sql(app, change, maintenance=True, id=entry_id)
    changed = run_sql(app, "SELECT action FROM audit_entries WHERE id = :id", id=entry_id)
    assert changed == [("edit",)]


@pytest.fixture
def other_role(database_url: str) -> Iterator[str]:
    """A login role that may write entries but does not own the table."""
    role = f"not_owner_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f"GRANT SELECT, UPDATE, DELETE ON audit_entries TO {role}")
    url = make_url(database_url).set(username=role, password=None)
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute(f"REVOKE ALL ON audit_entries FROM {role}")
        connection.execute(f"DROP ROLE {role}")


def test_a_role_that_does_not_own_the_table_cannot_take_the_maintenance_path(
    other_role: str, entry_id: str, org: str
) -> None:
    refused = pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only")
    with psycopg.connect(other_role) as connection, refused:
        # Its org, so that row-level security lets the role reach the row at all.
        connection.execute("SELECT set_config('insights_audit.org', %s, true)", (org,))
        connection.execute("SET LOCAL insights_audit.maintenance = 'on'")
        connection.execute("DELETE FROM audit_entries WHERE id = %s", (entry_id,))


def test_the_service_runs_as_the_app_role(
    app: Flask, app_role_url: str, make_token: TokenFactory
) -> None:
    service = create_app(replace(app.config["SETTINGS"], database_url=app_role_url))
    client = service.test_client()
    secret = make_token()
    d = new_id()
    first = record_view(client, secret, d, json={"name": "Board"})
    assert record_view(client, secret, d)["viewCount"] == 2
    headers = {**bearer(secret), "Idempotency-Key": "k"}
    assert client.post(f"{BASE}/dashboard/{d}/view", headers=headers).status_code == 200
    for path in (
        "/dashboard/recently-viewed",
        "/dashboard/most-viewed?days=7",
        f"/dashboard/{d}/stats",
        f"/dashboard/{d}",
        f"/{first['auditLogId']}",
    ):
        assert client.get(BASE + path, headers=bearer(secret)).status_code == 200, path
    assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_entries SET action = 'edit'",
        "DELETE FROM audit_entries",
        "TRUNCATE audit_entries",
        "ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_update_or_delete",
        "DROP TRIGGER audit_entries_no_truncate ON audit_entries",
    ],
)
def test_the_app_role_cannot_change_or_unprotect_the_trail(
    app_role_url: str, entry_id: str, statement: str
) -> None:
    refused = pytest.raises(psycopg.errors.InsufficientPrivilege)
    with psycopg.connect(app_role_url) as connection, refused:
        connection.execute("SET LOCAL insights_audit.maintenance = 'on'")
        connection.execute(statement)
