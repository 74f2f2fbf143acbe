"""Migrations upgrade a database holding data, and every one downgrades."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from insights_audit import create_app
from insights_audit.audit import keys
from insights_audit.config import Settings, sqlalchemy_url
from insights_audit.db import schema_migrations
from insights_audit.db.engine import ENGINE_KEY
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.integrity import sealing, verification
from insights_audit.models import Base
from tests.conftest import BASE, TEST_SIGNING_KEY, bearer


@pytest.fixture
def scratch_url(server_url: str) -> Iterator[str]:
    name = f"insights_audit_mig_{uuid.uuid4().hex[:8]}"
    yield embedded.ensure_database(server_url, name)
    embedded.drop_database(server_url, name)


def test_upgrade_from_0001_rolls_up_existing_views(scratch_url: str) -> None:
    schema_migrations.upgrade(scratch_url, "0001")
    dashboard = str(uuid.uuid4())
    with psycopg.connect(scratch_url) as connection:
        for user, when in (
            ("a", "2026-01-01T10:00Z"),
            ("a", "2026-01-01T11:00Z"),
            ("b", "2026-01-02T10:00Z"),
        ):
            connection.execute(
                "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
                " VALUES (audit_object_id(%(t)s), 'o', 'dashboard', 'view', %(d)s, %(u)s, %(t)s)",
                {"t": when, "d": dashboard, "u": user},
            )
            connection.execute(
                "INSERT INTO view_logs (org, user_id, dashboard_id, view_count,"
                " first_viewed_at, last_viewed_at) VALUES ('o', %(u)s, %(d)s, 1, %(t)s, %(t)s)"
                " ON CONFLICT (org, user_id, dashboard_id) DO UPDATE SET"
                " view_count = view_logs.view_count + 1, last_viewed_at = excluded.last_viewed_at",
                {"t": when, "d": dashboard, "u": user},
            )
    schema_migrations.upgrade(scratch_url)
    with psycopg.connect(scratch_url) as connection:
        daily = connection.execute(
            "SELECT day::text, views, unique_viewers, last_viewers, total_views"
            " FROM dashboard_daily_views ORDER BY day"
        ).fetchall()
        previous = connection.execute(
            "SELECT user_id, previous_viewed_at IS NOT NULL FROM view_logs ORDER BY user_id"
        ).fetchall()
    assert daily == [("2026-01-01", 2, 1, 1, 2), ("2026-01-02", 1, 1, 1, 3)]
    assert previous == [("a", True), ("b", False)]


def test_every_migration_downgrades(scratch_url: str) -> None:
    schema_migrations.upgrade(scratch_url)
    command.downgrade(schema_migrations.alembic_config(scratch_url), "base")
    with psycopg.connect(scratch_url) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        ).fetchall()
    assert tables == [("alembic_version",)]
    schema_migrations.upgrade(scratch_url)


PARTITION = re.compile(r"audit_entries_(p\d{6}|default|before)")


def not_a_partition(obj: Any, name: str | None, kind: str, *_: Any) -> bool:
    """The trail's partitions are made at run time, not declared: compare the parent."""
    table = obj.table.name if kind == "index" else name
    return not PARTITION.fullmatch(table or "")


def test_the_models_and_the_migrations_describe_the_same_schema(database_url: str) -> None:
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": not_a_partition}
        )
        differences = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert differences == []


