"""Dashboard reads, each given the request's unit of work (the views pass it in)."""

from __future__ import annotations

import json
import uuid

from insights_audit.dashboards import engagement, queries
from insights_audit.dashboards.engagement import Recommended, Related, Trending
from insights_audit.db.unit_of_work import UnitOfWork


def recently_viewed(work: UnitOfWork, user_id: str, limit: int) -> str:
    """``user_id``'s dashboards, last viewed first, as a JSON array."""
    return queries.recent_dashboards_for(work, user_id, limit)


def most_viewed(work: UnitOfWork, limit: int, days: int | None) -> str:
    """The org's most viewed dashboards (of all time, or the last ``days``), as a JSON array."""
    if days is None:
        return queries.most_viewed_all_time(work, limit)
    return queries.most_viewed_recently(work.connection, work.org, limit, days)


def dashboard_stats(work: UnitOfWork, dashboard_id: uuid.UUID, days: int) -> str:
    """Totals, a zero-filled daily series of ``days`` UTC days and the top viewers, as a JSON
    object."""
    return queries.dashboard_stats(work, dashboard_id, days)


def trending(work: UnitOfWork, days: int, limit: int) -> list[Trending]:
    """The org's dashboards viewed more in the last ``days`` than in the ``days`` before."""
    return engagement.trending(work.connection, work.org, days, limit)


def related(work: UnitOfWork, dashboard_id: uuid.UUID, days: int, limit: int) -> list[Related]:
    """What the viewers of ``dashboard_id`` also viewed in the last ``days``."""
    return engagement.related(work.connection, work.org, dashboard_id, days, limit)


def recommended(work: UnitOfWork, user_id: str, days: int, limit: int) -> list[Recommended]:
    """Dashboards for ``user_id``: those the viewers of their own dashboards viewed, then the
    org's most viewed of the window, never one they viewed in it."""
    connection = work.connection
    since = engagement.window_since(connection, days)
    chosen, mine = engagement.similar_to_mine(connection, work.org, user_id, since, limit)
    if len(chosen) < limit:
        taken = mine | {item.dashboard_id for item in chosen}
        wanted = limit - len(chosen) + len(taken)
        top = json.loads(queries.most_viewed_recently(connection, work.org, wanted, days))
        fill = [item for item in engagement.popular(top) if item.dashboard_id not in taken]
        chosen += fill[: limit - len(chosen)]
    return chosen
