"""Response schema of the integrity endpoint."""

from __future__ import annotations

from marshmallow import fields, validate

from insights_audit.web.schemas import FastDumpSchema, Timestamp, envelope

INTEGRITY_MESSAGE = "Successfully verified the integrity of the audit trail"
STATUSES = ("verified", "failed", "no_data")


class Checkpoint(FastDumpSchema):
    """The latest signed checkpoint, as exported by ``audit checkpoint --out``."""

    version = fields.Integer(required=True)
    org = fields.String(required=True)
    block = fields.Integer(required=True, metadata={"description": "Checkpoint number"})
    seqFrom = fields.Integer(required=True, metadata={"description": "First chain position"})
    seqTo = fields.Integer(required=True, metadata={"description": "Last chain position"})
    firstId = fields.String(required=True)
    lastId = fields.String(required=True)
    lastTxid = fields.String(
        required=True,
        metadata={
            "description": "The writing transaction of the last sealed entry (decimal text: a"
            " 64-bit counter beyond JSON's safe integers)"
        },
    )
    headHash = fields.String(required=True, metadata={"description": "SHA-256 chain head, hex"})
    previous = fields.String(
        required=True, allow_none=True, metadata={"description": "Previous checkpoint's hash"}
    )
    sealedAt = fields.String(
        required=True,
        metadata={
            "description": "When it was sealed, with microseconds: exactly the text that was"
            " signed, so a verifier can rebuild the signed payload",
            "example": "2026-11-27T02:18:13.123456Z",
        },
    )
    keyId = fields.String(required=True, metadata={"description": "Signing key (Ed25519) id"})
    checkpointHash = fields.String(required=True)
    signature = fields.String(required=True, metadata={"description": "Ed25519, base64"})


class Integrity(FastDumpSchema):
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    checked = fields.Integer(required=True, metadata={"description": "Entries verified"})
    firstBadId = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    checkpoint = fields.Nested(Checkpoint, required=True, allow_none=True)
    unsealed = fields.Integer(
        required=True, metadata={"description": "Entries newer than the latest checkpoint"}
    )
    retention = fields.Dict(
        required=True,
        allow_none=True,
        metadata={
            "description": "The latest signed retention record of the organisation (what"
            " retention removed, up to when), or null"
        },
    )
    verifiedAt = Timestamp(
        required=True,
        allow_none=True,
        metadata={"description": "When the trail up to `checkpoint` was last verified"},
    )


IntegrityEnvelope = envelope("IntegrityEnvelope", Integrity, message=INTEGRITY_MESSAGE)
