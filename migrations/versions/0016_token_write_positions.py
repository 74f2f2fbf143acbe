"""Token write positions: the transaction of each token's last write, for replica reads.

With ``DATABASE_REPLICA_URLS`` set, a request that writes records its transaction id here in
the same transaction, just before ``COMMIT`` (one row per token, updated in place). A read
of the same token later goes to a replica only when the replica's snapshot shows that
transaction committed (``pg_visible_in_snapshot``), so a caller always reads its own writes,
whichever worker or host serves it. The table holds token ids and transaction ids, no data
of any org, and is read on the primary only.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE token_write_positions (
            token_id bigint NOT NULL,
            xid xid8 NOT NULL,
            CONSTRAINT pk_token_write_positions PRIMARY KEY (token_id)
        )
        """
    )
    # The app roles granted before this migration (those that write checkpoints).
    op.execute(
        """
        DO $$
        DECLARE grantee_row record;
        BEGIN
            FOR grantee_row IN
                SELECT DISTINCT grantee FROM information_schema.role_table_grants
                WHERE table_name = 'audit_checkpoints' AND privilege_type = 'INSERT'
                  AND grantee <> current_user
            LOOP
                EXECUTE format('GRANT SELECT, INSERT, UPDATE ON token_write_positions TO %I',
                               grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE token_write_positions")
