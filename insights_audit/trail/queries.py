"""SQL of the audit trail: appending entries and reading them back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, Row, func, insert, select, tuple_

from insights_audit.models import AuditEntry

ENTRY_COLUMNS = (
    AuditEntry.id,
    AuditEntry.type,
    AuditEntry.action,
    AuditEntry.target_id,
    AuditEntry.user_id,
    AuditEntry.user_email,
    AuditEntry.details,
    AuditEntry.created_at,
    AuditEntry.request_id,
    AuditEntry.ip,
    AuditEntry.user_agent,
)


@dataclass(frozen=True)
class Actor:
    """Whose action an entry records."""

    org: str
    user_id: str
    user_email: str | None


@dataclass(frozen=True)
class RequestMeta:
    """Where the action came from."""

    request_id: str | None
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class TrailPosition:
    """A keyset position: the last entry of a page."""

    created_at: datetime
    id: str


def entry_insert(
    actor: Actor,
    type_: str,
    action: str,
    target_id: uuid.UUID,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Insert:
    """The INSERT of one entry stamped with the database clock, returning the entry."""
    now = func.now()
    return (
        insert(AuditEntry)
        .values(
            id=func.audit_object_id(now),
            org=actor.org,
            type=type_,
            action=action,
            target_id=target_id,
            user_id=actor.user_id,
            user_email=actor.user_email,
            details=details,
            created_at=now,
            request_id=meta.request_id,
            ip=meta.ip,
            user_agent=meta.user_agent,
        )
        .returning(*ENTRY_COLUMNS)
    )


def entry_by_id(connection: Connection, org: str, entry_id: str) -> Row[Any] | None:
    query = select(*ENTRY_COLUMNS).where(AuditEntry.id == entry_id, AuditEntry.org == org)
    return connection.execute(query).one_or_none()


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
    """Up to ``limit + 1`` entries of a target, newest first (keyset on ix_audit_entries_trail)."""
    query = select(*ENTRY_COLUMNS).where(
        AuditEntry.org == org, AuditEntry.type == type_, AuditEntry.target_id == target_id
    )
    if after is not None:
        query = query.where(
            tuple_(AuditEntry.created_at, AuditEntry.id) < tuple_(after.created_at, after.id)
        )
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    if until is not None:
        query = query.where(AuditEntry.created_at < until)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if user_id is not None:
        query = query.where(AuditEntry.user_id == user_id)
    query = query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    return list(connection.execute(query))