def test_a_database_sealed_before_recorded_by_still_verifies_after_the_upgrade(
    scratch_url: str,
) -> None:
    schema_migrations.upgrade(scratch_url)
    settings = Settings(database_url=scratch_url, audit_signing_key=TEST_SIGNING_KEY)
    app = create_app(settings)
    org = "org-upgraded"
    with psycopg.connect(scratch_url) as connection:
        for n in range(3):
            connection.execute(
                "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
                " VALUES (audit_object_id(now()), %s, 'kpi', 'update', %s, %s)",
                (org, str(uuid.uuid4()), f"user-{n}"),
            )
    # As the service sealed before revision 0006: form 1, then back to revision 0005's schema.
    with app.app_context(), transaction(org) as connection:
        sealing.seal_batch(connection, org, keys.app_signing_key(app), version=1)
    app.extensions[ENGINE_KEY].dispose()
    command.downgrade(schema_migrations.alembic_config(scratch_url), "0005")

    schema_migrations.upgrade(scratch_url)
    app = create_app(settings)
    token = app.test_cli_runner().invoke(
        args=[
            "tokens",
            "create",
            "--org",
            org,
            "--user",
            "admin",
            "--role",
            "Administrator",
            "--scope",
            "api",
        ]
    )
    secret = token.output.strip().splitlines()[-1]
    client = app.test_client()
    body = {"type": "kpi", "action": "update", "targetId": str(uuid.uuid4()), "userId": "u-9"}
    response = client.post(BASE, json=body, headers=bearer(secret))
    assert response.json["data"]["recordedBy"] == "admin"
    with app.app_context():
        sealing.seal(transaction, org, keys.app_signing_key(app))
    with app.app_context(), transaction(org) as connection:
        verdict = verification.verify(connection, org, keys.app_signing_key(app).public_key())
        versions: list[int] = list(
            connection.execute(
                text("SELECT version FROM audit_checkpoints ORDER BY block")
            ).scalars()
        )
        assert versions == [1, 2]
    assert (verdict.status, verdict.checked) == ("verified", 4)
    app.extensions[ENGINE_KEY].dispose()


@pytest.fixture
def owner_url(server_url: str) -> Iterator[str]:
    """A scratch database owned by a role that is not a superuser, as on a managed server:
    row-level security applies to it."""
    suffix = uuid.uuid4().hex[:8]
    role, name = f"trail_owner_{suffix}", f"insights_audit_own_{suffix}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    url = embedded.ensure_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} OWNER TO {role}")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"ALTER SCHEMA public OWNER TO {role}")
    yield make_url(url).set(username=role).render_as_string(hide_password=False)
    embedded.drop_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP ROLE {role}")


def test_an_owner_that_is_not_a_superuser_converts_the_trail_keeping_every_entry(
    owner_url: str,
) -> None:
    schema_migrations.upgrade(owner_url, "0008")
    with psycopg.connect(owner_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', 'o', true)")
        connection.execute(
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
            " SELECT audit_object_id(now() - n * interval '1 day'), 'o', 'kpi', 'edit',"
            " gen_random_uuid(), 'u', now() - n * interval '1 day'"
            " FROM generate_series(0, 99) AS n"
        )
    schema_migrations.upgrade(owner_url)
    with psycopg.connect(owner_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', 'o', true)")
        count = connection.execute("SELECT count(*) FROM audit_entries").fetchone()
        # The converted table has one index on (id, created_at): its primary key, built once.
        keys = connection.execute(
            "SELECT indisprimary FROM pg_index WHERE indrelid = 'audit_entries_before'::regclass"
            " AND pg_get_indexdef(indexrelid) LIKE '%(id, created_at)'"
        ).fetchall()
    assert count == (100,)
    assert keys == [(True,)]


def test_a_database_with_entries_is_converted_without_moving_them(scratch_url: str) -> None:
    schema_migrations.upgrade(scratch_url, "0008")
    with psycopg.connect(scratch_url) as connection:
        connection.execute(
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
            " VALUES (audit_object_id(now() - interval '400 days'), 'o', 'kpi', 'edit',"
            " gen_random_uuid(), 'u', now() - interval '400 days')"
        )
    schema_migrations.upgrade(scratch_url)
    with psycopg.connect(scratch_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', 'o', false)")
        parts = connection.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits"
            " WHERE inhparent = 'audit_entries'::regclass"
        ).fetchall()
        assert ("audit_entries_before",) in parts  # the old table, attached as it was
        # Coming months next to the converted table: nothing overlaps, nothing fails.
        connection.execute(
            "SELECT audit_ensure_partitions(current_date, (current_date + 90)::date)"
        )
        connection.execute(
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
            " VALUES (audit_object_id(now()), 'o', 'kpi', 'edit', gen_random_uuid(), 'u')"
        )
        count = connection.execute("SELECT count(*) FROM audit_entries").fetchone()
    assert count == (2,)
