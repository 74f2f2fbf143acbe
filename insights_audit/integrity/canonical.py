"""The canonical form of an entry and the hash chain over an org's entries.

An org's entries are chained in ``(txid, id)`` order, ``txid`` being the writing transaction.
Each entry's *leaf* is the SHA-256 of its canonical JSON (every column of the table, see
``canonical_entry``); the chain hash after entry k is ``SHA-256(h[k-1] || leaf[k])`` with
``h[0]`` 32 zero bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, Text, cast, func

from insights_audit.models import AuditEntry

ZERO_HASH = bytes(32)

CHAIN_COLUMNS = tuple(AuditEntry.__table__.columns)
# Their names in the canonical form: the API's camelCase (``target_id`` -> ``targetId``).
CANONICAL_KEYS = tuple(
    re.sub(r"_([a-z])", lambda match: match.group(1).upper(), column.key)
    for column in CHAIN_COLUMNS
)
DETAILS = CHAIN_COLUMNS.index(AuditEntry.__table__.c.details)
# The canonical form's version. 1: the columns before who-wrote-it was recorded (checkpoints
# sealed until migration 0006); 2: every column. A leaf is computed in its checkpoint's form.
CHAIN_VERSION = 2
ADDED_IN_VERSION_2 = ("recordedBy", "recordedByToken")
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


class NotInForm(ValueError):
    """An entry has a value the canonical form it was sealed with cannot cover."""


def canonical_entry(row: Row[Any] | Sequence[Any], version: int = CHAIN_VERSION) -> bytes:
    """The canonical JSON of one entry, every column of ``version`` included, from a row of
    ``CHAIN_SELECT`` (``targetId``, ``createdAt`` and ``txid`` as text, ``details`` as JSON
    text or parsed)."""
    record = dict(zip(CANONICAL_KEYS, row, strict=True))
    if version == 1:
        added = [record.pop(key) for key in ADDED_IN_VERSION_2]
        # Form 1 predates these columns: a value in them was set after sealing.
        if any(value is not None for value in added):
            raise NotInForm("a column added after sealing has a value")
    details = row[DETAILS]
    record["details"] = json.loads(details) if isinstance(details, str) else details
    return canonical_json(record)


def leaf_hash(row: Row[Any] | Sequence[Any], version: int = CHAIN_VERSION) -> bytes:
    return hashlib.sha256(canonical_entry(row, version)).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(previous + leaf).digest()
