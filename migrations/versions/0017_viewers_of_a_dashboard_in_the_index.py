"""The viewers of a dashboard since a moment, read from the index alone.

``ix_view_logs_dashboard_recency`` (org, dashboard, last view) now carries the user too, so
that the viewer sets of related and recommended dashboards are index-only scans instead of a
heap fetch per viewer. The index gets a new entry on every view anyway (the last view is in
its key), so a view writes no more index entries than before, a few bytes more.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX ix_view_logs_dashboard_recency")
    op.execute(
        "CREATE INDEX ix_view_logs_dashboard_recency"
        " ON view_logs (org, dashboard_id, last_viewed_at) INCLUDE (user_id)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX ix_view_logs_dashboard_recency")
    op.execute(
        "CREATE INDEX ix_view_logs_dashboard_recency"
        " ON view_logs (org, dashboard_id, last_viewed_at)"
    )
