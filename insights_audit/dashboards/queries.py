"""SQL of dashboard views: recording one, and the recent / popular / stats reads."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    Row,
    Select,
    Text,
    bindparam,
    case,
    cast,
    column,
    func,
    literal,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import UUID, Insert, insert

from insights_audit.models import DashboardDailyViews, DashboardTotal, Key, ViewLog
from insights_audit.trail.queries import ENTRY_INSERT, Actor, RequestMeta, entry_params

TOP_VIEWERS = 10


def newer_name(excluded: Any) -> dict[str, Any]:
    """Take the reported name unless a name reported at a later time is already kept."""
    newer = (excluded.name.isnot(None)) & (
        DashboardTotal.name_reported_at.is_(None)
        | (excluded.name_reported_at >= DashboardTotal.name_reported_at)
    )
    return {
        "name": case((newer, excluded.name), else_=DashboardTotal.name),
        "name_reported_at": case(
            (newer, excluded.name_reported_at), else_=DashboardTotal.name_reported_at
        ),
    }


def record_view(
    connection: Connection,
    actor: Actor,
    dashboard_id: uuid.UUID,
    name: str | None,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Row[Any]:
    """Record one view: the entry, the counters; the entry's columns and both new counts."""
    params = entry_params(actor, "dashboard", "view", dashboard_id, details, meta)
    return connection.execute(RECORD_VIEW, {**params, "name": name}).one()


def _record_view_statement() -> Select[Any]:
    """Append the view entry and bump every aggregate it implies, in one statement.

    Row locks are taken in one order (the viewer's row, the dashboard's totals, its day), so
    concurrent views neither deadlock nor lose counts. After the viewer's upsert,
    ``view_count = 1`` marks a new viewer of the dashboard, and a previous view before today a
    new viewer of the day, whose latest view moves from that earlier day to today. Built once;
    parameters: ``entry_params`` and ``name``.
    """
    now = func.now()
    today = func.date_trunc("day", now)
    org = bindparam("org", type_=Key)
    dashboard_id = bindparam("target_id", type_=UUID(as_uuid=True))
    name = bindparam("name", type_=Text)
    entry = ENTRY_INSERT.cte("entry")

    viewer_insert = insert(ViewLog).values(
        org=org,
        user_id=bindparam("user_id", type_=Key),
        dashboard_id=dashboard_id,
        user_email=bindparam("user_email", type_=Text),
        view_count=1,
        first_viewed_at=now,
        last_viewed_at=now,
    )
    # Concurrent views can commit out of clock order: keep the two newest view times.
    viewer = (
        viewer_insert.on_conflict_do_update(
            index_elements=[ViewLog.org, ViewLog.user_id, ViewLog.dashboard_id],
            set_={
                "view_count": ViewLog.view_count + 1,
                "first_viewed_at": func.least(ViewLog.first_viewed_at, now),
                "last_viewed_at": func.greatest(ViewLog.last_viewed_at, now),
                "previous_viewed_at": case(
                    (now >= ViewLog.last_viewed_at, ViewLog.last_viewed_at),
                    else_=func.greatest(ViewLog.previous_viewed_at, now),
                ),
                "user_email": func.coalesce(viewer_insert.excluded.user_email, ViewLog.user_email),
            },
        )
        .returning(ViewLog.view_count, ViewLog.last_viewed_at, ViewLog.previous_viewed_at)
        .cte("viewer")
    )

    totals_insert = insert(DashboardTotal).from_select(
        [
            "org",
            "dashboard_id",
            "name",
            "name_reported_at",
            "view_count",
            "unique_viewers",
            "first_viewed_at",
            "last_viewed_at",
        ],
        select(
            org,
            dashboard_id,
            name,
            case((name.isnot(None), now)),
            literal(1),
            case((viewer.c.view_count == 1, 1), else_=0),
            now,
            now,
        ),
    )
    totals = (
        totals_insert.on_conflict_do_update(
            index_elements=[DashboardTotal.org, DashboardTotal.dashboard_id],
            set_={
                "view_count": DashboardTotal.view_count + 1,
                "unique_viewers": DashboardTotal.unique_viewers
                + totals_insert.excluded.unique_viewers,
                "first_viewed_at": func.least(DashboardTotal.first_viewed_at, now),
                "last_viewed_at": func.greatest(DashboardTotal.last_viewed_at, now),
                **newer_name(totals_insert.excluded),
            },
        )
        .returning(DashboardTotal.view_count)
        .cte("totals")
    )
    total_views = totals.c.view_count

    # This view is the user's first of the day unless an earlier one today is already counted;
    # then the user's last view also moves from ``previous_viewed_at``'s day to today.
    def first_view_today() -> ColumnElement[int]:
        is_first = (viewer.c.last_viewed_at == now) & func.coalesce(
            viewer.c.previous_viewed_at < today, True
        )
        return case((is_first, 1), else_=0)

    daily_insert = insert(DashboardDailyViews).from_select(
        ["org", "dashboard_id", "day", "views", "unique_viewers", "last_viewers", "total_views"],
        # Reading ``totals`` orders this upsert after the totals row is locked, so the running
        # total it records is the latest.
        select(
            org,
            dashboard_id,
            cast(now, Date),
            literal(1),
            first_view_today(),
            first_view_today(),  # a second copy: each expression object appears once
            total_views,
        ).select_from(viewer.join(totals, true())),
    )
    daily = (
        daily_insert.on_conflict_do_update(
            index_elements=[
                DashboardDailyViews.org,
                DashboardDailyViews.dashboard_id,
                DashboardDailyViews.day,
            ],
            set_={
                "views": DashboardDailyViews.views + 1,
                "unique_viewers": DashboardDailyViews.unique_viewers
                + daily_insert.excluded.unique_viewers,
                "last_viewers": DashboardDailyViews.last_viewers
                + daily_insert.excluded.last_viewers,
                "total_views": func.greatest(
                    DashboardDailyViews.total_views, daily_insert.excluded.total_views
                ),
            },
        )
        .returning(DashboardDailyViews.views)
        .cte("daily")
    )
    # The day the user's last view moved away from loses one last viewer. Reading ``daily``
    # orders this after today's row is locked.
    moved = (
        text(
            """
            UPDATE dashboard_daily_views AS d SET last_viewers = d.last_viewers - 1
            FROM viewer, daily
            WHERE d.org = :org AND d.dashboard_id = :target_id
              AND d.day = CAST(viewer.previous_viewed_at AS date)
              AND viewer.last_viewed_at = now()
              AND viewer.previous_viewed_at < date_trunc('day', now())
            RETURNING d.day
            """
        )
        .columns(column("day", Date))
        .cte("moved")
    )

    # Each CTE yields exactly one row (``moved`` at most one): the joins put them side by side.
    return select(
        entry,
        viewer.c.view_count.label("viewer_count"),
        totals.c.view_count.label("total_count"),
    ).select_from(
        entry.join(viewer, true()).join(totals, true()).join(daily, true()).outerjoin(moved, true())
    )


RECORD_VIEW = _record_view_statement()


def dashboard_name_upsert(org: str, dashboard_id: uuid.UUID, name: str) -> Insert:
    """Keep ``name`` as the dashboard's last known name without counting a view."""
    upsert = insert(DashboardTotal).values(
        org=org, dashboard_id=dashboard_id, name=name, name_reported_at=func.now()
    )
    return upsert.on_conflict_do_update(
        index_elements=[DashboardTotal.org, DashboardTotal.dashboard_id],
        set_=newer_name(upsert.excluded),
    )


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
