"""The trail partitioned by month, and signed retention records.

``audit_entries`` becomes a table partitioned by range of ``created_at``, one partition a
month (``audit_entries_pYYYYMM``) plus a default partition, so retention drops whole months:
seconds at any size, and the disk is freed at once. Month partitions: fine enough for a
30-day minimum retention (at most a month more is kept), coarse enough that ten years are
120 tables.

Converting a database that has entries rewrites nothing and blocks the service only for a
moment. First, outside any transaction and while reads and writes go on, the one index the
conversion needs is built (``CREATE INDEX CONCURRENTLY``: the primary key of a partitioned
table must include ``created_at``) and a ``CHECK`` on the time range is added and validated
(``VALIDATE`` lets reads and writes through). Then, in one short transaction, the table is
renamed, the new index becomes its primary key, and it is attached as the partition of
everything before the month after next: the validated ``CHECK`` spares the scan, and its
indexes are attached to the parent's. The bound is a month further out than needed so that
a conversion running across a month's end cannot reject a write. Retention can drop that
first partition once its newest entry is past the horizon.

The owner sees every org's rows only with ``insights_audit.org = '*'`` (row-level security
is forced on the owner too), so the migration sets it before looking at the rows.

Partitions of coming months are created ahead by ``audit_ensure_partitions`` (here, and by
the background worker, which may call it as the app role: it runs as the tables' owner).
Every partition has row-level security forced and refuses ``TRUNCATE`` like the parent.

``audit_retention_records`` keeps, per org, a signed record of every removal.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_audit_entries_trail": "(org, type, target_id, created_at DESC, id DESC)",
    "ix_audit_entries_views_by_time": "(org, created_at) INCLUDE (target_id, user_id)"
    " WHERE type = 'dashboard' AND action = 'view'",
    "ix_audit_entries_chain": "(org, txid, id)",
    "ix_audit_entries_time": "(org, created_at DESC, id DESC)",
    "ix_audit_entries_user": "(org, user_id, created_at DESC, id DESC)",
    "ix_audit_entries_action": "(org, action, created_at DESC, id DESC)"
    " WHERE NOT (type = 'dashboard' AND action = 'view')",
    "ix_audit_entries_text": "USING gin"
    " (audit_search_text(action, user_id, user_email, details) gin_trgm_ops)",
}

RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)

PARENT = """
CREATE TABLE audit_entries (
    id text COLLATE "C" NOT NULL,
    org text COLLATE "C" NOT NULL,
    type text COLLATE "C" NOT NULL,
    action text COLLATE "C" NOT NULL,
    target_id uuid NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    user_email text,
    details jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    request_id text,
    ip text,
    user_agent text,
    txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_by text COLLATE "C",
    recorded_by_token bigint,
    CONSTRAINT pk_audit_entries PRIMARY KEY (id, created_at),
    CONSTRAINT ck_audit_entries_ck_audit_entries_id_is_object_id
        CHECK (id ~ '^[0-9a-f]{24}$'),
    CONSTRAINT ck_audit_entries_ck_audit_entries_known_type
        CHECK (type IN ('dashboard', 'kpi', 'mapping'))
) PARTITION BY RANGE (created_at)
"""

# Runs as the tables' owner whoever calls it: the app role's worker creates coming months.
ENSURE_PARTITIONS = """
CREATE FUNCTION audit_ensure_partitions(first_month date, last_month date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    month date := date_trunc('month', first_month);
    name text;
    created integer := 0;
    landed boolean;
BEGIN
    WHILE month <= last_month LOOP
        name := 'audit_entries_p' || to_char(month, 'YYYYMM');
        -- A month whose entries already landed in the default partition stays there.
        PERFORM set_config('insights_audit.org', '*', true);
        landed := false;
        IF to_regclass('audit_entries_default') IS NOT NULL THEN
            EXECUTE 'SELECT EXISTS (SELECT 1 FROM audit_entries_default'
                    ' WHERE created_at >= $1 AND created_at < $2)'
            INTO landed
            USING month::timestamp AT TIME ZONE 'UTC',
                  (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        END IF;
        IF landed THEN
            month := month + interval '1 month';
            CONTINUE;
        END IF;
        IF to_regclass(name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF audit_entries FOR VALUES FROM (%L) TO (%L)',
                    name, month::timestamp AT TIME ZONE 'UTC',
                    (month + interval '1 month')::timestamp AT TIME ZONE 'UTC'
                );
                PERFORM audit_protect_partition(name);
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                -- Already covered by another partition (the converted table's first one).
                NULL;
            END;
        END IF;
        month := month + interval '1 month';
    END LOOP;
    RETURN created;
END
$$
"""

QUOTED_RULE = RULE.replace("'", "''")

PROTECT_PARTITION = f"""
CREATE FUNCTION audit_protect_partition(name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', name);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', name);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %I USING ({QUOTED_RULE}) WITH CHECK ({QUOTED_RULE})',
        name
    );
    EXECUTE format(
        'CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON %I'
        ' FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()', name
    );
END
$$
"""


# What retention needs to know of a partition, across orgs: the caller may be the app role,
# which sees one org at a time.
PARTITION_ORGS = """
CREATE FUNCTION audit_partition_orgs(partition_name text)
RETURNS TABLE (org text, entries bigint, first_id text, last_id text,
               first_created_at timestamptz, last_created_at timestamptz,
               first_txid text, last_txid text, chain_first_id text, chain_last_id text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_inherits
                   WHERE inhparent = 'audit_entries'::regclass
                     AND inhrelid = to_regclass(partition_name)) THEN
        RAISE EXCEPTION '% is not a partition of audit_entries', partition_name;
    END IF;
    PERFORM set_config('insights_audit.org', '*', true);
    RETURN QUERY EXECUTE format(
        'SELECT e.org::text, count(*), min(e.id)::text, max(e.id)::text,'
        ' min(e.created_at), max(e.created_at),'
        ' (min(ARRAY[e.txid::text, e.id]))[1], (max(ARRAY[e.txid::text, e.id]))[1],'
        ' (min(ARRAY[e.txid::text, e.id]))[2], (max(ARRAY[e.txid::text, e.id]))[2]'
        ' FROM %I AS e GROUP BY e.org', partition_name);
END
$$
"""

# Drops a whole month partition entirely before ``horizon`` (at least 30 days ago).
DROP_PARTITION = r"""
CREATE FUNCTION audit_drop_partition(partition_name text, horizon timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    bound text;
    upper_bound timestamptz;
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
    EXECUTE format('DROP TABLE %I', partition_name);
END
$$
"""


def _index_and_protect_the_trail() -> None:
    """The trail's indexes, append-only triggers and row-level security on ``audit_entries``
    (partitioned or not: both directions build the same)."""
    for index, definition in INDEXES.items():
        op.execute(f"CREATE INDEX {index} ON audit_entries {definition}")
    op.execute(
        "CREATE TRIGGER audit_entries_no_update_or_delete BEFORE UPDATE OR DELETE"
        " ON audit_entries FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only()"
    )
    op.execute(
        "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE"
        " ON audit_entries FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only()"
    )
    op.execute(
        f"CREATE POLICY tenant_isolation ON audit_entries USING ({RULE}) WITH CHECK ({RULE})"
    )
    op.execute("ALTER TABLE audit_entries ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE audit_entries FORCE ROW LEVEL SECURITY")


# The first instant of the month after next, UTC: the converted table's upper bound.
BOUND = """
SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months') AT TIME ZONE 'UTC'
"""
EVERY_ORG = "SET LOCAL insights_audit.org = '*'"


def _prepare_while_the_service_runs(bound: str) -> None:
    """What takes time, done without blocking readers or writers: the new primary key's
    index and a validated CHECK that the rows lie before ``bound``. Repeatable after a
    failure (an interrupted concurrent build leaves an invalid index behind)."""
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS audit_entries_before_pkey")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY audit_entries_before_pkey"
            " ON audit_entries (id, created_at)"
        )
        op.execute("ALTER TABLE audit_entries DROP CONSTRAINT IF EXISTS audit_entries_before_range")
        op.execute(
            "ALTER TABLE audit_entries ADD CONSTRAINT audit_entries_before_range"
            f" CHECK (created_at < '{bound}') NOT VALID"
        )
        op.execute("ALTER TABLE audit_entries VALIDATE CONSTRAINT audit_entries_before_range")


def upgrade() -> None:
    op.execute(EVERY_ORG)
    bind = op.get_bind()
    bound: str = bind.execute(text(BOUND)).scalar_one().isoformat()
    if bind.execute(text("SELECT EXISTS (SELECT 1 FROM audit_entries)")).scalar_one():
        _prepare_while_the_service_runs(bound)
        op.execute(EVERY_ORG)
    op.execute("ALTER TABLE audit_entries RENAME TO audit_entries_before")
    op.execute("ALTER INDEX pk_audit_entries RENAME TO audit_entries_before_id")
    for index in INDEXES:
        op.execute(f"ALTER INDEX {index} RENAME TO {index.replace('audit_entries', 'before')}")
    op.execute("DROP TRIGGER audit_entries_no_update_or_delete ON audit_entries_before")
    op.execute("DROP TRIGGER audit_entries_no_truncate ON audit_entries_before")
    op.execute(PARENT)
    _index_and_protect_the_trail()
    # Whoever could read and write the old table may do so on the new one.
    op.execute(
        """
        DO $$
        DECLARE grant_row record;
        BEGIN
            FOR grant_row IN
                SELECT grantee, privilege_type FROM information_schema.role_table_grants
                WHERE table_name = 'audit_entries_before' AND grantee <> current_user
            LOOP
                EXECUTE format('GRANT %s ON audit_entries TO %I',
                               grant_row.privilege_type, grant_row.grantee);
                EXECUTE format('REVOKE %s ON audit_entries_before FROM %I',
                               grant_row.privilege_type, grant_row.grantee);
            END LOOP;
        END
        $$
        """
    )
    op.execute(PROTECT_PARTITION)
    op.execute(ENSURE_PARTITIONS)
    op.execute(PARTITION_ORGS)
    op.execute(DROP_PARTITION)
    # Definer functions: only the roles granted them (db grant-app-role) may call them.
    for function in (
        "audit_protect_partition(text)",
        "audit_ensure_partitions(date, date)",
        "audit_partition_orgs(text)",
        "audit_drop_partition(text, timestamptz)",
    ):
        op.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    op.execute(
        f"""
        DO $$
        DECLARE
            next_month timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC')
                                       + interval '1 month') AT TIME ZONE 'UTC';
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM audit_entries_before) THEN
                DROP TABLE audit_entries_before;
                PERFORM audit_ensure_partitions(
                    (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date);
            ELSE
                ALTER TABLE audit_entries_before DROP CONSTRAINT audit_entries_before_id;
                ALTER TABLE audit_entries_before ADD CONSTRAINT audit_entries_before_pkey
                    PRIMARY KEY USING INDEX audit_entries_before_pkey;
                -- The validated CHECK implies the bound: no scan.
                ALTER TABLE audit_entries ATTACH PARTITION audit_entries_before
                    FOR VALUES FROM (MINVALUE) TO ('{bound}');
                CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries_before
                    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
            END IF;
            PERFORM audit_ensure_partitions(
                (next_month AT TIME ZONE 'UTC')::date,
                (next_month AT TIME ZONE 'UTC' + interval '2 months')::date);
        END
        $$
        """
    )
    op.execute("CREATE TABLE audit_entries_default PARTITION OF audit_entries DEFAULT")
    op.execute("SELECT audit_protect_partition('audit_entries_default')")
    op.execute(
        """
        CREATE TABLE audit_retention_records (
            org text COLLATE "C" NOT NULL,
            number bigint NOT NULL,
            removed_before timestamptz NOT NULL,
            partitions text[] NOT NULL,
            entries bigint NOT NULL,
            first_id text COLLATE "C",
            last_id text COLLATE "C",
            first_created_at timestamptz,
            last_created_at timestamptz,
            first_block bigint,
            last_block bigint,
            head_hash bytea,
            previous_hash bytea,
            removed_at timestamptz NOT NULL,
            key_id text NOT NULL,
            record_hash bytea NOT NULL,
            signature bytea NOT NULL,
            CONSTRAINT pk_audit_retention_records PRIMARY KEY (org, number)
        )
        """
    )
    op.execute(
        f"CREATE POLICY tenant_isolation ON audit_retention_records USING ({RULE})"
        f" WITH CHECK ({RULE})"
    )
    op.execute("ALTER TABLE audit_retention_records ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE audit_retention_records FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE audit_retention_records")
    op.execute("ALTER TABLE audit_entries RENAME TO audit_entries_partitioned")
    op.execute(
        """
        CREATE TABLE audit_entries (LIKE audit_entries_partitioned INCLUDING DEFAULTS
                                    INCLUDING CONSTRAINTS)
        """
    )
    op.execute("ALTER TABLE audit_entries ALTER COLUMN txid SET DEFAULT pg_current_xact_id()")
    op.execute("SET LOCAL insights_audit.org = '*'")
    op.execute("INSERT INTO audit_entries SELECT * FROM audit_entries_partitioned")
    op.execute("DROP TABLE audit_entries_partitioned CASCADE")
    op.execute("DROP FUNCTION audit_ensure_partitions(date, date)")
    op.execute("DROP FUNCTION audit_partition_orgs(text)")
    op.execute("DROP FUNCTION audit_drop_partition(text, timestamptz)")
    op.execute("DROP FUNCTION audit_protect_partition(text)")
    op.execute("ALTER TABLE audit_entries ADD CONSTRAINT pk_audit_entries PRIMARY KEY (id)")
    _index_and_protect_the_trail()
