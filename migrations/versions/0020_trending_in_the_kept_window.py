"""Trending from one kept window: ``window_counts.earlier_views`` and its rising order.

A kept window now also holds, for every dashboard, its views in the window as long just
before it (``earlier_views``), from the same snapshot. Trending then reads one kept window:
the dashboards no view has changed since keep their kept score, so the best of them come
from an index in score order (``ix_window_counts_rising``, rising ones only) and only the
changed ones are scored again. Kept counts made before this migration have no earlier
views: they are marked stale and dropped (the next request counts again; the tables are
derived).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The trending score of a kept row, as the trending statement orders by it (float8).
SCORE = "(CAST(views - earlier_views AS float8) / sqrt(CAST(earlier_views + 1 AS float8)))"


def upgrade() -> None:
    op.execute("ALTER TABLE window_counts ADD COLUMN earlier_views bigint NOT NULL DEFAULT 0")
    op.execute("ALTER TABLE window_counts ALTER COLUMN earlier_views DROP DEFAULT")
    op.execute("UPDATE window_snapshots SET as_of = '-infinity'")
    op.execute("DELETE FROM window_counts")
    op.execute(
        f"CREATE INDEX ix_window_counts_rising ON window_counts"
        f" (org, days, {SCORE} DESC, views DESC, dashboard_id)"
        " WHERE views > earlier_views"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_window_counts_rising")
    op.execute("ALTER TABLE window_counts DROP COLUMN earlier_views")
