"""Audit trail, view logs, dashboard totals, API tokens and idempotency keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = postgresql.TIMESTAMP(timezone=True)
# Keys compare bytewise: faster index builds, sorts and lookups than a linguistic collation.
KEY = sa.Text(collation="C")

# ObjectId-like ids: 4 bytes of Unix seconds, 5 random bytes, a 3-byte counter.
OBJECT_ID_FUNCTION = """
CREATE FUNCTION audit_object_id(ts timestamptz) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT lpad(to_hex(floor(extract(epoch FROM ts))::bigint), 8, '0')
        || encode(substring(uuid_send(gen_random_uuid()) FROM 1 FOR 5), 'hex')
        || lpad(to_hex(nextval('audit_object_id_counter') % 16777216), 6, '0')
$$
"""


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text),
        sa.Column("org", KEY, nullable=False),
        sa.Column("user_id", KEY, nullable=False),
        sa.Column("user_email", sa.Text),
        sa.Column("roles", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("scopes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )

    op.execute("CREATE SEQUENCE audit_object_id_counter CYCLE")
    op.execute(OBJECT_ID_FUNCTION)
    op.create_table(
        "audit_entries",
        sa.Column("id", KEY, nullable=False),
        sa.Column("org", KEY, nullable=False),
        sa.Column("type", KEY, nullable=False),
        sa.Column("action", KEY, nullable=False),
        sa.Column("target_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_id", KEY, nullable=False),
        sa.Column("user_email", sa.Text),
        sa.Column(
            "details", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.Column("request_id", sa.Text),
        sa.Column("ip", sa.Text),
        sa.Column("user_agent", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_audit_entries"),
        sa.CheckConstraint("id ~ '^[0-9a-f]{24}$'", name="ck_audit_entries_id_is_object_id"),
        sa.CheckConstraint(
            "type IN ('dashboard', 'kpi', 'mapping')", name="ck_audit_entries_known_type"
        ),
    )
    op.create_index(
        "ix_audit_entries_trail",
        "audit_entries",
        ["org", "type", "target_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        "ix_audit_entries_views_by_time",
        "audit_entries",
        ["org", "created_at"],
        postgresql_include=["target_id", "user_id"],
        postgresql_where=sa.text("type = 'dashboard' AND action = 'view'"),
    )
    op.create_index(
        "ix_audit_entries_views_by_dashboard",
        "audit_entries",
        ["org", "target_id", "created_at"],
        postgresql_include=["user_id"],
        postgresql_where=sa.text("type = 'dashboard' AND action = 'view'"),
    )

    op.create_table(
        "view_logs",
        sa.Column("org", KEY, nullable=False),
        sa.Column("user_id", KEY, nullable=False),
        sa.Column("dashboard_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("user_email", sa.Text),
        sa.Column("view_count", sa.BigInteger, nullable=False),
        sa.Column("first_viewed_at", TS, nullable=False),
        sa.Column("last_viewed_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("org", "user_id", "dashboard_id", name="pk_view_logs"),
    )
    op.create_index(
        "ix_view_logs_recent",
        "view_logs",
        ["org", "user_id", sa.text("last_viewed_at DESC"), "dashboard_id"],
    )
    op.create_index(
        "ix_view_logs_top_viewers",
        "view_logs",
        [
            "org",
            "dashboard_id",
            sa.text("view_count DESC"),
            sa.text("last_viewed_at DESC"),
            "user_id",
        ],
    )

    op.create_table(
        "dashboard_totals",
        sa.Column("org", KEY, nullable=False),
        sa.Column("dashboard_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("name", sa.Text),
        sa.Column("view_count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("unique_viewers", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("first_viewed_at", TS),
        sa.Column("last_viewed_at", TS),
        sa.PrimaryKeyConstraint("org", "dashboard_id", name="pk_dashboard_totals"),
    )
    op.create_index(
        "ix_dashboard_totals_popular",
        "dashboard_totals",
        ["org", sa.text("view_count DESC"), sa.text("last_viewed_at DESC"), "dashboard_id"],
        postgresql_where=sa.text("view_count > 0"),
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("token_id", sa.BigInteger, nullable=False),
        sa.Column("key", KEY, nullable=False),
        sa.Column("fingerprint", sa.LargeBinary, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response", postgresql.JSONB),
        sa.Column("created_at", TS, nullable=False, server_default=sa.text("now()")),
        sa.PrimaryKeyConstraint("token_id", "key", name="pk_idempotency_keys"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    op.drop_table("dashboard_totals")
    op.drop_table("view_logs")
    op.drop_table("audit_entries")
    op.execute("DROP FUNCTION audit_object_id(timestamptz)")
    op.execute("DROP SEQUENCE audit_object_id_counter")
    op.drop_table("api_tokens")
