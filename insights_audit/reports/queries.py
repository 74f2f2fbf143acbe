"""SQL of the usage report: views of an org in a period, from its view entries, in one
statement (``REPORT``) whose lists come out as the JSON the API sends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Text, column, literal_column, table, text

from insights_audit.db.json_sql import (
    api_timestamp,
    csv_cell,
    joined,
    json_number,
    json_object,
    json_rows,
    json_string,
    json_time,
    json_value,
    quoted,
    sql_piece,
    sql_text,
)
from insights_audit.models import TimestampTZ, is_view

# Each list's item, fields in the order of the response schemas (``reports.schemas``).
DAY_JSON = json_object(
    {
        "date": json_string(sql_piece("to_char(day, 'YYYY-MM-DD')")),
        "views": json_number(sql_piece("views")),
        "uniqueViewers": json_number(sql_piece("unique_viewers")),
    }
)
DASHBOARD_JSON = json_object(
    {
        "dashboardId": json_string(sql_piece("dashboard_id")),
        "name": json_value(sql_piece("name")),
        "views": json_number(sql_piece("views")),
        "uniqueViewers": json_number(sql_piece("unique_viewers")),
        "firstViewedAt": json_time("first_viewed_at"),
        "lastViewedAt": json_time("last_viewed_at"),
    }
)
USER_JSON = json_object(
    {
        "userId": json_value(sql_piece("user_id")),
        "userEmail": json_value(sql_piece("user_email")),
        "views": json_number(sql_piece("views")),
        "dashboards": json_number(sql_piece("dashboards")),
        "lastViewedAt": json_time("last_viewed_at"),
    }
)
STALE_JSON = json_object(
    {
        "dashboardId": json_string(sql_piece("dashboard_id")),
        "name": json_value(sql_piece("name")),
        "lastViewedAt": json_time("last_viewed_at"),
    }
)

_listed = table(
    "boards",
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
            quoted(literal_column("CAST(dashboard_id AS text)", Text)),
            csv_cell(_listed.c.name),
            quoted(literal_column("CAST(views AS text)", Text)),
            quoted(literal_column("CAST(unique_viewers AS text)", Text)),
            _time_cell(_listed.c.first_viewed_at),
            _time_cell(_listed.c.last_viewed_at),
        ],
        ",",
    )
).replace("boards.", "")
CSV_HEADER = "dashboardId,name,views,uniqueViewers,firstViewedAt,lastViewedAt"
DASHBOARDS_ORDER = "views DESC, dashboard_id"
# Each list as the SQL of its JSON array, over the CTE of the report that holds its rows.
DAILY_VIEWS = sql_text(json_rows(DAY_JSON, "day", "daily"))
DASHBOARDS = sql_text(json_rows(DASHBOARD_JSON, DASHBOARDS_ORDER, "boards"))
USERS = sql_text(json_rows(USER_JSON, "views DESC, user_id", "users"))
STALE_DASHBOARDS = sql_text(
    json_rows(STALE_JSON, "last_viewed_at ASC NULLS FIRST, dashboard_id", "stale")
)

# The whole report in one statement: the period's view entries are counted per dashboard and
# viewer (``pairs``: ix_audit_entries_views_by_time alone) and per day and viewer, with hash
# aggregates only (a count of distinct values would sort the period's views once per count);
# dashboards and viewers are counted from the pairs, and each viewer's e-mail is looked up
# among their newest entries (one index probe a viewer, not a second read of every view).
# Every list comes out as the JSON the API sends, and the dashboards also as CSV lines.
REPORT = text(
    f"""
    WITH views AS NOT MATERIALIZED (
        SELECT e.id, e.target_id AS dashboard_id, e.user_id, e.user_email, e.created_at
        FROM audit_entries AS e
        WHERE e.org = :org AND {is_view("e")}
          AND e.created_at >= :since AND e.created_at < :until
    ), pairs AS MATERIALIZED (
        SELECT dashboard_id, user_id, count(*) AS views,
               min(created_at) AS first_viewed_at, max(created_at) AS last_viewed_at
        FROM views
        GROUP BY dashboard_id, user_id
    ), counted AS (
        SELECT dashboard_id, sum(views) AS views, count(*) AS unique_viewers,
               min(first_viewed_at) AS first_viewed_at, max(last_viewed_at) AS last_viewed_at
        FROM pairs
        GROUP BY dashboard_id
    ), boards AS MATERIALIZED (
        SELECT c.*, t.name
        FROM counted AS c
        LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = c.dashboard_id
    ), viewers AS MATERIALIZED (
        SELECT user_id, sum(views) AS views, count(*) AS dashboards,
               max(last_viewed_at) AS last_viewed_at
        FROM pairs
        GROUP BY user_id
    ), users AS (
        -- Each viewer's e-mail: that of their latest view in the period that has one (the
        -- greatest id of that moment), found from their newest entries (ix_audit_entries_user).
        SELECT w.user_id, m.user_email, w.views, w.dashboards, w.last_viewed_at
        FROM viewers AS w
        LEFT JOIN LATERAL (
            SELECT e.user_email FROM audit_entries AS e
            WHERE e.org = :org AND e.user_id = w.user_id AND {is_view("e")}
              AND e.user_email IS NOT NULL
              AND e.created_at >= :since AND e.created_at < :until
            ORDER BY e.created_at DESC, e.id DESC
            LIMIT 1
        ) AS m ON true
    ), user_days AS (
        SELECT CAST(timezone('UTC', created_at) AS date) AS day, user_id, count(*) AS views
        FROM views
        GROUP BY 1, 2
    ), daily AS (
        -- Every UTC day the period touches, zero days included.
        SELECT CAST(series.day AS date) AS day, coalesce(sum(u.views), 0) AS views,
               count(u.user_id) AS unique_viewers
        FROM generate_series(
            CAST(timezone('UTC', CAST(:since AS timestamptz)) AS date),
            CAST(timezone('UTC', CAST(:until AS timestamptz) - interval '1 microsecond') AS date),
            interval '1 day'
        ) AS series(day)
        LEFT JOIN user_days AS u ON u.day = CAST(series.day AS date)
        GROUP BY series.day
    ), stale AS (
        -- Known dashboards with no view in the period; their last view before its end (the
        -- running total's when it is earlier, else the trail's: ix_audit_entries_trail).
        SELECT t.dashboard_id, t.name,
               CASE WHEN t.last_viewed_at < :until THEN t.last_viewed_at
                    ELSE (SELECT max(e.created_at) FROM audit_entries AS e
                          WHERE e.org = :org AND {is_view("e")}
                            AND e.target_id = t.dashboard_id
                            AND e.created_at < :until)
               END AS last_viewed_at
        FROM dashboard_totals AS t
        WHERE t.org = :org
          AND NOT EXISTS (SELECT 1 FROM boards AS b WHERE b.dashboard_id = t.dashboard_id)
    )
    SELECT (SELECT coalesce(sum(views), 0) FROM boards) AS views,
           (SELECT count(*) FROM viewers) AS unique_viewers,
           (SELECT count(*) FROM boards) AS active_dashboards,
           {DAILY_VIEWS} AS daily_views,
           {DASHBOARDS} AS dashboards,
           (SELECT string_agg({CSV_LINE} || E'\r\n', '' ORDER BY {DASHBOARDS_ORDER})
            FROM boards) AS csv_lines,
           {USERS} AS users,
           {STALE_DASHBOARDS} AS stale_dashboards
    """
)


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime
    views: int
    unique_viewers: int
    active_dashboards: int
    # Each list as the JSON array the API sends.
    daily_views: str
    dashboards: str
    users: str
    stale_dashboards: str
    # The dashboards table as CSV lines (each ending in CRLF), in the same order.
    csv_lines: str


def now(connection: Connection) -> datetime:
    """The database's clock (the transaction's start), which views are recorded by."""
    moment: datetime = connection.execute(text("SELECT now()")).scalar_one()
    return moment


# Memory for each of the report's hash tables (PostgreSQL's default, 4 MB, spills a 30-day
# report of a busy org to disk): a larger period still spills, and is correct, only slower.
REPORT_WORK_MEM = text("SET LOCAL work_mem = '64MB'")


def usage_report(connection: Connection, org: str, since: datetime, until: datetime) -> UsageReport:
    """The org's views in [since, until), read in the connection's transaction."""
    connection.execute(REPORT_WORK_MEM)
    row = connection.execute(REPORT, {"org": org, "since": since, "until": until}).one()
    return UsageReport(
        since,
        until,
        int(row.views),
        row.unique_viewers,
        row.active_dashboards,
        row.daily_views,
        row.dashboards,
        row.users,
        row.stale_dashboards,
        row.csv_lines or "",
    )
