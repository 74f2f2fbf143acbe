"""Retention: whole month partitions older than the horizon are dropped, and each org's share
of every removal is kept as a signed record.

Only partitions whose upper bound is at or before the horizon (``AUDIT_RETENTION_DAYS``, at
least 30) and whose entries are all sealed are dropped, oldest first: an unsealed entry
holds its partition, and every newer one, back. Dropping takes the definer function
``audit_drop_partition`` (migration 0009), so the app role's background worker can apply
retention without DDL rights; it refuses a horizon under 30 days.

A record states the org, its number, the moment before which every entry was removed, the
partitions, the count, first and last entries, the checkpoints they were sealed in and the
chain hash after the last one; it is signed like a checkpoint and chained to the org's
previous record. Verification accepts a sealed entry as removed only when a valid record
says entries of its time are gone (the id carries its second), so entries that vanish any
other way still fail it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, Row, cast, delete, func, insert, select, text

from insights_audit.audit.chain_order import text_xid
from insights_audit.audit.keys import key_id
from insights_audit.db.orgs import chained_orgs
from insights_audit.db.unit_of_work import EVERY_ORG, set_tenant
from insights_audit.integrity.canonical import ZERO_HASH, canonical_json, chain_hash
from insights_audit.integrity.checkpoints import HASH_BYTES, ID_BYTES, chain_timestamp
from insights_audit.models import XID8, AuditCheckpoint, IdempotencyKey, RetentionRecord

MINIMUM_DAYS = 30
RECORD_VERSION = 1
BOUND = re.compile(r"FROM \((?:MINVALUE|'([^']+)')\) TO \('([^']+)'\)")

PARTITIONS = text(
    """
    SELECT c.relname, pg_get_expr(c.relpartbound, c.oid)
    FROM pg_inherits JOIN pg_class AS c ON c.oid = inhrelid
    WHERE inhparent = 'audit_entries'::regclass
    """
)


@dataclass(frozen=True)
class Partition:
    name: str
    upper: datetime


@dataclass(frozen=True)
class Plan:
    """What retention would do now: partitions to drop, and the first one held back."""

    drop: list[Partition]
    held: tuple[Partition, str] | None = None


def month_partitions(connection: Connection) -> list[Partition]:
    """The trail's range partitions, oldest first (the default partition is never dropped)."""
    found = []
    for row in connection.execute(PARTITIONS):
        match = BOUND.search(str(row[1]))
        if match:
            found.append(Partition(str(row[0]), datetime.fromisoformat(match.group(2))))
    return sorted(found, key=lambda partition: partition.upper)


SHARES = text("SELECT * FROM audit_partition_orgs(:name)")


def _shares(connection: Connection, partition: Partition) -> list[Row[Any]]:
    """Each org's share of ``partition``. The function answers for the transaction's org
    only, or across orgs for the trail's owner; the app role asks org by org (the orgs with
    API tokens: if another org has entries there, the drop refuses, as its record is
    missing)."""
    set_tenant(connection, EVERY_ORG)
    if connection.scalar(select(func.insights_audit_every_org())):
        return list(connection.execute(SHARES, {"name": partition.name}))
    shares = []
    for org in chained_orgs(connection):
        set_tenant(connection, org)
        shares += list(connection.execute(SHARES, {"name": partition.name}))
    return shares


def _last_sealed(connection: Connection, org: str) -> tuple[int, str] | None:
    set_tenant(connection, org)
    last = connection.execute(
        select(AuditCheckpoint.last_txid, AuditCheckpoint.last_id)
        .where(AuditCheckpoint.org == org)
        .order_by(AuditCheckpoint.block.desc())
        .limit(1)
    ).first()
    return (int(last.last_txid), last.last_id) if last is not None else None


def plan(connection: Connection, horizon: datetime) -> Plan:
    """The partitions entirely before ``horizon`` whose entries are all sealed, oldest first;
    the first that is not, and why, stops the plan."""
    drop: list[Partition] = []
    for partition in month_partitions(connection):
        if partition.upper > horizon:
            break
        unsealed = []
        for share in _shares(connection, partition):
            sealed = _last_sealed(connection, share.org)
            if sealed is None or (int(share.last_txid), share.chain_last_id) > sealed:
                unsealed.append(share.org)
        if unsealed:
            orgs = ", ".join(sorted(unsealed))
            return Plan(drop, (partition, f"entries of {orgs} are not sealed yet"))
        drop.append(partition)
    return Plan(drop)


def record_payload(record: Any) -> dict[str, Any]:
    """What a retention record states; its canonical JSON is what is signed."""

    def moment(value: datetime | None) -> str | None:
        return chain_timestamp(value) if value is not None else None

    return {
        "version": RECORD_VERSION,
        "org": record.org,
        "number": record.number,
        "removedBefore": moment(record.removed_before),
        "partitions": list(record.partitions),
        "entries": record.entries,
        "firstId": record.first_id,
        "lastId": record.last_id,
        "firstCreatedAt": moment(record.first_created_at),
        "lastCreatedAt": moment(record.last_created_at),
        "firstBlock": record.first_block,
        "lastBlock": record.last_block,
        "headHash": record.head_hash.hex() if record.head_hash else None,
        "previous": record.previous_hash.hex() if record.previous_hash else None,
        "removedAt": moment(record.removed_at),
        "keyId": record.key_id,
    }


