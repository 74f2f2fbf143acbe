"""Recording a dashboard view: its audit entry and every counter it bumps, in one statement.

Both the view endpoint and ``POST {base}`` (for ``dashboard``/``view``) record views here, and
any entry that reports a dashboard's name keeps it through ``dashboard_name_upsert``.
"""

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

from insights_audit.audit.entries import ENTRY_INSERT, Actor, RequestMeta, entry_params
from insights_audit.db.driver_sql import DriverStatement
from insights_audit.models import DashboardDailyViews, DashboardTotal, Key, ViewLog


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
    return RECORDING.one(connection, {**params, "name": name})


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
RECORDING = DriverStatement(RECORD_VIEW)


def dashboard_name_upsert(org: str, dashboard_id: uuid.UUID, name: str) -> Insert:
    """Keep ``name`` as the dashboard's last known name without counting a view."""
    upsert = insert(DashboardTotal).values(
        org=org, dashboard_id=dashboard_id, name=name, name_reported_at=func.now()
    )
    return upsert.on_conflict_do_update(
        index_elements=[DashboardTotal.org, DashboardTotal.dashboard_id],
        set_=newer_name(upsert.excluded),
    )
