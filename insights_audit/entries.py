"""Audit entries as every resource writes them: who acted (``Actor``), where from
(``RequestMeta``), and the one INSERT that appends an entry."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Insert,
    SQLColumnExpression,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

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


def api_timestamp(column: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """``column`` as the API writes a time: RFC 3339 in UTC, milliseconds, ``Z``."""
    return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')


def constant(text: str) -> ColumnElement[str]:
    """``text`` written into the SQL (a bind parameter costs each execution); an E'' string
    means the same whatever ``standard_conforming_strings`` says."""
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return literal_column(f"E'{escaped}'", Text)


def joined(parts: Sequence[ColumnElement[str]], separator: str = "") -> ColumnElement[str]:
    """The parts joined by ``||`` (PostgreSQL runs it faster than ``concat``)."""
    line = parts[0]
    for part in parts[1:]:
        line = line + constant(separator) + part if separator else line + part
    return line


def _json_value(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """``value`` as JSON text ('null' for null)."""
    return func.coalesce(cast(func.to_json(value), Text), constant("null"))


def _json_string(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """A value the service writes itself (an id, a uuid, a time): nothing in it to escape."""
    return constant('"') + cast(value, Text) + constant('"')


# The entry exactly as the ``Entry`` response schema shows it, as JSON text written by
# PostgreSQL: a page of entries is served without converting a row in Python. Joining the
# fields' JSON with || costs PostgreSQL half of what ``json_build_object`` does.
ENTRY_FIELDS = {
    "id": _json_string(AuditEntry.id),
    "type": _json_string(AuditEntry.type),
    "action": _json_value(AuditEntry.action),
    "targetId": _json_string(AuditEntry.target_id),
    "userId": _json_value(AuditEntry.user_id),
    "userEmail": _json_value(AuditEntry.user_email),
    "recordedBy": _json_value(WRITER),
    "details": cast(AuditEntry.details, Text),
    "createdAt": _json_string(api_timestamp(AuditEntry.created_at)),
    "requestId": _json_value(AuditEntry.request_id),
    "ip": _json_value(AuditEntry.ip),
    "userAgent": _json_value(AuditEntry.user_agent),
}
ENTRY_JSON = joined(
    [
        constant("{"),
        joined([constant(f'"{key}":') + value for key, value in ENTRY_FIELDS.items()], ","),
        constant("}"),
    ]
)


@dataclass(frozen=True)
class Actor:
    """Whose action an entry records, and who recorded it (the token's user and id)."""

    org: str
    user_id: str
    user_email: str | None
    recorded_by: str
    recorded_by_token: int


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
