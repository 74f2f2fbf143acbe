"""SQL of the dashboard reads: recently viewed, most viewed, usage stats (recording a view is
``view_counts``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    bindparam,
    select,
    text,
)

from insights_audit.models import DashboardTotal, ViewLog

TOP_VIEWERS = 10


# "Recently viewed" of one user (ix_view_logs_recent).
RECENT_DASHBOARDS = (
    select(
        ViewLog.dashboard_id,
        DashboardTotal.name,
        ViewLog.view_count,
        ViewLog.first_viewed_at,
        ViewLog.last_viewed_at,
    )
    .outerjoin(
        DashboardTotal,
        (DashboardTotal.org == ViewLog.org) & (DashboardTotal.dashboard_id == ViewLog.dashboard_id),
    )
    .where(ViewLog.org == bindparam("org"), ViewLog.user_id == bindparam("user_id"))
    .order_by(ViewLog.last_viewed_at.desc(), ViewLog.dashboard_id)
    .limit(bindparam("limit"))
)

# All-time "most viewed" of an org (ix_dashboard_totals_popular).
MOST_VIEWED = (
    select(
        DashboardTotal.dashboard_id,
        DashboardTotal.name,
        DashboardTotal.view_count,
        DashboardTotal.unique_viewers,
        DashboardTotal.last_viewed_at,
    )
    .where(DashboardTotal.org == bindparam("org"), DashboardTotal.view_count > 0)
    .order_by(
        DashboardTotal.view_count.desc(),
        DashboardTotal.last_viewed_at.desc(),
        DashboardTotal.dashboard_id,
    )
    .limit(bindparam("limit"))
)


def recent_dashboards_for(
    connection: Connection, org: str, user_id: str, limit: int
) -> list[Row[Any]]:
    """The user's dashboards, last viewed first."""
    params = {"org": org, "user_id": user_id, "limit": limit}
    return list(connection.execute(RECENT_DASHBOARDS, params))


def most_viewed_all_time(connection: Connection, org: str, limit: int) -> list[Row[Any]]:
    """Dashboards of the org by total views."""
    return list(connection.execute(MOST_VIEWED, {"org": org, "limit": limit}))


WINDOW_START = text(
    """
    WITH bounds AS (
        SELECT now() - make_interval(days => :days) AS since
    ), snapshot AS (
        SELECT (since AT TIME ZONE 'UTC')::date - 1 AS day FROM bounds
    ), marker AS (
        INSERT INTO total_snapshots (org, day)
        SELECT :org, day FROM snapshot
        ON CONFLICT DO NOTHING
        RETURNING day
    ), filled AS (
        -- First use of this day: each dashboard's running total at its end, looked up once.
        INSERT INTO dashboard_day_totals (org, day, dashboard_id, total_views)
        SELECT :org, marker.day, t.dashboard_id, earlier.total_views
        FROM marker
        JOIN dashboard_totals AS t ON t.org = :org
        JOIN LATERAL (
            SELECT d.total_views FROM dashboard_daily_views AS d
            WHERE d.org = :org AND d.dashboard_id = t.dashboard_id AND d.day <= marker.day
            ORDER BY d.day DESC LIMIT 1
        ) AS earlier ON true
        RETURNING 1
    )
    SELECT bounds.since, snapshot.day FROM bounds, snapshot
    """
)