def public_record(record: Any) -> dict[str, Any]:
    return {
        **record_payload(record),
        "recordHash": record.record_hash.hex(),
        "signature": base64.b64encode(record.signature).decode(),
    }


def _block_at_or_after(connection: Connection, org: str, txid: str, entry_id: str) -> Row[Any]:
    """The checkpoint that sealed the entry at chain position ``(txid, entry_id)``."""
    position = func.row(text_xid(txid), entry_id)
    sealed_up_to = func.row(cast(AuditCheckpoint.last_txid, XID8()), AuditCheckpoint.last_id)
    return connection.execute(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.org == org, sealed_up_to >= position)
        .order_by(AuditCheckpoint.block)
        .limit(1)
    ).one()


def _head_after(connection: Connection, org: str, block: Row[Any], entry_id: str) -> bytes:
    """The chain hash right after ``entry_id``, from its checkpoint's stored leaves."""
    previous = connection.scalar(
        select(AuditCheckpoint.head_hash).where(
            AuditCheckpoint.org == org, AuditCheckpoint.block == block.block - 1
        )
    )
    head = previous or ZERO_HASH
    wanted = bytes.fromhex(entry_id)
    for index in range(len(block.entry_ids) // ID_BYTES):
        leaf = block.entry_hashes[index * HASH_BYTES : (index + 1) * HASH_BYTES]
        head = chain_hash(head, leaf)
        if block.entry_ids[index * ID_BYTES : (index + 1) * ID_BYTES] == wanted:
            return head
    raise ValueError(f"entry {entry_id} is not in checkpoint {block.block}")


def _record(
    connection: Connection, share: Row[Any], partition: Partition, key: Ed25519PrivateKey
) -> dict[str, Any]:
    """The signed record of ``share`` (one org's entries in ``partition``), as column values."""
    org = share.org
    set_tenant(connection, org)
    last = connection.execute(
        select(RetentionRecord.number, RetentionRecord.record_hash)
        .where(RetentionRecord.org == org)
        .order_by(RetentionRecord.number.desc())
        .limit(1)
    ).first()
    first_block = _block_at_or_after(connection, org, share.first_txid, share.chain_first_id)
    last_block = _block_at_or_after(connection, org, share.last_txid, share.chain_last_id)
    values: dict[str, Any] = {
        "org": org,
        "number": (last.number + 1) if last else 1,
        "removed_before": partition.upper,
        "partitions": [partition.name],
        "entries": share.entries,
        "first_id": share.first_id,
        "last_id": share.last_id,
        "first_created_at": share.first_created_at,
        "last_created_at": share.last_created_at,
        "first_block": first_block.block,
        "last_block": last_block.block,
        "head_hash": _head_after(connection, org, last_block, share.chain_last_id),
        "removed_at": connection.scalar(select(func.now())),
        "key_id": key_id(key.public_key()),
        "previous_hash": last.record_hash if last else None,
    }
    signed = canonical_json(record_payload(_Record(values)))
    values["record_hash"] = hashlib.sha256(signed).digest()
    values["signature"] = key.sign(signed)
    return values


class _Record:
    """Column values read as a record's attributes."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)


def apply(
    transaction: Callable[[str | None], AbstractContextManager[Connection]],
    key: Ed25519PrivateKey,
    horizon: datetime,
    *,
    dry_run: bool = False,
) -> list[str]:
    """Remove what ``plan`` allows, a partition per transaction (its records and its drop
    commit together); lines saying what was (or, with ``dry_run``, would be) done."""
    with transaction(None) as connection:
        planned = plan(connection, horizon)
    lines = []
    for partition in planned.drop:
        with transaction(None) as connection:
            shares = _shares(connection, partition)
            if not dry_run:
                for share in shares:
                    connection.execute(
                        insert(RetentionRecord).values(**_record(connection, share, partition, key))
                    )
                connection.execute(
                    text("SELECT audit_drop_partition(:name, :horizon)"),
                    {"name": partition.name, "horizon": horizon},
                )
        count = sum(share.entries for share in shares)
        verb = "would remove" if dry_run else "removed"
        lines.append(
            f"{partition.name}: {verb} {count} entries of {len(shares)} orgs"
            f" (created before {partition.upper.isoformat()})"
        )
    if planned.held is not None:
        held, reason = planned.held
        lines.append(f"{held.name}: kept, {reason}")
    if not dry_run:
        with transaction(None) as connection:
            purged = connection.execute(
                delete(IdempotencyKey).where(
                    IdempotencyKey.created_at < func.now() - text("interval '24 hours'")
                )
            ).rowcount
        lines.append(f"purged {purged} expired idempotency keys")
    return lines
