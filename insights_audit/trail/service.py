"""Audit trail commands and reads."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Row, select

from insights_audit.auth import Principal
from insights_audit.cursors import TrailPosition
from insights_audit.entries import ENTRY_INSERT, Actor, RequestMeta, entry_params
from insights_audit.errors import NotFound
from insights_audit.trail import queries
from insights_audit.trail.queries import TrailFilter
from insights_audit.unit_of_work import request_work
from insights_audit.view_counts import dashboard_name_upsert, record_view

AUDIT_LOG_NOT_FOUND = "Audit log not found"


def record_entry(
    db: Connection,
    actor: Actor,
    type_: str,
    action: str,
    target_id: uuid.UUID,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Row[Any]:
    """Append one entry in one statement; a dashboard view also counts, as a recorded view does."""
    name = details.get("name") if type_ == "dashboard" else None
    name = name if isinstance(name, str) else None
    if type_ == "dashboard" and action == "view":
        return record_view(db, actor, target_id, name, details, meta)
    params = entry_params(actor, type_, action, target_id, details, meta)
    statement = select(ENTRY_INSERT.cte("entry"))
    if name is not None:
        statement = statement.add_cte(dashboard_name_upsert(actor.org, target_id, name).cte("name"))
    return db.execute(statement, params).one()


def entry(principal: Principal, entry_id: str) -> Row[Any]:
    found = queries.entry_by_id(request_work().connection, principal.org, entry_id)
    if found is None:
        raise NotFound(AUDIT_LOG_NOT_FOUND)
    return found


def trail_page(
    principal: Principal,
    type_: str,
    target_id: uuid.UUID,
    limit: int,
    cursor: TrailPosition | None,
    **filters: Any,
) -> tuple[list[Row[Any]], TrailPosition | None]:
    """One page of a target's entries, newest first, and the position after it if any."""
    rows = queries.trail_page(
        request_work().connection,
        principal.org,
        type_,
        target_id,
        limit=limit,
        after=cursor,
        **filters,
    )
    return _page(rows, limit)


def _page(rows: list[Row[Any]], limit: int) -> tuple[list[Row[Any]], TrailPosition | None]:
    """The first ``limit`` of ``limit + 1`` rows, and the position after them if there are
    more."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], TrailPosition(last.created_at, last.id)


def trail_filter(query: dict[str, Any]) -> TrailFilter:
    """The filter a search or export query names."""
    return TrailFilter(
        types=tuple(query.get("type", ())),
        actions=tuple(query.get("action", ())),
        target_id=query.get("targetId"),
        user_ids=tuple(query.get("userId", ())),
        since=query.get("since"),
        until=query.get("until"),
        words=tuple(query.get("q", "").split()),
    )


def search_page(
    principal: Principal, wanted: TrailFilter, limit: int, cursor: TrailPosition | None
) -> tuple[list[Row[Any]], TrailPosition | None]:
    """One page of the org's entries that ``wanted`` keeps, newest first, and the position
    after it if any."""
    rows = queries.search_page(
        request_work().connection, principal.org, wanted, limit=limit, after=cursor
    )
    return _page(rows, limit)


def feed_page(
    principal: Principal, position: tuple[str, str], limit: int
) -> tuple[list[Row[Any]], tuple[str, str], bool]:
    """The entries after ``position`` in chain order that no transaction can precede any
    more, the position after them (``position`` itself when there are none), and whether
    more are ready."""
    rows = queries.feed_page(request_work().connection, principal.org, position, limit)
    page = rows[:limit]
    if page:
        position = (page[-1].txid, page[-1].id)
    return page, position, len(rows) > limit
