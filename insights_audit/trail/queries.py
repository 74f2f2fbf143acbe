"""SQL of the audit trail: reading entries back (the insert lives in ``entries``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    Select,
    bindparam,
    select,
    tuple_,
)

from insights_audit.cursors import TrailPosition
from insights_audit.entries import ENTRY_COLUMNS
from insights_audit.models import AuditEntry

ENTRY_BY_ID = select(*ENTRY_COLUMNS).where(
    AuditEntry.id == bindparam("entry_id"), AuditEntry.org == bindparam("org")
)


def entry_by_id(connection: Connection, org: str, entry_id: str) -> Row[Any] | None:
    return connection.execute(ENTRY_BY_ID, {"org": org, "entry_id": entry_id}).one_or_none()


@cache
def _trail_query(after: bool, since: bool, until: bool, action: bool, user_id: bool) -> Select[Any]:
    """The trail query of one combination of filters, built once (ix_audit_entries_trail)."""
    query = select(*ENTRY_COLUMNS).where(
        AuditEntry.org == bindparam("org"),
        AuditEntry.type == bindparam("type"),
        AuditEntry.target_id == bindparam("target_id"),
    )
    if after:
        query = query.where(
            tuple_(AuditEntry.created_at, AuditEntry.id)
            < tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    if since:
        query = query.where(AuditEntry.created_at >= bindparam("since"))
    if until:
        query = query.where(AuditEntry.created_at < bindparam("until"))
    if action:
        query = query.where(AuditEntry.action == bindparam("action"))
    if user_id:
        query = query.where(AuditEntry.user_id == bindparam("user_id"))
    return query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(
        bindparam("limit")
    )


def trail_page(
    connection: Connection,
    org: str,
    type_: str,
    target_id: uuid.UUID,
    *,
    limit: int,
    after: TrailPosition | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    user_id: str | None = None,
) -> list[Row[Any]]:
    """Up to ``limit + 1`` entries of a target, newest first."""
    query = _trail_query(
        after is not None,
        since is not None,
        until is not None,
        action is not None,
        user_id is not None,
    )
    params: dict[str, Any] = {
        "org": org,
        "type": type_,
        "target_id": target_id,
        "limit": limit + 1,
        "since": since,
        "until": until,
        "action": action,
        "user_id": user_id,
    }
    if after is not None:
        params.update(after_created_at=after.created_at, after_id=after.id)
    return list(connection.execute(query, params))
