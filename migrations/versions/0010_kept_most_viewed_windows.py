"""Most-viewed windows kept counted: ``window_snapshots`` and ``window_counts``.

For each org and ``days`` that clients ask for, every dashboard's views in the window as of
a recent moment, and the snapshot (``pg_snapshot``) those counts saw. A request then only
adds the views that snapshot did not see and takes away the views that slid out of the
window since: exact, without counting every dashboard of the org. Both tables are derived:
dropping them loses nothing (the next request counts again).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RULE = (
    "org = (SELECT current_setting('insights_audit.org', true))"
    " OR (SELECT insights_audit_every_org())"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE window_snapshots (
            org text COLLATE "C" NOT NULL,
            days integer NOT NULL,
            as_of timestamptz NOT NULL,
            snapshot pg_snapshot NOT NULL,
            requested_at timestamptz NOT NULL,
            CONSTRAINT pk_window_snapshots PRIMARY KEY (org, days)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE window_counts (
            org text COLLATE "C" NOT NULL,
            days integer NOT NULL,
            dashboard_id uuid NOT NULL,
            views bigint NOT NULL,
            last_viewed_at timestamptz NOT NULL,
            CONSTRAINT pk_window_counts PRIMARY KEY (org, days, dashboard_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_window_counts_top ON window_counts"
        " (org, days, views DESC, last_viewed_at DESC, dashboard_id)"
    )
    for table in ("window_snapshots", "window_counts"):
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({RULE}) WITH CHECK ({RULE})")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE window_counts")
    op.execute("DROP TABLE window_snapshots")
