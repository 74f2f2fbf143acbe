"""Text search that uses its indexes under row-level security.

PostgreSQL never turns a condition whose operator is not leakproof (``LIKE``, here on
``audit_search_text(...)``) into an index condition below a row-level security policy: as
the app role, a search with ``q`` read every entry of the org (5 s at 1M entries) while the
trigram index sat unused. Only the superuser, whom the policy does not bind, got the index.

``audit_search_keys`` finds a search page's keys ``(created_at, id)`` instead. It runs with
the rights of ``insights_audit_search``, a role that cannot log in, whose own policy admits
every row, so the planner may use the trigram index; its one query always names the org,
and it answers only for the org of the calling transaction (``insights_audit.org``), as the
tenant policy does. The service then reads the page's entries by those keys as the app role,
under row-level security as before: the policy stays the last line of defence.

A page costs what the page needs, not what the word's frequency makes it: the function first
walks the org's newest ``WALK_ROWS`` entries after the cursor (the time index) and keeps the
matches; a common word fills the page there. Only when it does not (a rare or absent word)
does it ask the trigram index, one month at a time from the newest, until the page is full,
with index walks and table scans off so that the planner cannot choose to read the whole org
instead.

Where the migrating role may not create roles, the function belongs to the tables' owner:
searches are then right, under row-level security, and as slow as before.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_ROLE = "insights_audit_search"
WALK_ROWS = 500
SIGNATURE = (
    "audit_search_keys(text, text[], text[], text[], text[], uuid, text[], timestamptz,"
    " timestamptz, timestamptz, text, integer)"
)

KEYS = f"""
CREATE FUNCTION audit_search_keys(
    p_org text, p_patterns text[], p_types text[], p_actions text[], p_action_prefixes text[],
    p_target uuid, p_users text[], p_since timestamptz, p_until timestamptz,
    p_after_created timestamptz, p_after_id text, p_limit integer
) RETURNS TABLE (created_at timestamptz, id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public ROWS 101 AS $$
DECLARE
    scope text := coalesce(current_setting('insights_audit.org', true), '');
    conditions text := 'e.org = $1';
    words text := '';
    walked timestamptz[];
    walked_ids text[];
    found integer := 0;
    added integer;
    newest timestamptz;
    oldest timestamptz;
    upper_bound timestamptz;
    lower_bound timestamptz;
    index_walks text := current_setting('enable_indexscan');
    table_scans text := current_setting('enable_seqscan');
BEGIN
    IF scope = '' OR scope IS DISTINCT FROM p_org THEN
        RAISE EXCEPTION 'audit_search_keys answers for the org of the transaction only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_limit IS NULL OR p_limit < 1 OR p_limit > 1001 THEN
        RAISE EXCEPTION 'a search page holds 1 to 1001 keys' USING ERRCODE = 'check_violation';
    END IF;
    IF p_types IS NOT NULL THEN
        conditions := conditions || ' AND e.type = ANY($3)';
    END IF;
    IF p_actions IS NOT NULL OR p_action_prefixes IS NOT NULL THEN
        conditions := conditions || ' AND (e.action = ANY(coalesce($4, ''{{}}''::text[]))'
            || ' OR e.action LIKE ANY(coalesce($5, ''{{}}''::text[])))';
    END IF;
    IF p_target IS NOT NULL THEN
        conditions := conditions || ' AND e.target_id = $6';
    END IF;
    IF p_users IS NOT NULL THEN
        conditions := conditions || ' AND e.user_id = ANY($7)';
    END IF;
    IF p_since IS NOT NULL THEN
        conditions := conditions || ' AND e.created_at >= $8';
    END IF;
    IF p_until IS NOT NULL THEN
        conditions := conditions || ' AND e.created_at < $9';
    END IF;
    IF p_after_created IS NOT NULL THEN
        conditions := conditions || ' AND (e.created_at, e.id) < ($10, $11)';
    END IF;
    -- One condition per word: the trigram index answers each (it takes no arrays).
    FOR n IN 1 .. coalesce(array_length(p_patterns, 1), 0) LOOP
        words := words || format(
            ' AND audit_search_text(e.action, e.user_id, e.user_email, e.details)'
            ' LIKE lower($2[%s])', n);
    END LOOP;

    -- The newest entries first: a common word fills the page here.
    EXECUTE format(
        'SELECT array_agg(w.created_at ORDER BY w.created_at DESC, w.id DESC),'
        ' array_agg(w.id ORDER BY w.created_at DESC, w.id DESC)'
        ' FROM (SELECT e.created_at, e.id FROM ('
        '   SELECT * FROM audit_entries e WHERE %s'
        '   ORDER BY e.created_at DESC, e.id DESC LIMIT {WALK_ROWS}) e'
        ' WHERE true %s ORDER BY e.created_at DESC, e.id DESC LIMIT $12) w',
        conditions, words)
    INTO walked, walked_ids
    USING p_org, p_patterns, p_types, p_actions, p_action_prefixes, p_target, p_users,
          p_since, p_until, p_after_created, p_after_id, p_limit;
    IF coalesce(array_length(walked, 1), 0) >= p_limit THEN
        RETURN QUERY SELECT * FROM unnest(walked, walked_ids);
        RETURN;
    END IF;

    -- A rare or absent word: its trigrams find the matches, month by month from the newest,
    -- until the page is full; never a walk of the whole org.
    SELECT max(e.created_at), min(e.created_at) INTO newest, oldest
        FROM audit_entries e WHERE e.org = p_org;
    IF words <> '' THEN
        PERFORM set_config('enable_indexscan', 'off', true);
        PERFORM set_config('enable_seqscan', 'off', true);
    END IF;
    upper_bound := least(newest + interval '1 microsecond',
                         p_after_created + interval '1 microsecond', p_until);
    oldest := greatest(oldest, p_since);
    WHILE found < p_limit AND upper_bound > oldest LOOP
        lower_bound := date_trunc('month', upper_bound - interval '1 microsecond');
        RETURN QUERY EXECUTE format(
            'SELECT e.created_at, e.id FROM audit_entries e WHERE %s %s'
            ' AND e.created_at >= $13 AND e.created_at < $14'
            ' ORDER BY e.created_at DESC, e.id DESC LIMIT $15',
            conditions, words)
        USING p_org, p_patterns, p_types, p_actions, p_action_prefixes, p_target, p_users,
              p_since, p_until, p_after_created, p_after_id, p_limit,
              lower_bound, upper_bound, p_limit - found;
        GET DIAGNOSTICS added = ROW_COUNT;
        found := found + added;
        upper_bound := lower_bound;
    END LOOP;
    PERFORM set_config('enable_indexscan', index_walks, true);
    PERFORM set_config('enable_seqscan', table_scans, true);
END
$$
"""

# The search role: created when the migrating role may, and given every row by a policy of
# its own (roles belong to the whole server: another database may have made it already).
ROLE = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SEARCH_ROLE}') THEN
        BEGIN
            CREATE ROLE {SEARCH_ROLE} NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role {SEARCH_ROLE}: searches run under the owner';
            RETURN;
        END;
    END IF;
    BEGIN
        EXECUTE 'GRANT {SEARCH_ROLE} TO ' || quote_ident(current_user);
    EXCEPTION WHEN OTHERS THEN
        NULL;  -- already a member, or a superuser
    END;
    IF pg_has_role(current_user, '{SEARCH_ROLE}', 'MEMBER') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO {SEARCH_ROLE}';
        EXECUTE 'GRANT SELECT ON audit_entries TO {SEARCH_ROLE}';
        EXECUTE 'CREATE POLICY search_keys ON audit_entries TO {SEARCH_ROLE} USING (true)';
        EXECUTE 'ALTER FUNCTION {SIGNATURE} OWNER TO {SEARCH_ROLE}';
    END IF;
END
$$
"""


def upgrade() -> None:
    op.execute(KEYS)
    op.execute(f"REVOKE EXECUTE ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(ROLE)
    op.execute(
        f"""
        DO $$
        DECLARE grantee_row record;
        BEGIN
            FOR grantee_row IN
                SELECT DISTINCT grantee FROM information_schema.role_table_grants
                WHERE table_name = 'audit_checkpoints' AND privilege_type = 'INSERT'
                  AND grantee <> current_user
            LOOP
                EXECUTE format('GRANT EXECUTE ON FUNCTION {SIGNATURE} TO %I',
                               grantee_row.grantee);
            END LOOP;
        END
        $$
        """
    )


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute("DROP POLICY IF EXISTS search_keys ON audit_entries")
    # The role stays: other databases of the server may use it.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SEARCH_ROLE}') THEN
                EXECUTE 'REVOKE ALL ON audit_entries FROM {SEARCH_ROLE}';
                EXECUTE 'REVOKE USAGE ON SCHEMA public FROM {SEARCH_ROLE}';
            END IF;
        END
        $$
        """
    )
