"""SQL of the dashboard reads: recently viewed, most viewed, usage stats (recording a view is
``view_counts``)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Text,
    bindparam,
    column,
    func,
    literal_column,
    select,
    table,
    text,
)
from sqlalchemy.dialects.postgresql import UUID, aggregate_order_by

from insights_audit.audit.window_counts import (
    corrections,
    kept_window,
    mark_asked,
    viewers_in_window,
)
from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.json_sql import (
    api_timestamp,
    constant,
    json_array,
    json_items,
    json_list,
    json_number,
    json_object,
    json_rows,
    json_string,
    json_time,
    json_value,
    sql_piece,
    sql_text,
)
from insights_audit.db.replicas import on_replica
from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.models import DashboardTotal, TimestampTZ, ViewLog

TOP_VIEWERS = 10
# The heaviest viewers first (ix_view_logs_top_viewers), as the stats list them.
TOP_VIEWERS_ORDER = "view_count DESC, last_viewed_at DESC, user_id"


# "Recently viewed" of one user (ix_view_logs_recent), as the JSON array the API sends.
RECENT_ORDER = (ViewLog.last_viewed_at.desc(), ViewLog.dashboard_id)
RECENT_DASHBOARD = json_object(
    {
        "dashboardId": json_string(ViewLog.dashboard_id),
        "name": json_value(DashboardTotal.name),
        "viewCount": json_number(ViewLog.view_count),
        "firstViewedAt": json_string(api_timestamp(ViewLog.first_viewed_at)),
        "lastViewedAt": json_string(api_timestamp(ViewLog.last_viewed_at)),
    }
)
RECENT_DASHBOARDS = DriverStatement(
    json_array(
        select(*json_items(RECENT_DASHBOARD, RECENT_ORDER))
        .select_from(ViewLog)
        .outerjoin(
            DashboardTotal,
            (DashboardTotal.org == ViewLog.org)
            & (DashboardTotal.dashboard_id == ViewLog.dashboard_id),
        )
        .where(ViewLog.org == bindparam("org"), ViewLog.user_id == bindparam("user_id"))
        .order_by(*RECENT_ORDER)
        .limit(bindparam("limit"))
    )
)


def popular_dashboard(rows: Any) -> ColumnElement[str]:
    """A most-viewed dashboard as the API sends it, from ``rows`` (columns named as those
    of ``dashboard_totals``)."""
    return json_object(
        {
            "dashboardId": json_string(rows.dashboard_id),
            "name": json_value(rows.name),
            "viewCount": json_number(rows.view_count),
            "uniqueViewers": json_number(rows.unique_viewers),
            "lastViewedAt": json_string(api_timestamp(rows.last_viewed_at)),
        }
    )


def popular_order(views: Any, last_viewed_at: Any, dashboard_id: Any) -> tuple[Any, ...]:
    """The one order of "most viewed": views descending, then the most recently viewed, then
    the id."""
    return (views.desc(), last_viewed_at.desc(), dashboard_id)


def popular_order_sql(views: str, last_viewed_at: str, dashboard_id: str) -> str:
    """``popular_order`` of the named columns, as SQL text for an ORDER BY."""
    columns: tuple[Any, ...] = tuple(map(literal_column, (views, last_viewed_at, dashboard_id)))
    return ", ".join(sql_text(key) for key in popular_order(*columns))


# All-time "most viewed" of an org (ix_dashboard_totals_popular).
POPULAR_ORDER = popular_order(
    DashboardTotal.view_count, DashboardTotal.last_viewed_at, DashboardTotal.dashboard_id
)
MOST_VIEWED = DriverStatement(
    json_array(
        select(*json_items(popular_dashboard(DashboardTotal), POPULAR_ORDER))
        .where(DashboardTotal.org == bindparam("org"), DashboardTotal.view_count > 0)
        .order_by(*POPULAR_ORDER)
        .limit(bindparam("limit"))
    )
)


def recent_dashboards_for(work: UnitOfWork, user_id: str, limit: int) -> str:
    """The user's dashboards, last viewed first, as a JSON array."""
    params = {"org": work.org, "user_id": user_id, "limit": limit}
    return _text(work.value(RECENT_DASHBOARDS, params))


def most_viewed_all_time(work: UnitOfWork, limit: int) -> str:
    """Dashboards of the org by total views, as a JSON array."""
    return _text(work.value(MOST_VIEWED, {"org": work.org, "limit": limit}))


def _text(answer: Any) -> str:
    # Each of these statements writes its answer as one JSON document (text), never NULL.
    assert isinstance(answer, str)
    return answer


# The top of the window from its kept counts, exact now (``window_counts.corrections``): only
# dashboards with views since the counts were kept, or views that slid out of the window since,
# change; the others keep their kept order, so the top :limit of them plus the changed ones
# hold the top :limit.
def _listed_dashboards() -> str:
    """The JSON array of the ``listed`` rows below, most viewed first, as SQL text."""
    listed = table(
        "listed",
        column("dashboard_id", UUID(as_uuid=True)),
        column("name", Text),
        column("view_count", BigInteger),
        column("unique_viewers", BigInteger),
        column("last_viewed_at", TimestampTZ),
    )
    order = popular_order(listed.c.view_count, listed.c.last_viewed_at, listed.c.dashboard_id)
    items = func.string_agg(popular_dashboard(listed.c), aggregate_order_by(constant(","), *order))
    return sql_text(json_list(items))


