"""Searching an org's whole trail: by time, by user, and by text.

- ``ix_audit_entries_time``: an org's entries newest first (no filter, ``since``/``until``,
  and the export's oldest-first walk), every row.
- ``ix_audit_entries_user``: one user's entries newest first, every row (views included:
  a user's views are what a security review asks for first).
- ``ix_audit_entries_action``: entries of one action newest first, views left out (the
  partial index keeps the view hot path free of it; ``action=view`` reads the views index).
- ``ix_audit_entries_text``: the text ``q`` matches (``pg_trgm``: any substring of the
  action, user id, email and every string value inside ``details``, lowercased), every row.

``audit_search_text`` is the one definition of that text, used by the index and the queries.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEARCH_TEXT = """
CREATE FUNCTION audit_search_text(action text, user_id text, user_email text, details jsonb)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- The database's default collation folds case (ids are collated "C", which folds ASCII
    -- only): "ÉCLAIR" is found by "éclair".
    SELECT lower(concat_ws(' ', action, user_id, user_email, (
        SELECT string_agg(value #>> '{}', ' ')
        FROM jsonb_path_query(details, 'strict $.** ? (@.type() == "string")') AS value
    )) COLLATE "default")
$$
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(SEARCH_TEXT)
    op.execute(
        "CREATE INDEX ix_audit_entries_time ON audit_entries (org, created_at DESC, id DESC)"
    )
    op.execute(
        "CREATE INDEX ix_audit_entries_user"
        " ON audit_entries (org, user_id, created_at DESC, id DESC)"
    )
    op.execute(
        "CREATE INDEX ix_audit_entries_action"
        " ON audit_entries (org, action, created_at DESC, id DESC)"
        " WHERE NOT (type = 'dashboard' AND action = 'view')"
    )
    op.execute(
        "CREATE INDEX ix_audit_entries_text ON audit_entries USING gin"
        " (audit_search_text(action, user_id, user_email, details) gin_trgm_ops)"
    )


def downgrade() -> None:
    for index in ("text", "action", "user", "time"):
        op.execute(f"DROP INDEX ix_audit_entries_{index}")
    op.execute("DROP FUNCTION audit_search_text(text, text, text, jsonb)")
