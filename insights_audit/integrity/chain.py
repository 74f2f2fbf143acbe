"""Tamper evidence: a per-org hash chain over every field of every entry, and signed checkpoints.

The chain. An org's entries are chained in ``(txid, id)`` order, ``txid`` being the writing
transaction. Each entry's *leaf* is the SHA-256 of its canonical JSON (every column, see
``canonical_entry``); the chain hash after entry k is ``SHA-256(h[k-1] || leaf[k])`` with
``h[0]`` 32 zero bytes.

Sealing. ``seal`` appends the entries written since the last checkpoint, in batches of at most
``SEAL_BATCH``, each as one checkpoint signed with Ed25519. It only takes entries whose
transaction is older than every transaction still running (``pg_snapshot_xmin``), so an entry
can never commit behind a sealed position, and writers never wait for it: they only insert.
Sealers of one org take turns on an advisory lock.

Checkpoints. A checkpoint states the org, its number, the sequence range, the first and last
entry id, the chain's head hash, the previous checkpoint's hash and the key id; the signed
bytes are its canonical JSON. It also keeps the ids and leaves of its entries, so that
``verify`` names the first entry that differs. Exported as files (``export``), checkpoints
still prove what was there after the entries and their checkpoints are deleted from the
database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from flask import Flask
from sqlalchemy import Connection, Row, Text, cast, func, insert, literal, select, text, tuple_

from insights_audit.aggregates import orgs_with_entries
from insights_audit.config import Settings
from insights_audit.extensions import EVERY_ORG, set_tenant
from insights_audit.models import XID8, ApiToken, AuditCheckpoint, AuditEntry

SIGNING_KEY = "insights_audit.signing_key"
CURSOR_KEY = "insights_audit.cursor_key"
SEAL_BATCH = 10_000
ZERO_HASH = bytes(32)
ID_BYTES = 12
HASH_BYTES = 32
FORMAT_VERSION = 1

# Every column of the table, in table order: a column added later is chained as well.
CHAIN_COLUMNS = tuple(AuditEntry.__table__.columns)
# Their names in the canonical form: the API's camelCase (``target_id`` -> ``targetId``).
CANONICAL_KEYS = tuple(
    re.sub(r"_([a-z])", lambda match: match.group(1).upper(), column.key)
    for column in CHAIN_COLUMNS
)
DETAILS = CHAIN_COLUMNS.index(AuditEntry.__table__.c.details)
# Timestamp of the canonical form: UTC with all six fractional digits, every stored
# microsecond covered (``2026-11-27T06:30:00.123456Z``).
CHAIN_TIME_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def _as_chain_text(column: Any) -> Any:
    """The column as the canonical form writes it, formatted by PostgreSQL (faster)."""
    if column.key == "created_at":
        utc = func.timezone("UTC", column)
        return func.to_char(utc, CHAIN_TIME_FORMAT).label(column.key)
    if column.key in ("target_id", "details", "txid"):
        return cast(column, Text).label(column.key)
    return column


CHAIN_SELECT = tuple(_as_chain_text(column) for column in CHAIN_COLUMNS)


# Keys sorted by code point, no whitespace, non-ASCII escaped as ``\\uXXXX``; one encoder,
# built once.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
)


def canonical_json(value: Any) -> bytes:
    """The canonical JSON of ``value`` (see ``_CANONICAL``), as UTF-8 bytes."""
    return _CANONICAL.encode(value).encode()


def chain_timestamp(moment: datetime) -> str:
    """UTC with all six fractional digits, so that every stored microsecond is covered."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_entry(row: Row[Any] | Sequence[Any]) -> bytes:
    """The canonical JSON of one entry, every column included, from a row of ``CHAIN_SELECT``
    (``targetId``, ``createdAt`` and ``txid`` as text, ``details`` as JSON text or parsed)."""
    record = dict(zip(CANONICAL_KEYS, row, strict=True))
    details = row[DETAILS]
    record["details"] = json.loads(details) if isinstance(details, str) else details
    return canonical_json(record)


def leaf_hash(row: Row[Any] | Sequence[Any]) -> bytes:
    return hashlib.sha256(canonical_entry(row)).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(previous + leaf).digest()


# --- keys -------------------------------------------------------------------------------------


