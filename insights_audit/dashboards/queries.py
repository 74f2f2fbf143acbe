"""SQL of dashboard views: recording one, and the recent / popular / stats reads."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, case, func, literal, select, text, true
from sqlalchemy.dialects.postgresql import insert

from insights_audit.models import AuditEntry, DashboardTotal, ViewLog
from insights_audit.trail.queries import Actor, RequestMeta, entry_insert

TOP_VIEWERS = 10


def record_view(
    connection: Connection,
    actor: Actor,
    dashboard_id: uuid.UUID,
    name: str | None,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Row[Any]:
    """Append the view entry and bump the viewer's and the org's counters in one statement.

    Row locks are taken in one order (the viewer's row, then the dashboard's), so concurrent
    views neither deadlock nor lose counts; ``view_count = 1`` after the upsert marks a new viewer.
    """
    now = func.now()
    entry = entry_insert(actor, "dashboard", "view", dashboard_id, details, meta).cte("entry")

    viewer_insert = insert(ViewLog).values(
        org=actor.org,
        user_id=actor.user_id,
        dashboard_id=dashboard_id,
        user_email=actor.user_email,
        view_count=1,
        first_viewed_at=now,
        last_viewed_at=now,
    )
    viewer = (
        viewer_insert.on_conflict_do_update(
            index_elements=[ViewLog.org, ViewLog.user_id, ViewLog.dashboard_id],
            set_={
                "view_count": ViewLog.view_count + 1,
                "last_viewed_at": viewer_insert.excluded.last_viewed_at,
                "user_email": func.coalesce(viewer_insert.excluded.user_email, ViewLog.user_email),
            },
        )
        .returning(ViewLog.view_count)
        .cte("viewer")
    )

    totals_insert = insert(DashboardTotal).from_select(
        [
            "org",
            "dashboard_id",
            "name",
            "view_count",
            "unique_viewers",
            "first_viewed_at",
            "last_viewed_at",
        ],
        select(
            literal(actor.org),
            literal(dashboard_id),
            literal(name),
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
                "first_viewed_at": func.coalesce(
                    DashboardTotal.first_viewed_at, totals_insert.excluded.first_viewed_at
                ),
                "last_viewed_at": totals_insert.excluded.last_viewed_at,
                "name": func.coalesce(totals_insert.excluded.name, DashboardTotal.name),
            },
        )
        .returning(DashboardTotal.view_count)
        .cte("totals")
    )

    # Each CTE yields exactly one row: the cross join just puts them side by side.
    query = select(
        entry,
        viewer.c.view_count.label("viewer_count"),
        totals.c.view_count.label("total_count"),
    ).select_from(entry.join(viewer, true()).join(totals, true()))
    return connection.execute(query).one()


def remember_dashboard_name(
    connection: Connection, org: str, dashboard_id: uuid.UUID, name: str
) -> None:
    """Keep ``name`` as the dashboard's last known name without counting a view."""
    upsert = insert(DashboardTotal).values(org=org, dashboard_id=dashboard_id, name=name)
    connection.execute(
        upsert.on_conflict_do_update(
            index_elements=[DashboardTotal.org, DashboardTotal.dashboard_id],
            set_={"name": upsert.excluded.name},
        )
    )


def recent_dashboards_for(
    connection: Connection, org: str, user_id: str, limit: int
) -> list[Row[Any]]:
    """The user's dashboards, last viewed first (ix_view_logs_recent)."""
    query = (
        select(
            ViewLog.dashboard_id,
            DashboardTotal.name,
            ViewLog.view_count,
            ViewLog.first_viewed_at,
            ViewLog.last_viewed_at,
        )
        .outerjoin(
            DashboardTotal,
            (DashboardTotal.org == ViewLog.org)
            & (DashboardTotal.dashboard_id == ViewLog.dashboard_id),
        )
        .where(ViewLog.org == org, ViewLog.user_id == user_id)
        .order_by(ViewLog.last_viewed_at.desc(), ViewLog.dashboard_id)
        .limit(limit)
    )
    return list(connection.execute(query))


