"""Row-level security, forced on the owner, with the org set per transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.models import TENANT_TABLES
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view


def test_every_tenant_table_forces_row_level_security(app: Flask) -> None:
    with app.app_context(), engine().connect() as connection:
        rows = connection.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class"
                " WHERE relname = ANY(:tables)"
            ),
            {"tables": list(TENANT_TABLES)},
        ).all()
        with_org: list[str] = list(
            connection.execute(
                text(
                    "SELECT DISTINCT c.table_name FROM information_schema.columns AS c"
                    " JOIN pg_class ON relname = c.table_name"
                    " WHERE c.column_name = 'org' AND c.table_schema = 'public'"
                    " AND NOT relispartition"
                )
            ).scalars()
        )
        partitions = connection.execute(
            text(
                "SELECT relname, relrowsecurity, relforcerowsecurity, count(polname)"
                " FROM pg_inherits JOIN pg_class ON pg_class.oid = inhrelid"
                " LEFT JOIN pg_policy ON polrelid = inhrelid"
                " WHERE inhparent = 'audit_entries'::regclass GROUP BY 1, 2, 3"
            )
        ).all()
    assert sorted(rows) == sorted((table, True, True) for table in TENANT_TABLES)
    # Every table with an org column is covered, except the token lookup table.
    assert set(with_org) - set(TENANT_TABLES) == {"api_tokens"}
    # So is every partition of the trail: read directly, a partition leaks nothing either.
    assert len(partitions) >= 2
    assert all(row[1:] == (True, True, 1) for row in partitions), partitions


@pytest.fixture(scope="module")
def owned_url(server_url: str) -> Iterator[str]:
    """A database whose tables belong to a login role that is not a superuser."""
    role = f"owner_{uuid.uuid4().hex[:8]}"
    name = f"insights_audit_rls_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
        connection.execute(f"CREATE DATABASE {name} OWNER {role}")
    url = make_url(embedded.database_url(server_url, name)).set(username=role, password=None)
    owner_url = url.render_as_string(hide_password=False)
    schema_migrations.upgrade(owner_url)
    with psycopg.connect(owner_url, autocommit=True) as connection:
        for org in ("org-a", "org-a", "org-b"):
            with connection.transaction():
                connection.execute("SELECT set_config('insights_audit.org', %s, true)", (org,))
                connection.execute(
                    "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
                    " VALUES (audit_object_id(now()), %s, 'kpi', 'update', %s, 'u')",
                    (org, new_id()),
                )
    yield owner_url
    embedded.drop_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"DROP ROLE {role}")


def orgs_seen(url: str, setting: str | None) -> list[str]:
    """The orgs a query that forgets its ``WHERE org = ...`` returns."""
    with psycopg.connect(url) as connection:
        if setting is not None:
            connection.execute("SELECT set_config('insights_audit.org', %s, true)", (setting,))
        rows = connection.execute("SELECT org FROM audit_entries ORDER BY org").fetchall()
    return [org for (org,) in rows]


def test_the_owner_sees_only_the_org_of_its_transaction(owned_url: str) -> None:
    assert orgs_seen(owned_url, "org-a") == ["org-a", "org-a"]
    assert orgs_seen(owned_url, "org-b") == ["org-b"]
    assert orgs_seen(owned_url, None) == []  # no org, no rows
    assert orgs_seen(owned_url, "*") == ["org-a", "org-a", "org-b"]  # the owner's maintenance


def test_the_org_setting_ends_with_the_transaction(owned_url: str) -> None:
    with psycopg.connect(owned_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', 'org-a', true)")
        assert connection.execute("SELECT count(*) FROM audit_entries").fetchone() == (2,)
        connection.commit()
        assert connection.execute("SELECT count(*) FROM audit_entries").fetchone() == (0,)


def test_rows_of_another_org_cannot_be_written(owned_url: str) -> None:
    refused = pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security")
    with psycopg.connect(owned_url) as connection, refused:
        connection.execute("SELECT set_config('insights_audit.org', 'org-a', true)")
        connection.execute(
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
            " VALUES (audit_object_id(now()), 'org-b', 'kpi', 'update', %s, 'u')",
            (new_id(),),
        )


def test_the_app_role_cannot_use_the_every_org_setting(owned_url: str, server_url: str) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
    try:
        app = create_app(Settings(database_url=owned_url))
        result = app.test_cli_runner().invoke(args=["db", "grant-app-role", role])
        assert result.exit_code == 0, result.output
        app_url = make_url(owned_url).set(username=role).render_as_string(hide_password=False)
        assert orgs_seen(app_url, "*") == []
        assert orgs_seen(app_url, "org-b") == ["org-b"]
    finally:
        with psycopg.connect(owned_url, autocommit=True) as connection:
            connection.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
            connection.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
            connection.execute(f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM {role}")
            connection.execute(f"REVOKE ALL ON SCHEMA public FROM {role}")
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f"DROP ROLE {role}")


def test_one_pooled_connection_serves_two_orgs_without_mixing_them(
    app: Flask, app_role_url: str, make_token: TokenFactory
) -> None:
    """The service as the app role, with a pool of one connection: requests of two orgs
    alternate on it and each sees only its own rows, even through a query without a WHERE."""
    settings = replace(app.config["SETTINGS"], database_url=app_role_url)
    service = create_app(replace(settings, pool_size=1, max_overflow=0))
    client = service.test_client()
    first_org, second_org = f"org-e-{new_id()[:8]}", f"org-f-{new_id()[:8]}"
    first = make_token(token_org=first_org, user="same-user")
    second = make_token(token_org=second_org, user="same-user")
    boards = {first: new_id(), second: new_id()}
    for secret, board in boards.items():
        record_view(client, secret, board)
    backends = set()
    for _ in range(2):
        for secret, board in boards.items():
            response = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
            assert [row["dashboardId"] for row in response.json["data"]] == [board]
            with service.app_context():
                connection = engine().connect()
                backends.add(connection.execute(text("SELECT pg_backend_pid()")).scalar())
                # Back in the pool, the connection carries no org.
                setting = text("SELECT current_setting('insights_audit.org', true)")
                assert connection.execute(setting).scalar() in ("", None)
                connection.close()
    assert len(backends) == 1
    with service.app_context(), transaction(first_org) as connection:
        # Both orgs have rows in the tables a view writes; the others may have none yet.
        written = {"audit_entries", "view_logs", "dashboard_totals", "dashboard_daily_views"}
        for table in TENANT_TABLES:
            forgetful = text(f"SELECT DISTINCT org FROM {table}")
            seen: set[str] = set(connection.execute(forgetful).scalars())
            assert seen == {first_org} if table in written else seen <= {first_org}, table
        assert connection.execute(text("SELECT count(*) FROM view_logs")).scalar() == 1
