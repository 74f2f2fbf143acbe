"""Audit entries as every resource writes them: who acted (``Actor``), where from
(``RequestMeta``), and the one INSERT that appends an entry."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Insert,
    Text,
    bindparam,
    cast,
    func,
    insert,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

from insights_audit.db.json_sql import api_timestamp, json_object, json_string, json_value
from insights_audit.models import AuditEntry, Key

# Who wrote an entry; entries older than this record were written by their own user.
WRITER = func.coalesce(AuditEntry.recorded_by, AuditEntry.user_id)
RECORDED_BY = WRITER.label("recorded_by")

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
    RECORDED_BY,
)


# The entry exactly as the ``Entry`` response schema shows it, as JSON text written by
# PostgreSQL: a page of entries is served without converting a row in Python. Joining the
# fields' JSON with || costs PostgreSQL half of what ``json_build_object`` does.
ENTRY_FIELDS = {
    "id": json_string(AuditEntry.id),
    "type": json_string(AuditEntry.type),
    "action": json_value(AuditEntry.action),
    "targetId": json_string(AuditEntry.target_id),
    "userId": json_value(AuditEntry.user_id),
    "userEmail": json_value(AuditEntry.user_email),
    "recordedBy": json_value(WRITER),
    "details": cast(AuditEntry.details, Text),
    "createdAt": json_string(api_timestamp(AuditEntry.created_at)),
    "requestId": json_value(AuditEntry.request_id),
    "ip": json_value(AuditEntry.ip),
    "userAgent": json_value(AuditEntry.user_agent),
}
ENTRY_JSON = json_object(ENTRY_FIELDS)


@dataclass(frozen=True)
class Actor:
    """Whose action an entry records, and who recorded it (the token's user and id)."""

    org: str
    user_id: str
    user_email: str | None
    recorded_by: str
    # None: the service itself (a stream it suspended).
    recorded_by_token: int | None


SERVICE_USER = "insights-audit"
# ``recordedBy`` of entries brought in by ``insights-audit import`` (no token wrote them), and
# the type of the entry that records each import: its files, their SHA-256 and its counts.
IMPORTED_BY = "insights-audit:import"
IMPORT_TYPE = "import"


def service_actor(org: str) -> Actor:
    """The service itself, writing on an operator's command or on its own (a suspended
    stream, a viewer link from the CLI or ``make run``): no token records it."""
    return Actor(org, SERVICE_USER, None, SERVICE_USER, None)


@dataclass(frozen=True)
class RequestMeta:
    """Where the action came from."""

    request_id: str | None
    ip: str | None
    user_agent: str | None


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
            recorded_by=bindparam("recorded_by", type_=Key),
            recorded_by_token=bindparam("recorded_by_token", type_=BigInteger),
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
        "recorded_by": actor.recorded_by,
        "recorded_by_token": actor.recorded_by_token,
        "details": details,
        "request_id": meta.request_id,
        "ip": meta.ip,
        "user_agent": meta.user_agent,
    }
