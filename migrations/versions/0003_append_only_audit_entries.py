"""Audit entries are append-only, enforced by PostgreSQL.

Triggers refuse UPDATE, DELETE and TRUNCATE on ``audit_entries``. The one way around them is
the documented maintenance path: a member of the table owner's role sets
``insights_audit.maintenance = on`` for its transaction (``SET LOCAL``); a role that does
not own the table cannot take it, whatever it sets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFUSE_CHANGES = """
CREATE FUNCTION audit_entries_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('insights_audit.maintenance', true) = 'on'
       AND pg_has_role(
           current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'MEMBER'
       ) THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION 'audit entries are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    op.execute(REFUSE_CHANGES)
    op.execute(
        "CREATE TRIGGER audit_entries_no_update_or_delete BEFORE UPDATE OR DELETE"
        " ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE"
        " ON audit_entries FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_entries_no_truncate ON audit_entries")
    op.execute("DROP TRIGGER audit_entries_no_update_or_delete ON audit_entries")
    op.execute("DROP FUNCTION audit_entries_append_only()")