MOST_VIEWED_KEPT_SQL = f"""
    WITH MARK_ASKED {corrections()}, changed AS (
        SELECT dashboard_id FROM added UNION SELECT dashboard_id FROM slid_out
    ), candidates AS (
        (SELECT w.dashboard_id, w.views
         FROM window_counts AS w
         WHERE w.org = :org AND w.days = :days
           AND w.dashboard_id NOT IN (SELECT dashboard_id FROM changed)
         ORDER BY {popular_order_sql("w.views", "w.last_viewed_at", "w.dashboard_id")}
         LIMIT :limit)
        UNION ALL
        SELECT c.dashboard_id,
               coalesce(w.views, 0) + coalesce(a.views, 0) - coalesce(s.views, 0)
        FROM changed AS c
        LEFT JOIN window_counts AS w
               ON w.org = :org AND w.days = :days AND w.dashboard_id = c.dashboard_id
        LEFT JOIN added AS a ON a.dashboard_id = c.dashboard_id
        LEFT JOIN slid_out AS s ON s.dashboard_id = c.dashboard_id
    ), top AS (
        SELECT c.dashboard_id, t.name, t.last_viewed_at, c.views AS view_count
        FROM candidates AS c
        JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = c.dashboard_id
        WHERE c.views > 0
        ORDER BY {popular_order_sql("c.views", "t.last_viewed_at", "c.dashboard_id")}
        LIMIT :limit
    ), listed AS (
        SELECT top.dashboard_id, top.name, top.view_count,
               {viewers_in_window("top.dashboard_id")} AS unique_viewers,
               top.last_viewed_at
        FROM top
    )
    SELECT LISTED_DASHBOARDS FROM listed
    """.replace("LISTED_DASHBOARDS", _listed_dashboards())
MOST_VIEWED_KEPT = DriverStatement(
    text(MOST_VIEWED_KEPT_SQL.replace("MARK_ASKED", mark_asked(":days")))
)
MOST_VIEWED_KEPT_ON_REPLICA = DriverStatement(text(MOST_VIEWED_KEPT_SQL.replace("MARK_ASKED", "")))


def most_viewed_recently(connection: Connection, org: str, limit: int, days: int) -> str:
    """Dashboards by views in the last ``days`` x 24 h, as a JSON array.

    The running totals at the end of each past day never change, so the first request that
    needs a day stores them (``dashboard_day_totals``); every later one reads them back. The
    window's counts of every dashboard are kept (``window_counts``, recounted by the first
    request and then by the background worker), and each request corrects them to the
    moment (``MOST_VIEWED_KEPT``).
    """
    window = kept_window(connection, org, days)
    params = {"org": org, "limit": limit, **window.params()}
    statement = MOST_VIEWED_KEPT_ON_REPLICA if on_replica(connection) else MOST_VIEWED_KEPT
    data: str = statement.scalar(connection, params)
    return data


# The stats object, field by field, in the order of the ``DashboardStats`` schema
# (tests/test_field_parity.py holds the two together).
STATS_JSON = json_object(
    {
        "dashboardId": json_string(sql_piece("CAST(:dashboard_id AS uuid)")),
        "name": json_value(sql_piece("t.name")),
        "totalViews": json_number(sql_piece("coalesce(t.view_count, 0)")),
        "uniqueViewers": json_number(sql_piece("coalesce(t.unique_viewers, 0)")),
        "firstViewedAt": json_time("t.first_viewed_at"),
        "lastViewedAt": json_time("t.last_viewed_at"),
        "period": json_object(
            {
                "days": json_number(sql_piece("CAST(:days AS integer)")),
                "from": json_time("bounds.first_day"),
                "to": json_time("now()"),
                "views": json_number(sql_piece("(SELECT sum(views) FROM days)")),
                # A user viewed it in the period iff their latest view is on one of its days.
                "uniqueViewers": json_number(sql_piece("(SELECT sum(last_viewers) FROM days)")),
            }
        ),
        "dailyViews": json_rows(
            json_object(
                {
                    "date": json_string(sql_piece("to_char(day_start::date, 'YYYY-MM-DD')")),
                    "views": json_number(sql_piece("views")),
                    "uniqueViewers": json_number(sql_piece("viewers")),
                }
            ),
            "day_start",
            "days",
        ),
        "topViewers": json_rows(
            json_object(
                {
                    "userId": json_value(sql_piece("user_id")),
                    "userEmail": json_value(sql_piece("user_email")),
                    "viewCount": json_number(sql_piece("view_count")),
                    "lastViewedAt": json_time("last_viewed_at"),
                }
            ),
            TOP_VIEWERS_ORDER,
            "top",
        ),
    }
)

# The stats of one dashboard as the JSON object the API sends.
DASHBOARD_STATS = DriverStatement(
    text(
        f"""
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
        ORDER BY {TOP_VIEWERS_ORDER}
        LIMIT :top
    )
    SELECT {sql_text(STATS_JSON)}
    FROM bounds
    LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = :dashboard_id
    """
    )
)


def dashboard_stats(work: UnitOfWork, dashboard_id: uuid.UUID, days: int) -> str:
    """Totals, the period's days and the top viewers of one dashboard, as a JSON object."""
    params = {"org": work.org, "dashboard_id": dashboard_id, "days": days, "top": TOP_VIEWERS}
    return _text(work.value(DASHBOARD_STATS, params))
