"""Verification: an org's entries checked against its signed checkpoints (and exported copies)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Row, func, select

from insights_audit.audit.entries import IMPORT_TYPE, IMPORTED_BY
from insights_audit.integrity.canonical import (
    ZERO_HASH,
    NotInForm,
    canonical_json,
    chain_hash,
    leaf_hash,
)
from insights_audit.integrity.checkpoints import (
    HASH_BYTES,
    ID_BYTES,
    SUMMARY_COLUMNS,
    checkpoint_payload,
    entries_between,
    position_after,
    public_checkpoint,
    signature_valid,
)
from insights_audit.integrity.retention import public_record, record_payload
from insights_audit.models import AuditCheckpoint, RetentionRecord


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: ``verified``, ``failed`` or ``no_data``."""

    status: str
    checked: int
    first_bad_id: str | None = None
    reason: str | None = None
    checkpoint: dict[str, Any] | None = None
    unsealed: int = 0
    # Sealed entries that retention removed, and its latest record.
    removed: int = 0
    retention: dict[str, Any] | None = None
    # Sealed entries that ``insights-audit import`` brought in, and the sealed records of the
    # imports (their files and the files' SHA-256).
    imported: int = 0
    imports: tuple[dict[str, Any], ...] = ()


FORGED = "entry is not in the sealed chain: inserted into sealed history"


class _Failure(Exception):
    def __init__(self, entry_id: str | None, reason: str, verified: int = 0) -> None:
        super().__init__(reason)
        self.entry_id = entry_id
        self.reason = reason
        # Entries of the failing checkpoint verified before the bad one.
        self.verified = verified


def _split(blob: bytes, size: int) -> list[bytes]:
    return [blob[start : start + size] for start in range(0, len(blob), size)]


def _removed_by_retention(entry_id: str, removed_before: float | None) -> bool:
    """Whether a valid retention record says entries of this one's second are gone (an
    entry id starts with the Unix second it was created in)."""
    return removed_before is not None and int(entry_id[:8], 16) < removed_before


@dataclass
class _Imports:
    """Imported entries and import records met among the verified entries."""

    entries: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    def note(self, row: Row[Any]) -> None:
        if row.recorded_by == IMPORTED_BY and row.recorded_by_token is None:
            self.entries += 1
        elif row.type == IMPORT_TYPE:
            self.records.append(json.loads(row.details))


def _check_block(
    connection: Connection,
    block: Row[Any],
    previous: Row[Any] | None,
    removed_before: float | None,
    imports: _Imports,
) -> tuple[int, int]:
    """Compare one checkpoint's entries with the table; how many were checked, and how many
    retention removed. Imported entries and import records verified are noted in ``imports``."""
    listed = connection.execute(
        select(AuditCheckpoint.entry_ids, AuditCheckpoint.entry_hashes).where(
            AuditCheckpoint.org == block.org, AuditCheckpoint.block == block.block
        )
    ).one()
    ids = [raw.hex() for raw in _split(listed.entry_ids, ID_BYTES)]
    leaves = _split(listed.entry_hashes, HASH_BYTES)
    if len(ids) != block.seq_to - block.seq_from + 1 or len(leaves) != len(ids):
        raise _Failure(
            block.first_id, f"checkpoint {block.block} lists the wrong number of entries"
        )
    rows = connection.execute(
        entries_between(block.org, position_after(previous), (block.last_txid, block.last_id))
    ).all()
    present = {row.id for row in rows}
    head = previous.head_hash if previous is not None else ZERO_HASH
    checked = removed = 0
    for index, entry_id in enumerate(ids):
        row = rows[checked] if checked < len(rows) else None
        if entry_id not in present:
            if not _removed_by_retention(entry_id, removed_before):
                raise _Failure(
                    entry_id,
                    f"sealed entry {block.seq_from + index} is missing from its place in the"
                    " chain (deleted, or its org, txid or id changed)",
                    checked,
                )
            removed += 1
        elif row is None or row.id != entry_id:
            # The sealed entry is further on: this one was put in front of it.
            forged = row.id if row is not None else entry_id
            raise _Failure(forged, FORGED, checked)
        else:
            try:
                unchanged = leaf_hash(row, block.version) == leaves[index]
            except NotInForm:
                unchanged = False
            if not unchanged:
                raise _Failure(
                    entry_id, "entry differs from what was sealed (a field changed)", checked
                )
            imports.note(row)
            checked += 1
        head = chain_hash(head, leaves[index])
    if len(rows) > checked:
        raise _Failure(rows[checked].id, FORGED, checked)
    if head != block.head_hash:
        raise _Failure(
            block.first_id, f"entry hashes do not chain to checkpoint {block.block}'s head"
        )
    return checked, removed


