"""Dashboard reads, each in the request's unit of work."""

from __future__ import annotations

import uuid

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


def dashboard_stats(principal: Principal, dashboard_id: uuid.UUID, days: int) -> str:
    """Totals, a zero-filled daily series of ``days`` UTC days and the top viewers, as a JSON
    object."""
    return queries.dashboard_stats(request_work().connection, principal.org, dashboard_id, days)
