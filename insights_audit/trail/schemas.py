"""Request and response schemas of the audit trail endpoints."""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from insights_audit.cursors import Cursor
from insights_audit.schemas import (
    DASHBOARD_NAME_LIMIT,
    CanonicalUUID,
    FullMatch,
    StrictSchema,
    Timestamp,
    envelope,
    uuid_field,
)

ACTION_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
TYPES = ("dashboard", "kpi", "mapping")
DETAILS_LIMIT_BYTES = 16 * 1024


class TrailQuery(StrictSchema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = Cursor(metadata={"type": "string", "description": "`nextCursor` of the previous page"})
    since = Timestamp(metadata={"description": "Only entries at or after this time"})
    until = Timestamp(metadata={"description": "Only entries before this time"})
    action = fields.String(validate=FullMatch(ACTION_PATTERN), metadata={"example": "view"})
    userId = fields.String(validate=validate.Length(1, 255), metadata={"example": "5f2b1c3d9e8a"})

    @ma.validates_schema
    def _window_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ma.ValidationError("Must be later than since.", "until")


def _details_fit(details: dict[str, Any]) -> None:
    size = len(json.dumps(details, separators=(",", ":"), ensure_ascii=False).encode())
    if size > DETAILS_LIMIT_BYTES:
        raise ma.ValidationError(f"At most {DETAILS_LIMIT_BYTES} bytes as JSON, got {size}.")
    name = details.get("name")
    # ``details.name`` renames a dashboard: the view body's limit applies here too.
    if isinstance(name, str) and len(name) > DASHBOARD_NAME_LIMIT:
        raise ma.ValidationError(f"name: at most {DASHBOARD_NAME_LIMIT} characters.")


class NewEntry(StrictSchema):
    type = fields.String(required=True, validate=validate.OneOf(TYPES))
    action = fields.String(
        required=True, validate=FullMatch(ACTION_PATTERN), metadata={"example": "update"}
    )
    targetId = CanonicalUUID(required=True)
    details = fields.Dict(
        keys=fields.String(),
        load_default=dict,
        validate=_details_fit,
        metadata={"example": {"name": "Release velocity", "field": "threshold"}},
    )
    userId = fields.String(validate=validate.Length(1, 255), metadata={"example": "5f2b1c3d9e8a"})
    userEmail = fields.Email(
        validate=validate.Length(max=320), metadata={"example": "jane.doe@example.com"}
    )

    @ma.validates_schema
    def _email_needs_user(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "userEmail" in data and "userId" not in data:
            raise ma.ValidationError(
                "userEmail is only accepted together with userId.", "userEmail"
            )


class Entry(ma.Schema):
    id = fields.String(metadata={"example": "507f1f77bcf86cd799439011"})
    type = fields.String(metadata={"example": "dashboard"})
    action = fields.String(metadata={"example": "view"})
    targetId = uuid_field(attribute="target_id")
    userId = fields.String(attribute="user_id", metadata={"example": "5f2b1c3d9e8a"})
    userEmail = fields.String(
        attribute="user_email", allow_none=True, metadata={"example": "jane.doe@example.com"}
    )
    recordedBy = fields.String(
        attribute="recorded_by",
        metadata={
            "example": "5f2b1c3d9e8a",
            "description": "userId of the token that wrote the entry (differs from userId on"
            " an administrator's on-behalf write)",
        },
    )
    details = fields.Dict(metadata={"example": {"name": "Release velocity"}})
    createdAt = Timestamp(attribute="created_at")
    requestId = fields.String(
        attribute="request_id", allow_none=True, metadata={"example": "9b2f6d0e-1c4a-4f57"}
    )
    ip = fields.String(allow_none=True, metadata={"example": "203.0.113.7"})
    userAgent = fields.String(
        attribute="user_agent", allow_none=True, metadata={"example": "Mozilla/5.0"}
    )


ENTRY_MESSAGE = "Successfully retrieved audit log"
RECORDED_MESSAGE = "Successfully recorded audit log"
TRAIL_MESSAGES = {
    "dashboard": "Successfully retrieved dashboard audit logs",
    "mapping": "Successfully retrieved mapping audit logs",
    "kpi": "Successfully retrieved kpi audit logs",
}

EntryEnvelope = envelope("AuditLogResponse", Entry, message=ENTRY_MESSAGE)
RecordedEnvelope = envelope("RecordedAuditLogResponse", Entry, message=RECORDED_MESSAGE)
TRAIL_ENVELOPES = {
    type_: envelope(f"{type_.capitalize()}AuditLogs", Entry, many=True, message=message, paged=True)
    for type_, message in TRAIL_MESSAGES.items()
}