def most_viewed_all_time(connection: Connection, org: str, limit: int) -> list[Row[Any]]:
    """Dashboards of the org by total views (ix_dashboard_totals_popular)."""
    query = (
        select(
            DashboardTotal.dashboard_id,
            DashboardTotal.name,
            DashboardTotal.view_count,
            DashboardTotal.unique_viewers,
            DashboardTotal.last_viewed_at,
        )
        .where(DashboardTotal.org == org, DashboardTotal.view_count > 0)
        .order_by(
            DashboardTotal.view_count.desc(),
            DashboardTotal.last_viewed_at.desc(),
            DashboardTotal.dashboard_id,
        )
        .limit(limit)
    )
    return list(connection.execute(query))


def most_viewed_recently(connection: Connection, org: str, limit: int, days: int) -> list[Row[Any]]:
    """Dashboards by views in the last ``days`` x 24 h (ix_audit_entries_views_by_time)."""
    window = (
        select(
            AuditEntry.target_id.label("dashboard_id"),
            func.count().label("view_count"),
            func.count(AuditEntry.user_id.distinct()).label("unique_viewers"),
            func.max(AuditEntry.created_at).label("last_viewed_at"),
        )
        .where(
            AuditEntry.org == org,
            AuditEntry.type == "dashboard",
            AuditEntry.action == "view",
            AuditEntry.created_at >= func.now() - func.make_interval(0, 0, 0, days),
        )
        .group_by(AuditEntry.target_id)
        .subquery("window")
    )
    query = (
        select(
            window.c.dashboard_id,
            DashboardTotal.name,
            window.c.view_count,
            window.c.unique_viewers,
            window.c.last_viewed_at,
        )
        .outerjoin(
            DashboardTotal,
            (DashboardTotal.org == org) & (DashboardTotal.dashboard_id == window.c.dashboard_id),
        )
        .order_by(window.c.view_count.desc(), window.c.last_viewed_at.desc(), window.c.dashboard_id)
        .limit(limit)
    )
    return list(connection.execute(query))


def dashboard_totals(
    connection: Connection, org: str, dashboard_id: uuid.UUID
) -> Row[str | None, int, int, datetime | None, datetime | None] | None:
    """All-time totals and last known name of one dashboard, if it was ever seen."""
    query = select(
        DashboardTotal.name,
        DashboardTotal.view_count,
        DashboardTotal.unique_viewers,
        DashboardTotal.first_viewed_at,
        DashboardTotal.last_viewed_at,
    ).where(DashboardTotal.org == org, DashboardTotal.dashboard_id == dashboard_id)
    return connection.execute(query).one_or_none()


DAILY_VIEWS = text(
    """
    WITH views AS (
        SELECT created_at, user_id
        FROM audit_entries
        WHERE org = :org AND target_id = :dashboard_id
          AND type = 'dashboard' AND action = 'view'
          AND created_at >= date_trunc('day', now()) - make_interval(days => :days - 1)
    ), per_day AS (
        SELECT date_trunc('day', created_at) AS day, count(*) AS views,
               count(DISTINCT user_id) AS viewers
        FROM views GROUP BY 1
    )
    SELECT day AS day_start, day::date AS day, coalesce(per_day.views, 0) AS views,
           coalesce(per_day.viewers, 0) AS viewers,
           (SELECT count(DISTINCT user_id) FROM views) AS period_viewers,
           now() AS request_time
    FROM generate_series(
        date_trunc('day', now()) - make_interval(days => :days - 1),
        date_trunc('day', now()),
        interval '1 day'
    ) AS day
    LEFT JOIN per_day USING (day)
    ORDER BY day
    """
)


def daily_views(
    connection: Connection, org: str, dashboard_id: uuid.UUID, days: int
) -> list[Row[Any]]:
    """One row per UTC day of the window, zero days too (ix_audit_entries_views_by_dashboard)."""
    return list(
        connection.execute(DAILY_VIEWS, {"org": org, "dashboard_id": dashboard_id, "days": days})
    )


def top_viewers(connection: Connection, org: str, dashboard_id: uuid.UUID) -> list[Row[Any]]:
    """All-time heaviest viewers of one dashboard (ix_view_logs_top_viewers)."""
    query = (
        select(ViewLog.user_id, ViewLog.user_email, ViewLog.view_count, ViewLog.last_viewed_at)
        .where(ViewLog.org == org, ViewLog.dashboard_id == dashboard_id)
        .order_by(ViewLog.view_count.desc(), ViewLog.last_viewed_at.desc(), ViewLog.user_id)
        .limit(TOP_VIEWERS)
    )
    return list(connection.execute(query))
