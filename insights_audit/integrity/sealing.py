"""Sealing: the entries written since the last checkpoint become new signed checkpoints.

``seal`` takes only entries whose transaction is older than every transaction still running
(``pg_snapshot_xmin``), so an entry can never commit behind a sealed position, and writers
never wait for it: they only insert. Sealers of one org take turns on an advisory lock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, func, insert, select

from insights_audit.audit.chain_order import current_horizon, read_in_chain_order, text_xid
from insights_audit.audit.keys import key_id
from insights_audit.integrity.canonical import (
    CHAIN_VERSION,
    ZERO_HASH,
    canonical_json,
    chain_hash,
    leaf_hash,
)
from insights_audit.integrity.checkpoints import (
    checkpoint_payload,
    entries_between,
    last_checkpoint,
    position_after,
)
from insights_audit.models import AuditCheckpoint, AuditEntry

SEAL_BATCH = 10_000


def seal_batch(
    connection: Connection,
    org: str,
    key: Ed25519PrivateKey,
    horizon: str | None = None,
    version: int = CHAIN_VERSION,
) -> AuditCheckpoint | None:
    """Seal up to ``SEAL_BATCH`` unsealed entries of ``org`` as one checkpoint, in the caller's
    transaction on ``org``; None when nothing is ready.

    Only entries of transactions older than ``horizon`` (default: every running transaction)
    are taken: they have all committed or aborted, so none can appear behind the seal later.
    """
    connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"seal:{org}", 0))))
    horizon = horizon or current_horizon(connection)
    last = last_checkpoint(connection, org)
    read_in_chain_order(connection)
    rows = connection.execute(
        entries_between(org, position_after(last))
        .where(AuditEntry.txid < text_xid(str(horizon)))
        .limit(SEAL_BATCH)
    ).all()
    if not rows:
        return None
    head = last.head_hash if last is not None else ZERO_HASH
    leaves = []
    for row in rows:
        leaf = leaf_hash(row, version)
        leaves.append(leaf)
        head = chain_hash(head, leaf)
    seq_from = (last.seq_to + 1) if last is not None else 1
    public_key = key.public_key()
    checkpoint = AuditCheckpoint(
        org=org,
        block=(last.block + 1) if last is not None else 1,
        seq_from=seq_from,
        seq_to=seq_from + len(rows) - 1,
        first_id=rows[0].id,
        last_id=rows[-1].id,
        last_txid=str(rows[-1].txid),
        entry_ids=b"".join(bytes.fromhex(row.id) for row in rows),
        entry_hashes=b"".join(leaves),
        head_hash=head,
        previous_hash=last.checkpoint_hash if last is not None else None,
        sealed_at=connection.scalar(select(func.now())),
        key_id=key_id(public_key),
        version=version,
    )
    payload = canonical_json(checkpoint_payload(checkpoint))
    checkpoint.checkpoint_hash = hashlib.sha256(payload).digest()
    checkpoint.signature = key.sign(payload)
    values = {column.key: getattr(checkpoint, column.key) for column in AuditCheckpoint.__table__.c}
    connection.execute(insert(AuditCheckpoint).values(**values))
    return checkpoint


@dataclass(frozen=True)
class Sealed:
    """How many checkpoints a call of ``seal`` wrote, and how many entries they sealed."""

    checkpoints: int = 0
    entries: int = 0


def seal(
    transaction: Callable[[str], AbstractContextManager[Connection]],
    org: str,
    key: Ed25519PrivateKey,
) -> Sealed:
    """Seal the entries of ``org`` written before the call, one committed checkpoint per batch.

    Entries written meanwhile wait for the next call, so that busy writers cannot keep it going.
    ``transaction(org)`` gives each batch its own committed unit of work on ``org``. Only
    counts are kept: a checkpoint's lists take 44 bytes an entry, 44 MB for a million.
    """
    with transaction(org) as connection:
        horizon = current_horizon(connection)
    checkpoints = entries = 0
    while True:
        with transaction(org) as connection:
            checkpoint = seal_batch(connection, org, key, horizon)
        if checkpoint is None:
            return Sealed(checkpoints, entries)
        checkpoints += 1
        entries += checkpoint.seq_to - checkpoint.seq_from + 1
