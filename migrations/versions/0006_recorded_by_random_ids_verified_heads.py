"""Who wrote each entry, unguessable entry ids, and the verified head of each org's chain.

``audit_entries.recorded_by`` and ``recorded_by_token`` are the user and the token id of the
token that wrote the entry (they differ from ``user_id`` on an administrator's on-behalf
write). Existing entries keep NULL, read as "written by ``user_id``" (they predate on-behalf
records); adding nullable columns rewrites nothing.

The leaf of the hash chain covers every column, so the two new columns change the canonical
form: ``audit_checkpoints.version`` says which form a checkpoint was sealed with (1: without
them, every existing checkpoint; 2: with them).

Entry ids keep their 4-byte time prefix; their last 8 bytes are now random per entry instead
of ending in a counter shared by every org.

``integrity_verifications`` remembers, per org, the last checkpoint the service verified, so
``GET {base}/integrity`` only checks what was sealed since (row-level security like every
tenant table).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.Text(collation="C")
TS = postgresql.TIMESTAMP(timezone=True)

RANDOM_OBJECT_ID = """
CREATE OR REPLACE FUNCTION audit_object_id(ts timestamptz) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    -- Bytes 1-6 and 10-11 of a version 4 UUID are random (7 and 9 carry version and variant).
    SELECT lpad(to_hex(floor(extract(epoch FROM ts))::bigint), 8, '0')
        || encode(substring(u FROM 1 FOR 6) || substring(u FROM 10 FOR 2), 'hex')
    FROM uuid_send(gen_random_uuid()) AS u
$$
"""

COUNTER_OBJECT_ID = """
CREATE OR REPLACE FUNCTION audit_object_id(ts timestamptz) RETURNS text
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT lpad(to_hex(floor(extract(epoch FROM ts))::bigint), 8, '0')
        || encode(substring(uuid_send(gen_random_uuid()) FROM 1 FOR 5), 'hex')
        || lpad(to_hex(nextval('audit_object_id_counter') % 16777216), 6, '0')
$$
"""

RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)


def upgrade() -> None:
    op.add_column("audit_entries", sa.Column("recorded_by", KEY))
    op.add_column("audit_entries", sa.Column("recorded_by_token", sa.BigInteger))
    op.add_column(
        "audit_checkpoints",
        sa.Column("version", sa.SmallInteger, nullable=False, server_default=sa.text("1")),
    )
    op.execute(RANDOM_OBJECT_ID)
    op.execute("DROP SEQUENCE audit_object_id_counter")
    op.create_table(
        "integrity_verifications",
        sa.Column("org", KEY, nullable=False),
        sa.Column("block", sa.BigInteger, nullable=False),
        sa.Column("checked", sa.BigInteger, nullable=False),
        sa.Column("verified_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("org", name="pk_integrity_verifications"),
    )
    op.execute(
        f"CREATE POLICY tenant_isolation ON integrity_verifications USING ({RULE})"
        f" WITH CHECK ({RULE})"
    )
    op.execute("ALTER TABLE integrity_verifications ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE integrity_verifications FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_table("integrity_verifications")
    op.execute("CREATE SEQUENCE audit_object_id_counter CYCLE")
    op.execute(COUNTER_OBJECT_ID)
    op.drop_column("audit_checkpoints", "version")
    op.drop_column("audit_entries", "recorded_by_token")
    op.drop_column("audit_entries", "recorded_by")
