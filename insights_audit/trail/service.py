"""Audit trail commands and reads; each function is one unit of work or runs inside one."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Row

from insights_audit.auth import Principal
from insights_audit.dashboards.queries import record_view, remember_dashboard_name
from insights_audit.errors import NotFound
from insights_audit.extensions import transaction
from insights_audit.trail import queries
from insights_audit.trail.queries import Actor, RequestMeta, TrailPosition

AUDIT_LOG_NOT_FOUND = "Audit log not found"


def record_entry(
    connection: Connection,
    actor: Actor,
    type_: str,
    action: str,
    target_id: uuid.UUID,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Row[Any]:
    """Append one entry; a dashboard view also counts, exactly as recording a view does."""
    name = details.get("name") if type_ == "dashboard" else None
    name = name if isinstance(name, str) else None
    if type_ == "dashboard" and action == "view":
        return record_view(connection, actor, target_id, name, details, meta)
    entry = queries.append_entry(connection, actor, type_, action, target_id, details, meta)
    if name is not None:
        remember_dashboard_name(connection, actor.org, target_id, name)
    return entry


def entry(principal: Principal, entry_id: str) -> Row[Any]:
    with transaction() as connection:
        found = queries.entry_by_id(connection, principal.org, entry_id)
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
    with transaction() as connection:
        rows = queries.trail_page(
            connection, principal.org, type_, target_id, limit=limit, after=cursor, **filters
        )
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], TrailPosition(last.created_at, last.id)
