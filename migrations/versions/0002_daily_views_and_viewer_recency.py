"""Daily view rollups and viewer recency, so windowed reads cost the same at any size.

Adds ``dashboard_daily_views`` (per dashboard and UTC day: views, distinct viewers, viewers
whose latest view is that day, and the running total of views), the running totals of past
days stored on first use (``total_snapshots``, ``dashboard_day_totals``),
``view_logs.previous_viewed_at``, ``dashboard_totals.name_reported_at`` and an index of
viewers by recency; drops the per-dashboard
index of raw views that the stats endpoint no longer reads. Existing views are rolled up.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dashboard_daily_views",
        sa.Column("org", sa.Text(collation="C"), nullable=False),
        sa.Column("dashboard_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("views", sa.BigInteger, nullable=False),
        sa.Column("unique_viewers", sa.BigInteger, nullable=False),
        sa.Column("last_viewers", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("total_views", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org", "dashboard_id", "day", name="pk_dashboard_daily_views"),
    )
    # Updates touch no indexed column: room on each page keeps them HOT.
    op.execute("ALTER TABLE dashboard_daily_views SET (fillfactor = 70)")
    # Every view rewrites a row here; vacuum often so index-only scans stay index-only.
    op.execute(
        "ALTER TABLE view_logs SET (autovacuum_vacuum_scale_factor = 0.01,"
        " autovacuum_analyze_scale_factor = 0.02)"
    )
    op.create_table(
        "total_snapshots",
        sa.Column("org", sa.Text(collation="C"), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.PrimaryKeyConstraint("org", "day", name="pk_total_snapshots"),
    )
    op.create_table(
        "dashboard_day_totals",
        sa.Column("org", sa.Text(collation="C"), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("dashboard_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("total_views", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("org", "day", "dashboard_id", name="pk_dashboard_day_totals"),
    )
    op.add_column("view_logs", sa.Column("previous_viewed_at", postgresql.TIMESTAMP(timezone=True)))
    op.add_column(
        "dashboard_totals", sa.Column("name_reported_at", postgresql.TIMESTAMP(timezone=True))
    )
    op.create_index(
        "ix_view_logs_dashboard_recency",
        "view_logs",
        ["org", "dashboard_id", "last_viewed_at"],
    )
    op.drop_index("ix_audit_entries_views_by_dashboard", table_name="audit_entries")
    op.execute(
        """
        INSERT INTO dashboard_daily_views (org, dashboard_id, day, views, unique_viewers,
                                           last_viewers, total_views)
        SELECT per_day.org, per_day.target_id, per_day.day, per_day.views, per_day.viewers,
               coalesce(last_days.viewers, 0),
               sum(per_day.views) OVER (PARTITION BY per_day.org, per_day.target_id
                                        ORDER BY per_day.day)
        FROM (
            SELECT org, target_id, (created_at AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS views, count(DISTINCT user_id) AS viewers
            FROM audit_entries
            WHERE type = 'dashboard' AND action = 'view'
            GROUP BY 1, 2, 3
        ) AS per_day
        LEFT JOIN (
            SELECT org, dashboard_id, (last_viewed_at AT TIME ZONE 'UTC')::date AS day,
                   count(*) AS viewers
            FROM view_logs GROUP BY 1, 2, 3
        ) AS last_days
          ON (last_days.org, last_days.dashboard_id, last_days.day)
           = (per_day.org, per_day.target_id, per_day.day)
        """
    )
    op.execute(
        """
        UPDATE view_logs AS v SET previous_viewed_at = p.previous_viewed_at
        FROM (
            SELECT org, user_id, target_id,
                   (array_agg(created_at ORDER BY created_at DESC))[2] AS previous_viewed_at
            FROM audit_entries
            WHERE type = 'dashboard' AND action = 'view'
            GROUP BY 1, 2, 3
        ) AS p
        WHERE (v.org, v.user_id, v.dashboard_id) = (p.org, p.user_id, p.target_id)
        """
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE view_logs RESET (autovacuum_vacuum_scale_factor,"
        " autovacuum_analyze_scale_factor)"
    )
    op.create_index(
        "ix_audit_entries_views_by_dashboard",
        "audit_entries",
        ["org", "target_id", "created_at"],
        postgresql_include=["user_id"],
        postgresql_where=sa.text("type = 'dashboard' AND action = 'view'"),
    )
    op.drop_index("ix_view_logs_dashboard_recency", table_name="view_logs")
    op.drop_column("dashboard_totals", "name_reported_at")
    op.drop_column("view_logs", "previous_viewed_at")
    op.drop_table("dashboard_day_totals")
    op.drop_table("total_snapshots")
    op.drop_table("dashboard_daily_views")