MOST_VIEWED_SINCE = text(
    """
    WITH before_window AS (
        -- Views of the window's first day that came before the window (raw entries, < 1 day).
        SELECT e.target_id AS dashboard_id, count(*) AS views
        FROM audit_entries AS e
        WHERE e.org = :org AND e.type = 'dashboard' AND e.action = 'view'
          AND e.created_at >= date_trunc('day', CAST(:since AS timestamptz))
          AND e.created_at < :since
        GROUP BY e.target_id
    ), in_window AS (
        -- Views in the window = all views - the total at the end of the day before the
        -- window's first day - that first day's views before the window.
        SELECT t.dashboard_id, t.name, t.last_viewed_at,
               t.view_count - coalesce(s.total_views, 0) - coalesce(b.views, 0) AS view_count
        FROM dashboard_totals AS t
        LEFT JOIN dashboard_day_totals AS s
               ON s.org = :org AND s.day = :snapshot_day AND s.dashboard_id = t.dashboard_id
        LEFT JOIN before_window AS b ON b.dashboard_id = t.dashboard_id
        WHERE t.org = :org AND t.last_viewed_at >= :since
    ), top AS (
        SELECT * FROM in_window
        ORDER BY view_count DESC, last_viewed_at DESC, dashboard_id
        LIMIT :limit
    )
    SELECT top.dashboard_id, top.name, top.view_count,
           -- A user viewed it in the window iff their last view is in it: those whose last
           -- view is on a later day, plus those whose last view is on the first day, after
           -- the window start.
           (SELECT coalesce(sum(d.last_viewers), 0) FROM dashboard_daily_views AS d
            WHERE d.org = :org AND d.dashboard_id = top.dashboard_id
              AND d.day > CAST(:snapshot_day AS date) + 1)
           + (SELECT count(*) FROM view_logs AS v
              WHERE v.org = :org AND v.dashboard_id = top.dashboard_id
                AND v.last_viewed_at >= :since
                AND v.last_viewed_at < date_trunc('day', CAST(:since AS timestamptz))
                                       + interval '1 day') AS unique_viewers,
           top.last_viewed_at
    FROM top
    ORDER BY top.view_count DESC, top.last_viewed_at DESC, top.dashboard_id
    """
)


def most_viewed_recently(connection: Connection, org: str, limit: int, days: int) -> list[Row[Any]]:
    """Dashboards by views in the last ``days`` x 24 h.

    The running totals at the end of each past day never change, so the first request that
    needs a day stores them (``dashboard_day_totals``); every later one reads them back.
    """
    since, snapshot_day = connection.execute(WINDOW_START, {"org": org, "days": days}).one()
    params = {"org": org, "limit": limit, "since": since, "snapshot_day": snapshot_day}
    return list(connection.execute(MOST_VIEWED_SINCE, params))


DASHBOARD_STATS = text(
    """
    WITH bounds AS (
        SELECT date_trunc('day', now()) - make_interval(days => :days - 1) AS first_day
    ), days AS (
        -- Every UTC day of the period, zero days too (pk_dashboard_daily_views).
        SELECT series.day_start, coalesce(d.views, 0) AS views,
               coalesce(d.unique_viewers, 0) AS viewers,
               coalesce(d.last_viewers, 0) AS last_viewers
        FROM bounds,
             generate_series(bounds.first_day, date_trunc('day', now()), interval '1 day')
                 AS series(day_start)
        LEFT JOIN dashboard_daily_views AS d
               ON d.org = :org AND d.dashboard_id = :dashboard_id
              AND d.day = series.day_start::date
    ), top AS (
        -- All-time heaviest viewers (ix_view_logs_top_viewers).
        SELECT user_id, user_email, view_count, last_viewed_at
        FROM view_logs
        WHERE org = :org AND dashboard_id = :dashboard_id
        ORDER BY view_count DESC, last_viewed_at DESC, user_id
        LIMIT :top
    )
    SELECT now() AS request_time, bounds.first_day,
           t.name, coalesce(t.view_count, 0) AS view_count,
           coalesce(t.unique_viewers, 0) AS unique_viewers,
           t.first_viewed_at, t.last_viewed_at,
           (SELECT array_agg(day_start::date ORDER BY day_start) FROM days) AS days,
           (SELECT array_agg(views ORDER BY day_start) FROM days) AS day_views,
           (SELECT array_agg(viewers ORDER BY day_start) FROM days) AS day_viewers,
           -- A user viewed it in the period iff their latest view is on one of its days.
           (SELECT sum(last_viewers) FROM days) AS period_viewers,
           (SELECT array_agg(ARRAY[user_id, user_email]
                             ORDER BY view_count DESC, last_viewed_at DESC, user_id)
            FROM top) AS top_users,
           (SELECT array_agg(view_count ORDER BY view_count DESC, last_viewed_at DESC, user_id)
            FROM top) AS top_counts,
           (SELECT array_agg(last_viewed_at
                             ORDER BY view_count DESC, last_viewed_at DESC, user_id)
            FROM top) AS top_last_viewed
    FROM bounds
    LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = :dashboard_id
    """
)


def dashboard_stats(
    connection: Connection, org: str, dashboard_id: uuid.UUID, days: int
) -> Row[Any]:
    """Totals, the period's days and the top viewers of one dashboard, in one round trip."""
    params = {"org": org, "dashboard_id": dashboard_id, "days": days, "top": TOP_VIEWERS}
    return connection.execute(DASHBOARD_STATS, params).one()
