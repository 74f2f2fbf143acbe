"""An org's entries in chain order, and the horizon below which that order is final.

Entries are ordered by ``(txid, id)``: the writing transaction, then the id. A transaction
older than every transaction still running (``pg_snapshot_xmin`` of the current snapshot)
has committed or aborted, so no entry can appear behind a position below that horizon.
Sealing checkpoints and the feed both read the chain only below it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, cast, func, literal, select, tuple_

from insights_audit.models import XID8, AuditEntry

# The oldest transaction still running, as the current statement's snapshot sees it.
HORIZON = func.pg_snapshot_xmin(func.pg_current_snapshot())
# Before the first entry of any org.
START = ("0", "")


def position_key(position: tuple[str, str]) -> tuple[int, str]:
    """A position ``(txid, id)`` as a value that sorts in chain order."""
    return int(position[0]), position[1]


def text_xid(value: str) -> Any:
    """A transaction id given as decimal text, as an ``xid8`` value."""
    return cast(literal(value, Text), XID8())


def after(position: tuple[str, str]) -> ColumnElement[bool]:
    """Entries after ``position`` (``(txid, id)``) in chain order."""
    return tuple_(AuditEntry.txid, AuditEntry.id) > tuple_(text_xid(position[0]), position[1])


def up_to(position: tuple[str, str]) -> ColumnElement[bool]:
    """Entries at or before ``position`` in chain order."""
    return tuple_(AuditEntry.txid, AuditEntry.id) <= tuple_(text_xid(position[0]), position[1])


def read_in_chain_order(connection: Connection) -> None:
    """Have the rest of the transaction read the chain in index order, partition by partition
    (a merge of ``ix_audit_entries_chain`` scans), never by sorting everything after a
    position. A bulk load's entries share a few transaction ids, past which the planner
    cannot estimate: it then took "the next 10,000" for a handful of rows and sorted the whole
    rest of the chain, 5 s instead of 9 ms at 10M entries, which the statement timeout cut."""
    connection.exec_driver_sql("SET LOCAL enable_sort = off")


def current_horizon(connection: Connection) -> str:
    """The oldest transaction still running: every older one has ended."""
    return str(connection.scalar(select(cast(HORIZON, Text))))
