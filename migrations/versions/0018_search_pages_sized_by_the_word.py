"""Search pages whose cost follows the page, not how common the word is.

``audit_search_keys`` (migration 0014) walked the org's newest 500 entries, then asked the
trigram index one whole month at a time. A word in a few percent of entries that the walk
could not satisfy read, rechecked and sorted every match of the newest month (about 13,000
at ten million events) to keep a hundred. Two changes, same signature, same answers:

- **Walks and slices sized by the word.** The first walk tells how often the word occurs
  among the newest entries. When the rest of the page is then expected within 5,000 more
  entries, a second walk of the time index reads that many, and half as many again. When
  it is not, but the walks found the word at all, the trigram index is asked for the
  stretch of time expected to hold the rest of the page (half as much again, by how often
  it was found so far; never past the start of a month), so that the planner ANDs it
  with the time index and rechecks only that stretch's candidates; a word the walks did
  not find is asked for a month at a time, as before. A walk that reaches the org's
  oldest entry answers alone.
- **A cheap test first.** The searchable text (``audit_search_text``, a SQL function that
  gathers the strings nested in ``details`` and cannot be inlined) costs about 6 µs an
  entry. Every word without a double quote, a backslash or a control character that occurs
  in it also occurs in ``lower(action, user_id, user_email, details::text)`` (1.3 µs): jsonb
  writes every string of ``details`` as it is but for those characters, and what it adds
  (keys, numbers, punctuation) can only add candidates. That test runs first; the
  searchable text decides for the entries it keeps.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_ROLE = "insights_audit_search"
WALK_ROWS = 500
# The longest second walk: about what the trigram index costs for a month of a rarer word.
LONG_WALK_ROWS = 5_000

KEYS = f"""
CREATE OR REPLACE FUNCTION audit_search_keys(
    p_org text, p_patterns text[], p_types text[], p_actions text[], p_action_prefixes text[],
    p_target uuid, p_users text[], p_since timestamptz, p_until timestamptz,
    p_after_created timestamptz, p_after_id text, p_limit integer
) RETURNS TABLE (created_at timestamptz, id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public ROWS 101 AS $$
DECLARE
    scope text := coalesce(current_setting('insights_audit.org', true), '');
    conditions text := 'e.org = $1';
    words text := '';
    pattern text;
    walked integer;
    walk_rows integer;
    walk_top timestamptz;
    walk_newest timestamptz;
    stretch interval;
    hits timestamptz[];
    hit_ids text[];
    found integer;
    added integer;
    oldest timestamptz;
    upper_created timestamptz;
    upper_id text;
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
    -- One condition per word: the trigram index answers each (it takes no arrays); the
    -- cheap test first where it is sure to keep every match (the escaped pattern holds no
    -- backslash of the word itself, no double quote, no control character).
    FOR n IN 1 .. coalesce(array_length(p_patterns, 1), 0) LOOP
        pattern := p_patterns[n];
        IF strpos(pattern, E'\\\\\\\\') = 0 AND pattern !~ '["\\x01-\\x1f]' THEN
            words := words || format(
                ' AND lower(concat_ws('' '', e.action, e.user_id, e.user_email,'
                ' e.details::text) COLLATE "default") LIKE lower(%L)', pattern);
        END IF;
        words := words || format(
            ' AND audit_search_text(e.action, e.user_id, e.user_email, e.details)'
            ' LIKE lower(%L)', pattern);
    END LOOP;

    -- The newest entries first, in two walks of the time index: the first of
    -- {WALK_ROWS} entries; a second, where the first found the word often enough that the rest of
    -- the page is expected within {LONG_WALK_ROWS} more entries, of as many entries as that
    -- expectation and half as many again. A common word fills the page here.
    walk_rows := {WALK_ROWS};
    upper_created := p_after_created;
    upper_id := p_after_id;
    found := 0;
    LOOP
        EXECUTE format(
            'SELECT count(*)::integer, max(w.created_at), min(w.created_at),'
            ' (array_agg(w.id ORDER BY w.created_at, w.id))[1],'
            ' array_agg(w.created_at ORDER BY w.created_at DESC, w.id DESC) FILTER (WHERE w.hit),'
            ' array_agg(w.id ORDER BY w.created_at DESC, w.id DESC) FILTER (WHERE w.hit)'
            ' FROM (SELECT e.created_at, e.id, (true %s) AS hit FROM audit_entries e'
            '   WHERE %s AND ($13::timestamptz IS NULL'
            '     OR e.created_at <= $13 AND (e.created_at, e.id) < ($13, $14))'
            '   ORDER BY e.created_at DESC, e.id DESC LIMIT $15) w',
            words, conditions)
        INTO walked, walk_top, upper_created, upper_id, hits, hit_ids
        USING p_org, p_patterns, p_types, p_actions, p_action_prefixes, p_target, p_users,
              p_since, p_until, p_after_created, p_after_id, p_limit,
              upper_created, upper_id, walk_rows;
        walk_newest := coalesce(walk_newest, walk_top);
        added := least(coalesce(array_length(hits, 1), 0), p_limit - found);
        RETURN QUERY SELECT * FROM unnest(hits[1:added], hit_ids[1:added]);
        found := found + added;
        IF found >= p_limit OR walked < walk_rows THEN
            RETURN;  -- the page is full, or no entry is left after the walk
        END IF;
        EXIT WHEN walk_rows > {WALK_ROWS} OR found = 0
            OR (p_limit - found) * {WALK_ROWS} / found > {LONG_WALK_ROWS};
        walk_rows := (p_limit - found) * {WALK_ROWS} * 3 / (2 * found) + 1;
    END LOOP;

    -- A rarer word: its trigrams find the matches, from where the walks ended, until the
    -- page is full; never a walk of the whole org. A word the walks found is asked for in
    -- stretches of time sized by how often the word was found so far (the expected rest of
    -- the page, and half as much again), so that the trigram index
    -- is ANDed with the time index and only that stretch's matches are read; a word they
    -- did not find, a month at a time. No stretch reaches past the start of its month.
    SELECT min(e.created_at) INTO oldest FROM audit_entries e WHERE e.org = p_org;
    oldest := greatest(oldest, p_since);
    IF found > 0 THEN
        stretch := greatest((walk_newest - upper_created) * (1.5 * (p_limit - found) / found),
                            interval '1 second');
    END IF;
    PERFORM set_config('enable_indexscan', 'off', true);
    PERFORM set_config('enable_seqscan', 'off', true);
    WHILE found < p_limit AND upper_created >= oldest LOOP
        -- The month of the bound, or the one before when the bound (created_at alone, so
        -- exclusive) is the start of a month.
        lower_bound := date_trunc('month', CASE WHEN upper_id = ''
            THEN upper_created - interval '1 microsecond' ELSE upper_created END);
        IF upper_created - stretch > lower_bound THEN
            lower_bound := upper_created - stretch;
        END IF;
        -- OFFSET 0 plans the slice for all its matches: under a LIMIT, an overestimate of
        -- the word would make walking the time index past every entry of the month look
        -- cheap (seconds for an id-shaped word at ten million entries).
        RETURN QUERY EXECUTE format(
            'SELECT s.created_at, s.id FROM (SELECT e.created_at, e.id FROM audit_entries e'
            '   WHERE %s %s AND e.created_at >= $13 AND e.created_at <= $17'
            '   AND (e.created_at, e.id) < ($14, $15) OFFSET 0) s'
            ' ORDER BY s.created_at DESC, s.id DESC LIMIT $16',
            conditions, words)
        USING p_org, p_patterns, p_types, p_actions, p_action_prefixes, p_target, p_users,
              p_since, p_until, p_after_created, p_after_id, p_limit,
              lower_bound, upper_created, upper_id, p_limit - found,
              -- the newest moment the slice may hold, for pruning: a bound of created_at
              -- alone is exclusive (the next month's partition is not planned)
              CASE WHEN upper_id = '' THEN upper_created - interval '1 microsecond'
                   ELSE upper_created END;
        GET DIAGNOSTICS added = ROW_COUNT;
        found := found + added;
        -- The next stretch: what the time covered so far promises for the rest of the page
        -- (half as much again), never shorter than the last one, at least twice as long
        -- when this one found nothing.
        IF found > 0 THEN
            stretch := least(greatest(
                (walk_newest - lower_bound) * (1.5 * (p_limit - found) / found),
                stretch * CASE WHEN added = 0 THEN 2 ELSE 1 END,
                interval '1 second'), interval '400 days');
        END IF;
        -- Ids are collated "C": no id sorts before '', so this bound is created_at alone.
        upper_created := lower_bound;
        upper_id := '';
    END LOOP;
    PERFORM set_config('enable_indexscan', index_walks, true);
    PERFORM set_config('enable_seqscan', table_scans, true);
END
$$
"""


def _migration(file_name: str):  # type: ignore[no-untyped-def]
    """An earlier migration, where a function's previous definition is."""
    path = Path(__file__).with_name(file_name)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# What the planner knows of a word comes from a sample of each partition's searchable texts:
# with the default 100 (300 x 100 entries, a histogram of 101), a word in under 1% of a
# month was guessed from its length alone (a name in 0.36% of the month: 51 entries for
# 2,993), so its stretches were not ANDed with the time index. 1,000 samples 300,000
# entries of a month (about 4 s of ANALYZE for a month of 830,000 entries, once; autovacuum
# then analyzes only the month being written). Partitions made later get it where they are
# made (``audit_ensure_partitions``).
TEXT_STATISTICS = 1000
TEXT_INDEX = "ix_audit_entries_text"
ENSURE_PARTITIONS_0009 = "0009_partition_trail_by_month.py"
STATISTICS_OF_A_NEW_PARTITION = f"""PERFORM audit_protect_partition(name);
                EXECUTE (SELECT format('ALTER INDEX %s ALTER COLUMN 1 SET STATISTICS %s',
                                       i.inhrelid::regclass, {{target}})
                         FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid
                         WHERE i.inhparent = '{TEXT_INDEX}'::regclass
                           AND x.indrelid = name::regclass);"""


def _ensure_partitions(target: int | None) -> str:
    """``audit_ensure_partitions`` of migration 0009, setting ``target`` on the searchable
    text's statistics of each partition it makes (``None``: as 0009 made them)."""
    previous: str = _migration(ENSURE_PARTITIONS_0009).ENSURE_PARTITIONS
    previous = previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    if target is None:
        return previous
    step = "PERFORM audit_protect_partition(name);"
    assert previous.count(step) == 1
    return previous.replace(step, STATISTICS_OF_A_NEW_PARTITION.format(target=target))


# The planner reads a table's statistics for a condition that is not leakproof (``LIKE``)
# only where no row-level security policy applies: under the search role's own policy it
# guessed every word from its length (a 3% word: 48 entries of a month, not 2,650), so it
# never ANDed a slice with the time index. A role that bypasses the policies gets the
# statistics. The search role can read ``audit_entries`` only, and only through the function;
# the tables' owner, its one member, bypasses the policies already. Only a superuser may
# grant it; elsewhere searches stay right, with the guessed statistics.
BYPASS = f"""
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{SEARCH_ROLE}')
       AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        ALTER ROLE {SEARCH_ROLE} BYPASSRLS;
    ELSE
        RAISE NOTICE 'not a superuser: searches plan with guessed statistics';
    END IF;
END
$$
"""


# CREATE OR REPLACE keeps the function's owner (the search role) and who may execute it.
def upgrade() -> None:
    op.execute(KEYS)
    op.execute(BYPASS)
    # On a partitioned index, the target reaches every partition's index that exists.
    op.execute(f"ALTER INDEX {TEXT_INDEX} ALTER COLUMN 1 SET STATISTICS {TEXT_STATISTICS}")
    op.execute(_ensure_partitions(TEXT_STATISTICS))
    op.execute("ANALYZE audit_entries")


def downgrade() -> None:
    op.execute(_ensure_partitions(None))
    op.execute(f"ALTER INDEX {TEXT_INDEX} ALTER COLUMN 1 SET STATISTICS -1")
    previous = _migration("0014_search_under_row_level_security.py").KEYS
    op.execute(previous.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    # The role stays as it is: it belongs to the whole server, other databases may use it.
