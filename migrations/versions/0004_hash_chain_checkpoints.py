"""Tamper evidence: the position of every entry in its org's hash chain, and checkpoints.

``audit_entries.txid`` is the id of the transaction that wrote the entry. An org's chain
orders its entries by ``(txid, id)``: a sealer that only takes entries whose transaction is
older than every running one (``pg_snapshot_xmin``) never sees an entry commit behind its
back, so writers never wait for sealing. Existing entries read as transaction 1, without
rewriting the table.

``audit_checkpoints`` holds one signed checkpoint per sealed batch: its sequence range, the
ids and SHA-256 of its entries, the chain's head hash and the previous checkpoint's hash.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = sa.Text(collation="C")
TS = postgresql.TIMESTAMP(timezone=True)


def upgrade() -> None:
    # A constant default is stored in the catalog (no rewrite); new rows get their own xid.
    op.execute("ALTER TABLE audit_entries ADD COLUMN txid xid8 NOT NULL DEFAULT '1'")
    op.execute("ALTER TABLE audit_entries ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX ix_audit_entries_chain ON audit_entries (org, txid, id)")
    op.create_table(
        "audit_checkpoints",
        sa.Column("org", KEY, nullable=False),
        sa.Column("block", sa.BigInteger, nullable=False),
        sa.Column("seq_from", sa.BigInteger, nullable=False),
        sa.Column("seq_to", sa.BigInteger, nullable=False),
        sa.Column("first_id", KEY, nullable=False),
        sa.Column("last_id", KEY, nullable=False),
        sa.Column("last_txid", sa.Text, nullable=False),
        sa.Column("entry_ids", sa.LargeBinary, nullable=False),
        sa.Column("entry_hashes", sa.LargeBinary, nullable=False),
        sa.Column("head_hash", sa.LargeBinary, nullable=False),
        sa.Column("previous_hash", sa.LargeBinary),
        sa.Column("checkpoint_hash", sa.LargeBinary, nullable=False),
        sa.Column("sealed_at", TS, nullable=False),
        sa.Column("key_id", sa.Text, nullable=False),
        sa.Column("signature", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("org", "block", name="pk_audit_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.execute("DROP INDEX ix_audit_entries_chain")
    op.execute("ALTER TABLE audit_entries DROP COLUMN txid")
