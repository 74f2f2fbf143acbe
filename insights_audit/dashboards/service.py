"""Dashboard reads, each in the request's unit of work."""

from __future__ import annotations

import json
import uuid

from insights_audit.dashboards import engagement, queries
from insights_audit.dashboards.engagement import Recommended, Related, Trending
from insights_audit.web.auth import Principal
from insights_audit.web.work import request_work


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


def trending(principal: Principal, days: int, limit: int) -> list[Trending]:
    """The org's dashboards viewed more in the last ``days`` than in the ``days`` before."""
    return engagement.trending(request_work().connection, principal.org, days, limit)


def related(principal: Principal, dashboard_id: uuid.UUID, days: int, limit: int) -> list[Related]:
    """What the viewers of ``dashboard_id`` also viewed in the last ``days``."""
    return engagement.related(request_work().connection, principal.org, dashboard_id, days, limit)


def recommended(principal: Principal, days: int, limit: int) -> list[Recommended]:
    """Dashboards for the caller: those the viewers of their own dashboards viewed, then the
    org's most viewed of the window, never one they viewed in it."""
    connection = request_work().connection
    since = engagement.window_start(connection, days)
    similar, mine = engagement.similar_to_mine(connection, principal.org, principal.user_id, since)
    chosen = similar[:limit]
    if len(chosen) < limit:
        taken = mine | {item.dashboard_id for item in chosen}
        wanted = limit - len(chosen) + len(taken)
        top = json.loads(queries.most_viewed_recently(connection, principal.org, wanted, days))
        fill = [item for item in engagement.popular(top) if item.dashboard_id not in taken]
        chosen += fill[: limit - len(chosen)]
    return chosen