def _create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` unless another process does so first.

    The key is written to a private temporary file that is then linked into place: a
    concurrent reader sees no file or a whole one, never an empty one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    staged = Path(handle.name)  # created with mode 0600
    try:
        os.link(staged, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        staged.unlink()


def load_signing_key(key: str | None, key_file: str) -> Ed25519PrivateKey:
    """The Ed25519 key: base64 of a 32-byte seed, given or read from ``key_file``.

    A missing key file is created with a new random key, readable by its owner only.
    """
    encoded = key
    if not encoded:
        path = Path(key_file)
        if not path.exists():
            _create_key_file(path)
        encoded = path.read_text().strip()
    try:
        seed = base64.b64decode(encoded, validate=True)
    except ValueError as exc:
        raise RuntimeError("AUDIT_SIGNING_KEY must be base64") from exc
    if len(seed) != 32:
        raise RuntimeError("AUDIT_SIGNING_KEY must be 32 bytes (base64 of a random seed)")
    return Ed25519PrivateKey.from_private_bytes(seed)


def signing_key(settings: Settings) -> Ed25519PrivateKey:
    return load_signing_key(settings.audit_signing_key, settings.audit_signing_key_file)


def app_signing_key(app: Flask) -> Ed25519PrivateKey:
    """The app's key, loaded (or created) on first use."""
    key: Ed25519PrivateKey | None = app.extensions.get(SIGNING_KEY)
    if key is None:
        key = app.extensions[SIGNING_KEY] = signing_key(app.config["SETTINGS"])
    return key


def derive_cursor_key(signing: Ed25519PrivateKey) -> bytes:
    """The HMAC key of trail cursors, derived from the signing key."""
    seed = signing.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return hashlib.sha256(b"insights-audit cursor" + bytes(1) + seed).digest()


def cursor_key(app: Flask) -> bytes:
    key: bytes | None = app.extensions.get(CURSOR_KEY)
    if key is None:
        key = app.extensions[CURSOR_KEY] = derive_cursor_key(app_signing_key(app))
    return key


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_payload(checkpoint: AuditCheckpoint | Row[Any]) -> dict[str, Any]:
    """What a checkpoint states; its canonical JSON is what is signed and hashed."""
    return {
        "version": FORMAT_VERSION,
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


def _signature_valid(public_key: Ed25519PublicKey, payload: dict[str, Any], sig: bytes) -> bool:
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


def _last_checkpoint(connection: Connection, org: str) -> Row[Any] | None:
    return connection.execute(
        select(*SUMMARY_COLUMNS)
        .where(AuditCheckpoint.org == org)
        .order_by(AuditCheckpoint.block.desc())
        .limit(1)
    ).first()


def _after(last: Row[Any] | None) -> tuple[str, str]:
    """The chain position after which entries are not sealed yet."""
    return (last.last_txid, last.last_id) if last is not None else ("0", "")


def _entries_between(org: str, after: tuple[str, str], upto: tuple[str, str] | None = None) -> Any:
    position = tuple_(AuditEntry.txid, AuditEntry.id)
    query = (
        select(*CHAIN_SELECT)
        .where(AuditEntry.org == org)
        .where(position > tuple_(text_xid(after[0]), after[1]))
        .order_by(AuditEntry.txid, AuditEntry.id)
    )
    if upto is not None:
        query = query.where(position <= tuple_(text_xid(upto[0]), upto[1]))
    return query


def text_xid(value: str) -> Any:
    return cast(literal(value, Text), XID8())


def seal_batch(
    connection: Connection, org: str, key: Ed25519PrivateKey, horizon: str | None = None
) -> AuditCheckpoint | None:
    """Seal up to ``SEAL_BATCH`` unsealed entries of ``org`` as one checkpoint, in the caller's
    transaction; None when nothing is ready.

    Only entries of transactions older than ``horizon`` (default: every running transaction)
    are taken: they have all committed or aborted, so none can appear behind the seal later.
    """
    set_tenant(connection, org)
    connection.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(f"seal:{org}", 0))))
    horizon = horizon or current_horizon(connection)
    last = _last_checkpoint(connection, org)
    rows = connection.execute(
        _entries_between(org, _after(last))
        .where(AuditEntry.txid < text_xid(str(horizon)))
        .limit(SEAL_BATCH)
    ).all()
    if not rows:
        return None
    head = last.head_hash if last is not None else ZERO_HASH
    leaves = []
    for row in rows:
        leaf = leaf_hash(row)
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
    )
    payload = canonical_json(checkpoint_payload(checkpoint))
    checkpoint.checkpoint_hash = hashlib.sha256(payload).digest()
    checkpoint.signature = key.sign(payload)
    values = {column.key: getattr(checkpoint, column.key) for column in AuditCheckpoint.__table__.c}
    connection.execute(insert(AuditCheckpoint).values(**values))
    return checkpoint


def current_horizon(connection: Connection) -> str:
    """The oldest transaction still running: every older one has ended."""
    return str(connection.scalar(text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text")))


def seal(
    connection_factory: Callable[[], AbstractContextManager[Connection]],
    org: str,
    key: Ed25519PrivateKey,
) -> list[AuditCheckpoint]:
    """Seal the entries of ``org`` written before the call, one committed checkpoint per batch.

    Entries written meanwhile wait for the next call, so that busy writers cannot keep it going.
    """
    with connection_factory() as connection:
        horizon = current_horizon(connection)
    sealed: list[AuditCheckpoint] = []
    while True:
        with connection_factory() as connection:
            checkpoint = seal_batch(connection, org, key, horizon)
        if checkpoint is None:
            return sealed
        sealed.append(checkpoint)


# --- verification -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: ``verified``, ``failed`` or ``no_data``."""

    status: str
    checked: int
    first_bad_id: str | None = None
    reason: str | None = None
    checkpoint: dict[str, Any] | None = None
    unsealed: int = 0


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


def _check_block(connection: Connection, block: Row[Any], previous: Row[Any] | None) -> int:
    """Compare one checkpoint's entries with the table; returns how many were checked."""
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
        _entries_between(block.org, _after(previous), (block.last_txid, block.last_id))
    ).all()
    present = {row.id for row in rows}
    head = previous.head_hash if previous is not None else ZERO_HASH
    for index, entry_id in enumerate(ids):
        row = rows[index] if index < len(rows) else None
        if entry_id not in present:
            raise _Failure(
                entry_id,
                f"sealed entry {block.seq_from + index} is missing from its place in the chain"
                " (deleted, or its org, txid or id changed)",
                index,
            )
        if row is None or row.id != entry_id:
            # The sealed entry is further on: this one was put in front of it.
            forged = row.id if row is not None else entry_id
            raise _Failure(forged, FORGED, index)
        if leaf_hash(row) != leaves[index]:
            raise _Failure(entry_id, "entry differs from what was sealed (a field changed)", index)
        head = chain_hash(head, leaves[index])
    if len(rows) > len(ids):
        raise _Failure(rows[len(ids)].id, FORGED, len(ids))
    if head != block.head_hash:
        raise _Failure(
            block.first_id, f"entry hashes do not chain to checkpoint {block.block}'s head"
        )
    return len(ids)


def _check_signature(
    block: Row[Any], previous: Row[Any] | None, public_key: Ed25519PublicKey
) -> None:
    payload = checkpoint_payload(block)
    encoded = canonical_json(payload)
    if hashlib.sha256(encoded).digest() != block.checkpoint_hash or not _signature_valid(
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
            signed = _signature_valid(public_key, payload, base64.b64decode(copy["signature"]))
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
) -> Verdict:
    """Check every sealed entry of ``org`` against its checkpoints (and exported copies)."""
    set_tenant(connection, org)
    # The entry lists are read one checkpoint at a time (``_check_block``).
    blocks = connection.execute(
        select(*SUMMARY_COLUMNS).where(AuditCheckpoint.org == org).order_by(AuditCheckpoint.block)
    ).all()
    last = blocks[-1] if blocks else None
    unsealed = (
        connection.scalar(
            select(func.count()).select_from(_entries_between(org, _after(last)).subquery())
        )
        or 0
    )
    latest = public_checkpoint(last) if last is not None else None
    checked = 0
    previous = None
    try:
        by_number = _exported_by_number(exported, public_key)
        for block in blocks:
            _check_signature(block, previous, public_key)
            if block.block in by_number:
                _check_exported(block, by_number[block.block])
            checked += _check_block(connection, block, previous)
            previous = block
        for number in sorted(by_number):
            if number > (last.block if last is not None else 0):
                _check_exported(None, by_number[number])
    except _Failure as failure:
        checked += failure.verified
        return Verdict("failed", checked, failure.entry_id, failure.reason, latest, unsealed)
    if checked == 0:
        reason = f"{unsealed} entries are not sealed yet" if unsealed else "no entries"
        return Verdict("no_data", 0, None, reason, latest, unsealed)
    return Verdict("verified", checked, None, None, latest, unsealed)


# --- export -----------------------------------------------------------------------------------


def org_directory(root: Path, org: str) -> Path:
    return root / quote(org, safe="")


def export(connection: Connection, org: str, root: Path) -> int:
    """Write every checkpoint of ``org`` missing from ``root`` as ``<org>/<block>.json``."""
    set_tenant(connection, org)
    directory = org_directory(root, org)
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for block in connection.execute(
        select(*SUMMARY_COLUMNS).where(AuditCheckpoint.org == org).order_by(AuditCheckpoint.block)
    ):
        path = directory / f"{block.block:012d}.json"
        if path.exists():
            continue
        path.write_text(json.dumps(public_checkpoint(block), indent=2, sort_keys=True) + "\n")
        written += 1
    return written


def read_exported(root: Path, org: str) -> list[dict[str, Any]]:
    directory = org_directory(root, org)
    if not directory.is_dir():
        return []
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def exported_orgs(root: Path) -> Iterator[str]:
    for directory in sorted(root.iterdir()) if root.is_dir() else ():
        if directory.is_dir():
            yield unquote(directory.name)


def chained_orgs(connection: Connection) -> list[str]:
    """The orgs to seal or verify.

    The tables' owner sees every org with entries or checkpoints. The app role (the
    background sealer in the service) may not look across orgs: it gets the orgs that have
    API tokens, which is every org the API writes for; entries loaded otherwise are sealed
    by ``insights-audit audit checkpoint`` as the owner.
    """
    orgs = set(connection.scalars(select(ApiToken.org).distinct()))
    set_tenant(connection, EVERY_ORG)
    if connection.scalar(select(func.insights_audit_every_org())):
        orgs.update(orgs_with_entries(connection))
        orgs.update(connection.scalars(select(AuditCheckpoint.org).distinct()))
    return sorted(orgs)
