"""Signed checkpoints: what one sealed batch of an org's chain states, and how it is read.

A checkpoint states the org, its number (``block``), the sequence range, the first and last
entry id, the chain's head hash, the previous checkpoint's hash and the key id; the signed
bytes are its canonical JSON. It also keeps the ids and leaves of its entries, so that
verification names the first entry that differs.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Row, select

from insights_audit.audit.chain_order import START, after, up_to
from insights_audit.integrity.canonical import CHAIN_SELECT, canonical_json, chain_timestamp
from insights_audit.models import AuditCheckpoint, AuditEntry

ID_BYTES = 12
HASH_BYTES = 32


def checkpoint_payload(checkpoint: AuditCheckpoint | Row[Any]) -> dict[str, Any]:
    """What a checkpoint states; its canonical JSON is what is signed and hashed."""
    return {
        "version": checkpoint.version,
        "org": checkpoint.org,
        "block": checkpoint.block,
        "seqFrom": checkpoint.seq_from,
        "seqTo": checkpoint.seq_to,
        "firstId": checkpoint.first_id,
        "lastId": checkpoint.last_id,
        "lastTxid": checkpoint.last_txid,
        "headHash": checkpoint.head_hash.hex(),
        "previous": checkpoint.previous_hash.hex() if checkpoint.previous_hash else None,
        "sealedAt": chain_timestamp(checkpoint.sealed_at),
        "keyId": checkpoint.key_id,
    }


def public_checkpoint(checkpoint: AuditCheckpoint | Row[Any]) -> dict[str, Any]:
    """The exported (and API) form: the payload with its hash and signature."""
    return {
        **checkpoint_payload(checkpoint),
        "checkpointHash": checkpoint.checkpoint_hash.hex(),
        "signature": base64.b64encode(checkpoint.signature).decode(),
    }


def signature_valid(public_key: Ed25519PublicKey, payload: dict[str, Any], sig: bytes) -> bool:
    try:
        public_key.verify(sig, canonical_json(payload))
    except InvalidSignature:
        return False
    return True


# A checkpoint without its entry lists (44 bytes per entry), which are read only to verify.
SUMMARY_COLUMNS = tuple(
    column
    for column in AuditCheckpoint.__table__.columns
    if column.key not in ("entry_ids", "entry_hashes")
)


def last_checkpoint(connection: Connection, org: str) -> Row[Any] | None:
    return connection.execute(
        select(*SUMMARY_COLUMNS)
        .where(AuditCheckpoint.org == org)
        .order_by(AuditCheckpoint.block.desc())
        .limit(1)
    ).first()


def position_after(last: Row[Any] | None) -> tuple[str, str]:
    """The chain position after which entries are not sealed yet."""
    return (last.last_txid, last.last_id) if last is not None else START


def entries_between(org: str, start: tuple[str, str], end: tuple[str, str] | None = None) -> Any:
    """The canonical columns of ``org``'s entries after ``start`` (up to ``end``), in chain
    order."""
    query = (
        select(*CHAIN_SELECT)
        .where(AuditEntry.org == org, after(start))
        .order_by(AuditEntry.txid, AuditEntry.id)
    )
    return query if end is None else query.where(up_to(end))
