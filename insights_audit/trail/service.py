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
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], TrailPosition(last.created_at, last.id)
