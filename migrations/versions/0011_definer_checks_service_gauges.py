"""Definer functions that check their caller, and gauges measured by the background job.

The second security review found that the app role could drop any month partition of every
org through ``audit_drop_partition`` (retention unset, no retention record written) and list
every org's name and counts through ``audit_partition_orgs``. Now:

- ``audit_drop_partition`` also requires that every org with entries in the partition has a
  retention record naming it, written by the calling transaction: the drop and the signed
  account of it commit together, or neither does.
- ``audit_partition_orgs`` answers only for the org the caller's transaction is scoped to,
  unless the caller owns the trail (maintenance across orgs, as row-level security allows).

``service_gauges`` holds figures across orgs that ``/metrics`` shows (entries not sealed
yet, the newest checkpoint's time): the background job measures them after each sealing
pass, so a scrape reads one small table however many orgs there are.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Whether the session's login role owns the trail (inside a definer function current_user is
# the owner, so the caller is the session user).
CALLER_OWNS_THE_TRAIL = (
    "pg_has_role(session_user,"
    " (SELECT relowner FROM pg_class WHERE oid = 'audit_entries'::regclass), 'MEMBER')"
)

PARTITION_ORGS = f"""
CREATE OR REPLACE FUNCTION audit_partition_orgs(partition_name text)
RETURNS TABLE (org text, entries bigint, first_id text, last_id text,
               first_created_at timestamptz, last_created_at timestamptz,
               first_txid text, last_txid text, chain_first_id text, chain_last_id text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    scope text := coalesce(current_setting('insights_audit.org', true), '');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_inherits
                   WHERE inhparent = 'audit_entries'::regclass
                     AND inhrelid = to_regclass(partition_name)) THEN
        RAISE EXCEPTION '% is not a partition of audit_entries', partition_name;
    END IF;
    IF scope = '' OR (scope = '*' AND NOT {CALLER_OWNS_THE_TRAIL}) THEN
        RAISE EXCEPTION 'audit_partition_orgs answers for the org of the transaction only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM set_config('insights_audit.org', '*', true);
    RETURN QUERY EXECUTE format(
        'SELECT e.org::text, count(*), min(e.id)::text, max(e.id)::text,'
        ' min(e.created_at), max(e.created_at),'
        ' (min(ARRAY[e.txid::text, e.id]))[1], (max(ARRAY[e.txid::text, e.id]))[1],'
        ' (min(ARRAY[e.txid::text, e.id]))[2], (max(ARRAY[e.txid::text, e.id]))[2]'
        ' FROM %I AS e WHERE $1 = ''*'' OR e.org = $1 GROUP BY e.org', partition_name)
        USING scope;
    PERFORM set_config('insights_audit.org', scope, true);
END
$$
"""

DROP_PARTITION = r"""
CREATE OR REPLACE FUNCTION audit_drop_partition(partition_name text, horizon timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bound text;
    upper_bound timestamptz;
    unrecorded text;
    scope text := coalesce(current_setting('insights_audit.org', true), '');
BEGIN
    IF horizon > now() - interval '30 days' THEN
        RAISE EXCEPTION 'retention keeps at least 30 days';
    END IF;
    SELECT pg_get_expr(c.relpartbound, c.oid) INTO bound
    FROM pg_inherits JOIN pg_class AS c ON c.oid = inhrelid
    WHERE inhparent = 'audit_entries'::regclass AND inhrelid = to_regclass(partition_name);
    IF bound IS NULL OR bound = 'DEFAULT' THEN
        RAISE EXCEPTION '% is not a month partition of audit_entries', partition_name;
    END IF;
    upper_bound := substring(bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
    IF upper_bound > horizon THEN
        RAISE EXCEPTION '% holds entries after the horizon', partition_name;
    END IF;
    -- Every org in the partition needs its signed account of the removal, written by this
    -- same transaction (so both commit together). Read across orgs, as the owner.
    PERFORM set_config('insights_audit.org', '*', true);
    EXECUTE format(
        'SELECT min(e.org) FROM (SELECT DISTINCT org FROM %I) AS e'
        ' WHERE NOT EXISTS (SELECT 1 FROM audit_retention_records AS r'
        '   WHERE r.org = e.org AND $1 = ANY (r.partitions)'
        '     AND r.xmin = pg_current_xact_id()::xid)', partition_name)
        INTO unrecorded USING partition_name;
    PERFORM set_config('insights_audit.org', scope, true);
    IF unrecorded IS NOT NULL THEN
        RAISE EXCEPTION 'no retention record of % for org % in this transaction',
            partition_name, unrecorded;
    END IF;
    EXECUTE format('DROP TABLE %I', partition_name);
END
$$
"""


def _previous_definitions() -> object:
    """Migration 0009, where the functions' previous definitions are."""
    path = Path(__file__).with_name("0009_partition_trail_by_month.py")
    spec = importlib.util.spec_from_file_location("migration_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute(PARTITION_ORGS)
    op.execute(DROP_PARTITION)
    op.execute(
        """
        CREATE TABLE service_gauges (
            name text COLLATE "C" NOT NULL,
            value double precision NOT NULL,
            measured_at timestamptz NOT NULL,
            CONSTRAINT pk_service_gauges PRIMARY KEY (name)
        )
        """
    )
    # Whoever writes checkpoints (the app role) measures and reads the gauges.
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
                EXECUTE format('GRANT SELECT, INSERT, UPDATE ON service_gauges TO %I',
                               grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE service_gauges")
    previous = _previous_definitions()
    op.execute(previous.PARTITION_ORGS.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))  # type: ignore[attr-defined]
    op.execute(previous.DROP_PARTITION.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))  # type: ignore[attr-defined]