def _retention_records(
    connection: Connection, org: str, public_key: Ed25519PublicKey
) -> list[Row[Any]]:
    """The org's retention records, each checked: signed by this key, numbered without gaps,
    each naming the one before it."""
    records = list(
        connection.execute(
            select(*RetentionRecord.__table__.columns)
            .where(RetentionRecord.org == org)
            .order_by(RetentionRecord.number)
        )
    )
    previous = None
    for record in records:
        payload = record_payload(record)
        if hashlib.sha256(canonical_json(payload)).digest() != record.record_hash or not (
            signature_valid(public_key, payload, record.signature)
        ):
            raise _Failure(
                record.first_id, f"retention record {record.number} is not signed by this key"
            )
        expected = (
            previous.number + 1 if previous else 1,
            previous.record_hash if previous else None,
        )
        if (record.number, record.previous_hash) != expected:
            raise _Failure(
                record.first_id, f"retention record {record.number} does not follow the one before"
            )
        previous = record
    return records


def _check_signature(
    block: Row[Any], previous: Row[Any] | None, public_key: Ed25519PublicKey
) -> None:
    payload = checkpoint_payload(block)
    encoded = canonical_json(payload)
    if hashlib.sha256(encoded).digest() != block.checkpoint_hash or not signature_valid(
        public_key, payload, block.signature
    ):
        raise _Failure(block.first_id, f"checkpoint {block.block} is not signed by this key")
    expected_block = previous.block + 1 if previous is not None else 1
    expected_seq = previous.seq_to + 1 if previous is not None else 1
    expected_previous = previous.checkpoint_hash if previous is not None else None
    if (block.block, block.seq_from, block.previous_hash) != (
        expected_block,
        expected_seq,
        expected_previous,
    ):
        raise _Failure(
            block.first_id,
            f"checkpoint {block.block} does not follow checkpoint {expected_block - 1}",
        )


def _exported_by_number(
    exported: Sequence[dict[str, Any]], public_key: Ed25519PublicKey
) -> dict[int, dict[str, Any]]:
    """The exported checkpoints by number, each checked to be signed with this key."""
    by_number = {}
    for copy in exported:
        try:
            payload = {
                name: value
                for name, value in copy.items()
                if name not in ("checkpointHash", "signature")
            }
            signed = signature_valid(public_key, payload, base64.b64decode(copy["signature"]))
            by_number[int(copy["block"])] = copy
        except (KeyError, TypeError, ValueError):
            signed = False
        if not signed:
            raise _Failure(
                copy.get("firstId"),
                f"exported checkpoint {copy.get('block')} is not signed by this key",
            )
    return by_number


def _check_exported(block: Row[Any] | None, exported: dict[str, Any]) -> None:
    number = exported["block"]
    if block is None:
        raise _Failure(
            exported["firstId"],
            f"checkpoint {number} (entries {exported['seqFrom']}-{exported['seqTo']}) of the"
            " exported copy is missing from the database",
        )
    if exported.get("checkpointHash") != block.checkpoint_hash.hex():
        raise _Failure(exported["firstId"], f"checkpoint {number} differs from the exported copy")


def verify(
    connection: Connection,
    org: str,
    public_key: Ed25519PublicKey,
    exported: Sequence[dict[str, Any]] = (),
    after_block: int = 0,
) -> Verdict:
    """Check every sealed entry of ``org`` against its checkpoints (and exported copies), or
    only those of the checkpoints after ``after_block`` (verified before: it is the link
    the first new checkpoint must follow)."""
    # The entry lists are read one checkpoint at a time (``_check_block``).
    blocks = connection.execute(
        select(*SUMMARY_COLUMNS)
        .where(AuditCheckpoint.org == org, AuditCheckpoint.block >= after_block)
        .order_by(AuditCheckpoint.block)
    ).all()
    previous = None
    if blocks and blocks[0].block == after_block:
        previous, blocks = blocks[0], blocks[1:]
    last = blocks[-1] if blocks else previous
    unsealed = (
        connection.scalar(
            select(func.count()).select_from(entries_between(org, position_after(last)).subquery())
        )
        or 0
    )
    latest = public_checkpoint(last) if last is not None else None
    checked = removed = 0
    retention = None
    imports = _Imports()
    try:
        records = _retention_records(connection, org, public_key)
        retention = public_record(records[-1]) if records else None
        removed_before = records[-1].removed_before.timestamp() if records else None
        by_number = _exported_by_number(exported, public_key)
        for block in blocks:
            _check_signature(block, previous, public_key)
            if block.block in by_number:
                _check_exported(block, by_number[block.block])
            block_checked, block_removed = _check_block(
                connection, block, previous, removed_before, imports
            )
            checked += block_checked
            removed += block_removed
            previous = block
        for number in sorted(by_number):
            if number > (last.block if last is not None else 0):
                _check_exported(None, by_number[number])
    except _Failure as failure:
        checked += failure.verified
        return Verdict(
            "failed",
            checked,
            failure.entry_id,
            failure.reason,
            latest,
            unsealed,
            removed,
            retention,
        )
    if checked == 0 and removed == 0:
        reason = f"{unsealed} entries are not sealed yet" if unsealed else "no entries"
        return Verdict("no_data", 0, None, reason, latest, unsealed, retention=retention)
    return Verdict(
        "verified",
        checked,
        None,
        None,
        latest,
        unsealed,
        removed,
        retention,
        imports.entries,
        tuple(imports.records),
    )
