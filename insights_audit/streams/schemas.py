"""Request and response schemas of push streams."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from insights_audit.trail.schemas import EntryFilters
from insights_audit.web.schemas import (
    ResponseSchema,
    StrictSchema,
    Timestamp,
    envelope,
    uuid_field,
)

KINDS = ("webhook", "splunk-hec")
STATUSES = ("active", "paused", "suspended")
# What a caller may set; ``suspended`` is the service's to set.
SETTABLE_STATUSES = ("active", "paused")
NAME_LIMIT = 200
URL_LIMIT = 2048
TOKEN_LIMIT = 512

STREAM_MESSAGE = "Successfully retrieved stream"
STREAMS_MESSAGE = "Successfully retrieved streams"
CREATED_MESSAGE = "Successfully created stream"
UPDATED_MESSAGE = "Successfully updated stream"
ROTATED_MESSAGE = "Successfully rotated stream secret"
TOKEN_ONLY_FOR_HEC = "Only a splunk-hec stream has a token."
HEC_NEEDS_A_TOKEN = "A splunk-hec stream needs its HEC token."


class StreamFilters(EntryFilters):
    """Which entries the stream delivers: the search's filters, with their meanings."""


def _name(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Length(1, NAME_LIMIT), metadata={"example": "SIEM"}, **kwargs
    )


def _url(**kwargs: Any) -> fields.String:
    return fields.String(
        **kwargs,
        validate=validate.Length(1, URL_LIMIT),
        metadata={"example": "https://siem.example.com/hooks/audit"},
    )


def _token() -> fields.String:
    return fields.String(
        validate=validate.Length(1, TOKEN_LIMIT),
        load_only=True,
        metadata={"description": "The Splunk HEC token (splunk-hec only); never returned"},
    )


class NewStream(StrictSchema):
    name = _name(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    url = _url(required=True)
    token = _token()
    filters = fields.Nested(StreamFilters, load_default=dict)
    startAt = fields.String(
        load_default="now",
        validate=validate.Length(1, 200),
        metadata={
            "description": "`now` (entries from now on), `beginning` (the whole trail) or a"
            " feed position (`pagination.nextCursor` of the feed, a live tail event's `id`)",
            "example": "now",
        },
    )

    @ma.validates_schema
    def _token_only_for_hec(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("kind") == "splunk-hec" and "token" not in data:
            raise ma.ValidationError(HEC_NEEDS_A_TOKEN, "token")
        if data.get("kind") == "webhook" and "token" in data:
            raise ma.ValidationError(TOKEN_ONLY_FOR_HEC, "token")


class StreamChanges(StrictSchema):
    name = _name()
    url = _url()
    token = _token()
    filters = fields.Nested(StreamFilters)
    status = fields.String(validate=validate.OneOf(SETTABLE_STATUSES))

    @ma.validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError("Name at least one field to change.", "_schema")


class Stream(ResponseSchema):
    id = uuid_field()
    name = fields.String()
    kind = fields.String(metadata={"enum": list(KINDS)})
    url = fields.String()
    filters = fields.Dict(metadata={"description": "The filters given at creation or since"})
    status = fields.String(metadata={"enum": list(STATUSES)})
    position = fields.String(
        metadata={"description": "Feed position of the last entry the receiver accepted"}
    )
    lastDeliveredAt = Timestamp(allow_none=True)
    lagSeconds = fields.Float(
        metadata={"description": "Age of the oldest matching entry not delivered yet (0: none)"}
    )
    delivered = fields.Integer(metadata={"description": "Entries the receiver has accepted"})
    consecutiveFailures = fields.Integer()
    lastError = fields.String(allow_none=True)
    createdAt = Timestamp()


class StreamWithSecret(Stream):
    secret = fields.String(
        metadata={
            "description": "The webhook's signing secret: shown this once, never again (null"
            " for splunk-hec)",
            "example": "whsec_3q2-7wAbCdEfGhIjKlMnOpQrStUvWxYz0123456789a",
        },
        allow_none=True,
    )


class RotatedSecret(ResponseSchema):
    id = uuid_field()
    secret = fields.String(metadata={"description": "The new signing secret, shown this once"})


StreamEnvelope = envelope("StreamEnvelope", Stream, message=STREAM_MESSAGE)
StreamsEnvelope = envelope("StreamsEnvelope", Stream, many=True, message=STREAMS_MESSAGE)
CreatedStreamEnvelope = envelope("CreatedStreamEnvelope", StreamWithSecret, message=CREATED_MESSAGE)
RotatedSecretEnvelope = envelope("RotatedSecretEnvelope", RotatedSecret, message=ROTATED_MESSAGE)
