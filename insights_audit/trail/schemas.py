"""Request and response schemas of the audit trail endpoints."""

from __future__ import annotations

import json
import re
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from insights_audit.trail.cursors import Cursor, FeedPosition
from insights_audit.web.schemas import (
    DASHBOARD_NAME_LIMIT,
    USER_EMAIL_LIMIT,
    USER_ID_LIMIT,
    CanonicalUUID,
    FullMatch,
    Pagination,
    ResponseSchema,
    StrictSchema,
    Timestamp,
    envelope,
    uuid_field,
)

ACTION_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
ACTION_NAME = re.compile(ACTION_PATTERN)
TYPES = ("dashboard", "kpi", "mapping")
# Types the service writes itself (changes to push streams, viewer links, imports of
# history): filters name them too.
SERVICE_TYPES = ("stream", "token", "import")
FILTER_TYPES = TYPES + SERVICE_TYPES
DETAILS_LIMIT_BYTES = 16 * 1024
EXPORT_FORMATS = ("ndjson", "csv")


class TimeWindow(StrictSchema):
    since = Timestamp(metadata={"description": "Only entries at or after this time"})
    until = Timestamp(metadata={"description": "Only entries before this time"})

    @ma.validates_schema
    def _window_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "until" in data and data["since"] >= data["until"]:
            raise ma.ValidationError("Must be later than since.", "until")


PAGE_CURSOR_METADATA = {"type": "string", "description": "`nextCursor` of the previous page"}


class TrailQuery(TimeWindow):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = Cursor(metadata=PAGE_CURSOR_METADATA)
    action = fields.String(validate=FullMatch(ACTION_PATTERN), metadata={"example": "view"})
    userId = fields.String(
        validate=validate.Length(1, USER_ID_LIMIT), metadata={"example": "5f2b1c3d9e8a"}
    )


# An action, or a prefix of one ending in ``*`` (``settings.*``).
ACTION_FILTER_PATTERN = r"[a-z][a-z0-9_.-]{0,63}|[a-z][a-z0-9_.-]{0,62}\*"
SEARCH_TEXT_LIMIT = 200
# A search's words are bounded so that no query can ask for an unbounded amount of matching.
SEARCH_WORDS_LIMIT = 10
SEARCH_WORD_MIN = 3


def search_words(q: str) -> tuple[str, ...]:
    """The distinct words of ``q`` (case-insensitively distinct, as they match), in order."""
    seen: dict[str, str] = {}
    for word in q.split():
        seen.setdefault(word.casefold(), word)
    return tuple(seen.values())


class EntryFilters(StrictSchema):
    """Filters on an entry's own fields, each optional, combined with AND."""

    type = fields.List(
        fields.String(validate=validate.OneOf(FILTER_TYPES)),
        metadata={"description": "Repeatable: entries of any of these types"},
    )
    action = fields.List(
        fields.String(validate=FullMatch(ACTION_FILTER_PATTERN)),
        metadata={
            "description": "Repeatable: an action, or a prefix ending in `*` (`settings.*`)",
            "example": ["view"],
        },
    )
    targetId = CanonicalUUID()
    userId = fields.List(
        fields.String(validate=validate.Length(1, USER_ID_LIMIT)),
        metadata={"description": "Repeatable: entries of any of these users"},
    )


class TrailFilterQuery(TimeWindow, EntryFilters):
    """The filters of the org-wide search and export, each optional, combined with AND."""

    q = fields.String(
        validate=validate.Length(1, SEARCH_TEXT_LIMIT),
        metadata={
            "description": "Words that must all occur (any case, any part of a word) in the"
            f" action, userId, userEmail or a string value inside details: at most"
            f" {SEARCH_WORDS_LIMIT} distinct words of at least {SEARCH_WORD_MIN} characters",
            "example": "threshold",
        },
    )

    @ma.validates("q")
    def _q_has_words(self, value: str, **kwargs: Any) -> None:
        words = search_words(value)
        if not words:
            raise ma.ValidationError("Give at least one word.")
        if len(words) > SEARCH_WORDS_LIMIT:
            raise ma.ValidationError(f"At most {SEARCH_WORDS_LIMIT} distinct words.")
        if any(len(word) < SEARCH_WORD_MIN for word in words):
            raise ma.ValidationError(f"Each word needs at least {SEARCH_WORD_MIN} characters.")


class SearchQuery(TrailFilterQuery):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 1000))
    cursor = Cursor(metadata=PAGE_CURSOR_METADATA)


class ExportQuery(TrailFilterQuery):
    format = fields.String(load_default="ndjson", validate=validate.OneOf(EXPORT_FORMATS))


class FeedQuery(StrictSchema):
    after = FeedPosition(
        metadata={
            "type": "string",
            "description": "`pagination.nextCursor` of the previous answer; absent: from the"
            " organisation's first entry",
        }
    )
    limit = fields.Integer(load_default=500, validate=validate.Range(1, 1000))


class TailQuery(EntryFilters):
    after = FeedPosition(
        metadata={
            "type": "string",
            "description": "A feed position (an event's `id`, or a feed page's `nextCursor`):"
            " send every entry after it. `Last-Event-ID` does the same and wins. Neither:"
            " only entries that arrive from now on",
        }
    )


class FeedPagination(ResponseSchema):
    limit = fields.Integer(required=True, metadata={"example": 500})
    nextCursor = fields.String(
        required=True,
        metadata={
            "description": "Pass as `after` next time; never null (with nothing new, the"
            " position given)",
            "example": "MTIzNDU2LjY1ZjFhMmIzYzRkNWU2ZjcwODE5MmEzYi5hYmNk",
        },
    )
    hasMore = fields.Boolean(
        required=True, metadata={"description": "Whether another call would return entries now"}
    )


def details_fit(details: dict[str, Any]) -> None:
    """The limits of an entry's ``details``, for a live entry and an imported one alike."""
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
        validate=details_fit,
        metadata={"example": {"name": "Release velocity", "field": "threshold"}},
    )
    userId = fields.String(
        validate=validate.Length(1, USER_ID_LIMIT), metadata={"example": "5f2b1c3d9e8a"}
    )
    userEmail = fields.Email(
        validate=validate.Length(max=USER_EMAIL_LIMIT), metadata={"example": "jane.doe@example.com"}
    )

    @ma.validates_schema
    def _email_needs_user(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "userEmail" in data and "userId" not in data:
            raise ma.ValidationError(
                "userEmail is only accepted together with userId.", "userEmail"
            )


class Entry(ResponseSchema):
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
SEARCH_MESSAGE = "Successfully retrieved audit logs"
FEED_MESSAGE = "Successfully retrieved audit log feed"
TRAIL_ENVELOPES = {
    type_: envelope(
        f"{type_.capitalize()}AuditLogs", Entry, many=True, message=message, pagination=Pagination
    )
    for type_, message in TRAIL_MESSAGES.items()
}
SearchEnvelope = envelope(
    "AuditLogSearch", Entry, many=True, message=SEARCH_MESSAGE, pagination=Pagination
)
FeedEnvelope = envelope(
    "AuditLogFeed", Entry, many=True, message=FEED_MESSAGE, pagination=FeedPagination
)
