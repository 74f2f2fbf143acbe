"""Dashboard reads, each in the request's unit of work."""

from __future__ import annotations

import uuid
from typing import Any

from insights_audit.auth import Principal
from insights_audit.dashboards import queries
from insights_audit.unit_of_work import request_work


def recently_viewed(principal: Principal, limit: int) -> str:
    """The caller's dashboards, last viewed first, as a JSON array."""
    return queries.recent_dashboards_for(
        request_work().connection, principal.org, principal.user_id, limit
    )


def most_viewed(principal: Principal, limit: int, days: int | None) -> str:
    """The org's most viewed dashboards (of all time, or the last ``days``), as a JSON array."""
    if days is None:
        return queries.most_viewed_all_time(request_work().connection, principal.org, limit)
    return queries.most_viewed_recently(request_work().connection, principal.org, limit, days)


def dashboard_stats(principal: Principal, dashboard_id: uuid.UUID, days: int) -> dict[str, Any]:
    """Totals, a zero-filled daily series of ``days`` UTC days and the top viewers."""
    stats = queries.dashboard_stats(request_work().connection, principal.org, dashboard_id, days)
    top = zip(
        stats.top_users or [], stats.top_counts or [], stats.top_last_viewed or [], strict=True
    )
    return {
        "dashboardId": dashboard_id,
        "name": stats.name,
        "totalViews": stats.view_count,
        "uniqueViewers": stats.unique_viewers,
        "firstViewedAt": stats.first_viewed_at,
        "lastViewedAt": stats.last_viewed_at,
        "period": {
            "days": days,
            "from": stats.first_day,
            "to": stats.request_time,
            "views": sum(stats.day_views),
            "uniqueViewers": stats.period_viewers,
        },
        "dailyViews": [
            {"date": day, "views": views, "uniqueViewers": viewers}
            for day, views, viewers in zip(
                stats.days, stats.day_views, stats.day_viewers, strict=True
            )
        ],
        "topViewers": [
            {"user_id": user, "user_email": email, "view_count": count, "last_viewed_at": last}
            for (user, email), count, last in top
        ],
    }
