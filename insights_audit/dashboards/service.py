"""Dashboard reads."""

from __future__ import annotations

import uuid
from typing import Any

from insights_audit.auth import Principal
from insights_audit.dashboards import queries
from insights_audit.extensions import connection


def recently_viewed(principal: Principal, limit: int) -> list[Any]:
    return queries.recent_dashboards_for(connection(), principal.org, principal.user_id, limit)


def most_viewed(principal: Principal, limit: int, days: int | None) -> list[Any]:
    if days is None:
        return queries.most_viewed_all_time(connection(), principal.org, limit)
    return queries.most_viewed_recently(connection(), principal.org, limit, days)


def dashboard_stats(principal: Principal, dashboard_id: uuid.UUID, days: int) -> dict[str, Any]:
    """Totals, a zero-filled daily series of ``days`` UTC days and the top viewers."""
    # Read committed: each read sees the latest commits, as one transaction would.
    totals = queries.dashboard_totals(connection(), principal.org, dashboard_id)
    daily = queries.daily_views(connection(), principal.org, dashboard_id, days)
    viewers = queries.top_viewers(connection(), principal.org, dashboard_id)
    first_day = daily[0]
    return {
        "dashboardId": dashboard_id,
        "name": totals.name if totals else None,
        "totalViews": totals.view_count if totals else 0,
        "uniqueViewers": totals.unique_viewers if totals else 0,
        "firstViewedAt": totals.first_viewed_at if totals else None,
        "lastViewedAt": totals.last_viewed_at if totals else None,
        "period": {
            "days": days,
            "from": first_day.day_start,
            "to": first_day.request_time,
            "views": sum(row.views for row in daily),
            "uniqueViewers": first_day.period_viewers,
        },
        "dailyViews": [
            {"date": row.day, "views": row.views, "uniqueViewers": row.viewers} for row in daily
        ],
        "topViewers": viewers,
    }
