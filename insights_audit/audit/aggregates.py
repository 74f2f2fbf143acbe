"""The aggregates the reads use, rebuilt from the raw audit trail (their source of truth).

``view_logs``, ``dashboard_totals`` and ``dashboard_daily_views`` are kept up to date by every
recorded view (``dashboard_day_totals`` is filled from them on first use); ``rebuild``
recomputes them for one org from ``audit_entries`` alone, so they can always be checked
against, or restored from, the trail.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, text

from insights_audit.models import (
    DashboardDailyViews,
    DashboardDayTotal,
    DashboardTotal,
    EngagementAnswer,
    TotalSnapshot,
    ViewLog,
    WindowCount,
    WindowSnapshot,
    is_view,
)

REBUILD_VIEW_LOGS = text(
    f"""
    INSERT INTO view_logs (org, user_id, dashboard_id, user_email, view_count,
                           first_viewed_at, last_viewed_at, previous_viewed_at)
    SELECT org, user_id, target_id,
           (array_agg(user_email ORDER BY created_at DESC, id DESC)
                FILTER (WHERE user_email IS NOT NULL))[1],
           count(*), min(created_at), max(created_at),
           (array_agg(created_at ORDER BY created_at DESC))[2]
    FROM audit_entries
    WHERE org = :org AND {is_view()}
    GROUP BY org, user_id, target_id
    """
)

REBUILD_DAILY_VIEWS = text(
    f"""
    INSERT INTO dashboard_daily_views (org, dashboard_id, day, views, unique_viewers,
                                       last_viewers, total_views)
    SELECT :org, per_day.target_id, per_day.day, per_day.views, per_day.viewers,
           coalesce(last_days.viewers, 0),
           sum(per_day.views) OVER (PARTITION BY per_day.target_id ORDER BY per_day.day)
    FROM (
        SELECT target_id, day, sum(views) AS views, count(*) AS viewers
        FROM (
            SELECT target_id, (created_at AT TIME ZONE 'UTC')::date AS day, user_id,
                   count(*) AS views
            FROM audit_entries
            WHERE org = :org AND {is_view()}
            GROUP BY 1, 2, 3
        ) AS per_viewer
        GROUP BY target_id, day
    ) AS per_day
    LEFT JOIN (
        -- Viewers whose latest view is on that day (view_logs is rebuilt first).
        SELECT dashboard_id, (last_viewed_at AT TIME ZONE 'UTC')::date AS day,
               count(*) AS viewers
        FROM view_logs WHERE org = :org GROUP BY 1, 2
    ) AS last_days ON last_days.dashboard_id = per_day.target_id AND last_days.day = per_day.day
    """
)

REBUILD_TOTALS = text(
    """
    INSERT INTO dashboard_totals (org, dashboard_id, name, name_reported_at, view_count,
                                  unique_viewers, first_viewed_at, last_viewed_at)
    SELECT :org, coalesce(v.dashboard_id, n.target_id), n.name, n.reported_at,
           coalesce(v.view_count, 0), coalesce(v.unique_viewers, 0),
           v.first_viewed_at, v.last_viewed_at
    FROM (
        SELECT dashboard_id, sum(view_count) AS view_count, count(*) AS unique_viewers,
               min(first_viewed_at) AS first_viewed_at, max(last_viewed_at) AS last_viewed_at
        FROM view_logs WHERE org = :org GROUP BY dashboard_id
    ) AS v
    FULL JOIN (
        SELECT DISTINCT ON (target_id) target_id, details ->> 'name' AS name,
               created_at AS reported_at
        FROM audit_entries
        WHERE org = :org AND type = 'dashboard' AND jsonb_typeof(details -> 'name') = 'string'
        ORDER BY target_id, created_at DESC, id DESC
    ) AS n ON n.target_id = v.dashboard_id
    """
)


# Every table ``rebuild`` empties and fills again for an org.
DERIVED = (
    EngagementAnswer,
    WindowCount,
    WindowSnapshot,
    TotalSnapshot,
    DashboardDayTotal,
    DashboardDailyViews,
    DashboardTotal,
    ViewLog,
)


def may_rebuild(connection: Connection) -> bool:
    """Whether the connection's role may rebuild (the tables' owner may; the app role may not
    empty them, nor analyze ``view_logs``)."""
    owner = connection.scalar(
        text(
            "SELECT pg_has_role(current_user, relowner, 'MEMBER') FROM pg_class"
            " WHERE oid = 'view_logs'::regclass"
        )
    )
    may_empty = text("SELECT has_table_privilege(:table, 'DELETE')")
    deletes = all(connection.scalar(may_empty, {"table": table.__tablename__}) for table in DERIVED)
    return bool(owner) and deletes


def rebuild(connection: Connection, org: str) -> None:
    """Replace the org's aggregates by what its audit trail implies, in the caller's transaction
    on ``org``."""
    for table in DERIVED:
        connection.execute(delete(table).where(table.org == org))
    connection.execute(REBUILD_VIEW_LOGS, {"org": org})
    # Fresh statistics, or the planner joins the new rows as if there were none.
    connection.execute(text("ANALYZE view_logs"))
    for statement in (REBUILD_DAILY_VIEWS, REBUILD_TOTALS):
        connection.execute(statement, {"org": org})


def vacuum_analyze(connection: Connection) -> None:
    """Fresh statistics and visibility maps after a bulk change (needs an autocommit connection)."""
    connection.execute(text("SET statement_timeout = 0"))
    for table in ("audit_entries", "view_logs", "dashboard_totals", "dashboard_daily_views"):
        connection.execute(text(f"VACUUM (ANALYZE) {table}"))
    connection.execute(text("RESET statement_timeout"))


# What must agree between the stored aggregates and a rebuild from the trail (running totals
# of past days are a cache filled on demand, and not compared).
COMPARED = {
    "view_logs": text(
        "SELECT user_id, dashboard_id, view_count, first_viewed_at, last_viewed_at"
        " FROM view_logs WHERE org = :org"
    ),
    "dashboard_totals": text(
        "SELECT dashboard_id, name, view_count, unique_viewers, first_viewed_at, last_viewed_at"
        " FROM dashboard_totals WHERE org = :org"
    ),
    "dashboard_daily_views": text(
        "SELECT dashboard_id, day, views, unique_viewers, last_viewers, total_views"
        " FROM dashboard_daily_views WHERE org = :org"
    ),
}


def differences(connection: Connection, org: str) -> dict[str, int]:
    """How many rows of each aggregate differ from what the trail implies (the tables' owner,
    in a transaction on ``org`` that the caller rolls back: the comparison rebuilds)."""

    def snapshot() -> dict[str, set[tuple[object, ...]]]:
        return {
            table: {tuple(row) for row in connection.execute(query, {"org": org})}
            for table, query in COMPARED.items()
        }

    stored = snapshot()
    rebuild(connection, org)
    expected = snapshot()
    return {
        table: max(len(stored[table] - expected[table]), len(expected[table] - stored[table]))
        for table in COMPARED
        if stored[table] != expected[table]
    }
