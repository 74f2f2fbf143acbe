"""Request and response schemas of viewer links and of the caller's own token."""

from __future__ import annotations

from marshmallow import fields, validate

from insights_audit.viewer.links import (
    DEFAULT_ROLES,
    DEFAULT_TTL_SECONDS,
    MAX_TTL_SECONDS,
    MIN_TTL_SECONDS,
)
from insights_audit.web.auth import KNOWN_ROLES
from insights_audit.web.schemas import (
    USER_EMAIL_LIMIT,
    USER_ID_LIMIT,
    ResponseSchema,
    StrictSchema,
    Timestamp,
    envelope,
)

LINK_MESSAGE = "Successfully created viewer link"
ME_MESSAGE = "Successfully retrieved token details"


class NewViewerLink(StrictSchema):
    userId = fields.String(
        required=True,
        validate=validate.Length(1, USER_ID_LIMIT),
        metadata={"example": "5f2b1c3d9e8a"},
    )
    userEmail = fields.Email(validate=validate.Length(1, USER_EMAIL_LIMIT))
    roles = fields.List(
        fields.String(validate=validate.OneOf(sorted(KNOWN_ROLES))),
        validate=validate.Length(1, len(KNOWN_ROLES)),
        load_default=lambda: list(DEFAULT_ROLES),
        metadata={"description": "The person's roles (default `Users`)"},
    )
    ttlSeconds = fields.Integer(
        load_default=DEFAULT_TTL_SECONDS,
        validate=validate.Range(MIN_TTL_SECONDS, MAX_TTL_SECONDS),
        metadata={"description": "How long the link signs in (default an hour, at most a day)"},
    )


class ViewerLink(ResponseSchema):
    url = fields.String(
        metadata={
            "description": "Opens the viewer signed in; the token is in the fragment, which"
            " browsers never send to a server",
            "example": "https://audit.example.com/ui/#token=iat_...",
        }
    )
    token = fields.String(metadata={"description": "The read-only token itself"})
    expiresAt = Timestamp()


class Me(ResponseSchema):
    org = fields.String()
    userId = fields.String()
    userEmail = fields.String(allow_none=True)
    roles = fields.List(fields.String())
    scopes = fields.List(fields.String())
    expiresAt = Timestamp(allow_none=True, metadata={"description": "null: never"})


ViewerLinkEnvelope = envelope("ViewerLinkEnvelope", ViewerLink, message=LINK_MESSAGE)
MeEnvelope = envelope("MeEnvelope", Me, message=ME_MESSAGE)
