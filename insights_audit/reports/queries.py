"""SQL of the usage report: views of an org in a period, from its view entries.

A report reads the ``dashboard``/``view`` entries of the period through
``ix_audit_entries_views_by_time`` (org, created_at, with target and user included), in one
statement per part, inside one ``REPEATABLE READ`` snapshot so that the parts agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, column, literal_column, table, text

from insights_audit.db.json_sql import api_timestamp, csv_cell, joined, quoted, sql_text
from insights_audit.models import TimestampTZ, is_view

# The period's views.
VIEWS = f"""
    views AS (
        SELECT e.id, e.target_id AS dashboard_id, e.user_id, e.user_email, e.created_at
        FROM audit_entries AS e
        WHERE e.org = :org AND {is_view("e")}
          AND e.created_at >= :since AND e.created_at < :until
    )
"""

TOTALS = text(
    f"""
    WITH {VIEWS}
    SELECT count(*) AS views, count(DISTINCT user_id) AS unique_viewers,
           count(DISTINCT dashboard_id) AS active_dashboards
    FROM views
    """
)

# Every UTC day the period touches, zero days included.
DAILY = text(
    f"""
    WITH {VIEWS}, days AS (
        SELECT CAST(day AS date) AS day
        FROM generate_series(
            CAST(timezone('UTC', CAST(:since AS timestamptz)) AS date),
            CAST(timezone('UTC', CAST(:until AS timestamptz) - interval '1 microsecond') AS date),
            interval '1 day'
        ) AS day
    )
    SELECT days.day, count(views.id) AS views, count(DISTINCT views.user_id) AS unique_viewers
    FROM days
    LEFT JOIN views ON CAST(timezone('UTC', views.created_at) AS date) = days.day
    GROUP BY days.day
    ORDER BY days.day
    """
)

_listed = table(
    "listed",
    column("dashboard_id", Text),
    column("name", Text),
    column("views", Text),
    column("unique_viewers", Text),
    column("first_viewed_at", TimestampTZ),
    column("last_viewed_at", TimestampTZ),
)


def _time_cell(value: Any) -> Any:
    return quoted(api_timestamp(value))


# The dashboards table's CSV line, written by PostgreSQL with the export's cell rules.
CSV_LINE = sql_text(
    joined(
        [
            quoted(literal_column("CAST(listed.dashboard_id AS text)", Text)),
            csv_cell(_listed.c.name),
            quoted(literal_column("CAST(listed.views AS text)", Text)),
            quoted(literal_column("CAST(listed.unique_viewers AS text)", Text)),
            _time_cell(_listed.c.first_viewed_at),
            _time_cell(_listed.c.last_viewed_at),
        ],
        ",",
    )
)
CSV_HEADER = "dashboardId,name,views,uniqueViewers,firstViewedAt,lastViewedAt"

DASHBOARDS = text(
    f"""
    WITH {VIEWS}, listed AS (
        SELECT v.dashboard_id, t.name, count(*) AS views,
               count(DISTINCT v.user_id) AS unique_viewers,
               min(v.created_at) AS first_viewed_at, max(v.created_at) AS last_viewed_at
        FROM views AS v
        LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = v.dashboard_id
        GROUP BY v.dashboard_id, t.name
    )
    SELECT listed.*, {CSV_LINE} AS csv_line
    FROM listed
    ORDER BY listed.views DESC, listed.dashboard_id
    """
)

USERS = text(
    f"""
    WITH {VIEWS}
    SELECT v.user_id,
           (array_agg(v.user_email ORDER BY v.created_at DESC, v.id DESC)
                FILTER (WHERE v.user_email IS NOT NULL))[1] AS user_email,
           count(*) AS views, count(DISTINCT v.dashboard_id) AS dashboards,
           max(v.created_at) AS last_viewed_at
    FROM views AS v
    GROUP BY v.user_id
    ORDER BY views DESC, v.user_id
    """
)

# Known dashboards with no view in the period; their last view before its end (the running
# total's when it is earlier, else the trail's: ix_audit_entries_trail).
STALE = text(
    f"""
    WITH {VIEWS}, stale AS (
        SELECT t.dashboard_id, t.name,
               CASE WHEN t.last_viewed_at < :until THEN t.last_viewed_at
                    ELSE (SELECT max(e.created_at) FROM audit_entries AS e
                          WHERE e.org = :org AND {is_view("e")}
                            AND e.target_id = t.dashboard_id
                            AND e.created_at < :until)
               END AS last_viewed_at
        FROM dashboard_totals AS t
        WHERE t.org = :org
          AND NOT EXISTS (SELECT 1 FROM views AS v WHERE v.dashboard_id = t.dashboard_id)
    )
    SELECT * FROM stale ORDER BY last_viewed_at ASC NULLS FIRST, dashboard_id
    """
)


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime
    views: int
    unique_viewers: int
    active_dashboards: int
    daily_views: list[dict[str, Any]]
    dashboards: list[dict[str, Any]]
    users: list[dict[str, Any]]
    stale_dashboards: list[dict[str, Any]]
    # The dashboards table as CSV lines, in the same order.
    csv_lines: list[str]


def now(connection: Connection) -> datetime:
    """The database's clock (the transaction's start), which views are recorded by."""
    moment: datetime = connection.execute(text("SELECT now()")).scalar_one()
    return moment


# The report's parts, each one statement: ``usage_report`` says when it starts each.
PARTS = ("totals", "days", "dashboards", "users", "stale dashboards")


def usage_report(
    connection: Connection,
    org: str,
    since: datetime,
    until: datetime,
    starting: Callable[[str], None] = lambda _: None,
) -> UsageReport:
    """The org's views in [since, until), read in the connection's transaction; ``starting``
    hears the name of each part (``PARTS``) as it begins."""
    params = {"org": org, "since": since, "until": until}
    starting(PARTS[0])
    totals = connection.execute(TOTALS, params).one()
    starting(PARTS[1])
    daily = [
        {"date": row.day, "views": row.views, "uniqueViewers": row.unique_viewers}
        for row in connection.execute(DAILY, params)
    ]
    starting(PARTS[2])
    dashboards, lines = [], []
    for row in connection.execute(DASHBOARDS, params):
        dashboards.append(
            {
                "dashboardId": row.dashboard_id,
                "name": row.name,
                "views": row.views,
                "uniqueViewers": row.unique_viewers,
                "firstViewedAt": row.first_viewed_at,
                "lastViewedAt": row.last_viewed_at,
            }
        )
        lines.append(row.csv_line)
    starting(PARTS[3])
    users = [
        {
            "userId": row.user_id,
            "userEmail": row.user_email,
            "views": row.views,
            "dashboards": row.dashboards,
            "lastViewedAt": row.last_viewed_at,
        }
        for row in connection.execute(USERS, params)
    ]
    starting(PARTS[4])
    stale = [
        {"dashboardId": row.dashboard_id, "name": row.name, "lastViewedAt": row.last_viewed_at}
        for row in connection.execute(STALE, params)
    ]
    return UsageReport(
        since,
        until,
        totals.views,
        totals.unique_viewers,
        totals.active_dashboards,
        daily,
        dashboards,
        users,
        stale,
        lines,
    )
