"""Push streams: delivery of the trail to webhooks and Splunk HEC; service-written types.

``push_streams`` holds one row per stream, confined to its org by row-level security like
every tenant table. A stream's signing secret (webhook) or HEC token is stored encrypted
with a key that is not in the database (``streams.secrets``): a copy of the database alone
does not reveal it.

The background deliverer of every worker looks for streams that are due without being able
to read across orgs: ``push_streams_due()`` (owner's rights) answers only the org and id of
active streams whose next attempt is due, nothing else.

Entries of types ``stream`` (changes to a stream) and ``token`` (viewer links) are written
by the service itself; the check on ``type`` admits them.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TYPE_CHECK = "ck_audit_entries_ck_audit_entries_known_type"
RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)

DUE = """
CREATE FUNCTION push_streams_due()
RETURNS TABLE (org text, id uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public AS $$
DECLARE
    scope text := coalesce(current_setting('insights_audit.org', true), '');
BEGIN
    PERFORM set_config('insights_audit.org', '*', true);
    RETURN QUERY SELECT s.org::text, s.id FROM push_streams AS s
        WHERE s.status = 'active' AND s.next_attempt_at <= now()
        ORDER BY s.next_attempt_at;
    PERFORM set_config('insights_audit.org', scope, true);
END
$$
"""


def upgrade() -> None:
    op.execute(f"ALTER TABLE audit_entries DROP CONSTRAINT {TYPE_CHECK}")
    op.execute(
        f"ALTER TABLE audit_entries ADD CONSTRAINT {TYPE_CHECK}"
        " CHECK (type IN ('dashboard', 'kpi', 'mapping', 'stream', 'token'))"
    )
    op.execute(
        """
        CREATE TABLE push_streams (
            id uuid NOT NULL,
            org text COLLATE "C" NOT NULL,
            name text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('webhook', 'splunk-hec')),
            url text NOT NULL,
            filters jsonb NOT NULL DEFAULT '{}',
            status text NOT NULL DEFAULT 'active'
                CHECK (status IN ('active', 'paused', 'suspended')),
            secret bytea NOT NULL,
            position_txid text NOT NULL DEFAULT '0',
            position_id text NOT NULL DEFAULT '',
            delivered bigint NOT NULL DEFAULT 0,
            last_delivered_at timestamptz,
            consecutive_failures integer NOT NULL DEFAULT 0,
            failing_since timestamptz,
            last_error text,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_push_streams PRIMARY KEY (id)
        )
        """
    )
    op.execute("CREATE INDEX ix_push_streams_org ON push_streams (org, created_at)")
    op.execute(
        "CREATE INDEX ix_push_streams_due ON push_streams (next_attempt_at) WHERE status = 'active'"
    )
    op.execute(f"CREATE POLICY tenant_isolation ON push_streams USING ({RULE}) WITH CHECK ({RULE})")
    op.execute("ALTER TABLE push_streams ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE push_streams FORCE ROW LEVEL SECURITY")
    op.execute(DUE)
    op.execute("REVOKE EXECUTE ON FUNCTION push_streams_due() FROM PUBLIC")
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
                EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON push_streams TO %I',
                               grantee_row.grantee);
                EXECUTE format('GRANT EXECUTE ON FUNCTION push_streams_due() TO %I',
                               grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION push_streams_due()")
    op.execute("DROP TABLE push_streams")
    op.execute(f"ALTER TABLE audit_entries DROP CONSTRAINT {TYPE_CHECK}")
    op.execute(
        f"ALTER TABLE audit_entries ADD CONSTRAINT {TYPE_CHECK}"
        " CHECK (type IN ('dashboard', 'kpi', 'mapping'))"
    )
