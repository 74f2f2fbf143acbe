"""SQL of the audit trail: appending entries and reading them back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Insert,
    Row,
    Select,
    Text,
    bindparam,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from insights_audit.models import AuditEntry, Key

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


def _entry_insert() -> Insert:
    """The INSERT of one entry stamped with the database clock, returning the entry.

    Built once: its parameters are those of ``entry_params``.
    """
    now = func.now()
    return (
        insert(AuditEntry)
        .values(
            id=func.audit_object_id(now),
            org=bindparam("org", type_=Key),
            type=bindparam("type", type_=Key),
            action=bindparam("action", type_=Key),
            target_id=bindparam("target_id", type_=UUID(as_uuid=True)),
            user_id=bindparam("user_id", type_=Key),
            user_email=bindparam("user_email", type_=Text),
            details=bindparam("details", type_=JSONB),
            created_at=now,
            request_id=bindparam("request_id", type_=Text),
            ip=bindparam("ip", type_=Text),
            user_agent=bindparam("user_agent", type_=Text),
        )
        .returning(*ENTRY_COLUMNS)
    )


ENTRY_INSERT = _entry_insert()


def entry_params(
    actor: Actor,
    type_: str,
    action: str,
    target_id: uuid.UUID,
    details: dict[str, Any],
    meta: RequestMeta,
) -> dict[str, Any]:
    return {
        "org": actor.org,
        "type": type_,
        "action": action,
        "target_id": target_id,
        "user_id": actor.user_id,
        "user_email": actor.user_email,
        "details": details,
        "request_id": meta.request_id,
        "ip": meta.ip,
        "user_agent": meta.user_agent,
    }


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
