"""Tenant isolation in depth: row-level security, forced on the table owner too.

Every table of tenant rows lets a session see and write only the rows of the org named by
``insights_audit.org``, which the service sets per transaction (``SET LOCAL``); without it a
session sees no rows at all. ``FORCE`` applies the policies to the tables' owner as well.
Superusers and ``BYPASSRLS`` roles are exempt by PostgreSQL's design.

Maintenance across orgs (``aggregates rebuild``, ``audit checkpoint`` without ``--org``) sets
``insights_audit.org`` to ``*``, which only a member of the tables' owner role may use, as
with the append-only maintenance path.

``api_tokens`` is left out: a token is looked up by its hash before its org is known, and the
table holds only hashes. ``idempotency_keys`` has no org; its rows belong to one token each.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TENANT_TABLES = (
    "audit_entries",
    "audit_checkpoints",
    "view_logs",
    "dashboard_totals",
    "dashboard_daily_views",
    "dashboard_day_totals",
    "total_snapshots",
)

EVERY_ORG = """
CREATE FUNCTION insights_audit_every_org() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce(current_setting('insights_audit.org', true), '') = '*'
       AND pg_has_role(
           current_user,
           (SELECT relowner FROM pg_class WHERE oid = 'audit_entries'::regclass),
           'MEMBER'
       )
$$
"""

# Scalar subqueries: evaluated once per statement, not once per row.
RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)


def upgrade() -> None:
    op.execute(EVERY_ORG)
    for table in TENANT_TABLES:
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({RULE}) WITH CHECK ({RULE})")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
    op.execute("DROP FUNCTION insights_audit_every_org()")
