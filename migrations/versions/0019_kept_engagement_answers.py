"""Kept engagement answers: ``engagement_answers``.

"Viewers also viewed" and recommendations may lag views by at most a minute. Counting the
viewers a dashboard shares with every other one takes a tenth of a second to half a second
for a big org's popular dashboards; an exact store of every co-viewed pair would be about
three gigabytes per window length at ten million events. Instead, each answer a client asks
for is kept: its first ``items_limit`` items (the ``limit`` it was computed for; a smaller
one gets the first items, the order being total), computed in one snapshot at ``as_of``.
A request uses an answer younger than a minute and otherwise computes and keeps it; the
background worker computes again the answers asked for again, and in the last minute,
before they are a minute old, and drops the ones not asked for in the last minute. The
table is derived: dropping its rows loses nothing.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE engagement_answers (
            org text COLLATE "C" NOT NULL,
            kind text COLLATE "C" NOT NULL,
            subject text COLLATE "C" NOT NULL,
            days integer NOT NULL,
            items_limit integer NOT NULL,
            as_of timestamptz NOT NULL,
            requested_at timestamptz NOT NULL,
            asks integer NOT NULL,
            items jsonb NOT NULL,
            CONSTRAINT pk_engagement_answers PRIMARY KEY (org, kind, subject, days)
        )
        """
    )
    op.execute(
        f"CREATE POLICY tenant_isolation ON engagement_answers USING ({RULE}) WITH CHECK ({RULE})"
    )
    op.execute("ALTER TABLE engagement_answers ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE engagement_answers FORCE ROW LEVEL SECURITY")
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
                EXECUTE format(
                    'GRANT SELECT, INSERT, UPDATE, DELETE ON engagement_answers TO %I',
                    grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE engagement_answers")
