"""SQL of the audit trail: reading entries back (the insert lives in ``entries``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    Select,
    Text,
    bindparam,
    cast,
    func,
    or_,
    select,
    tuple_,
)

from insights_audit import chain_order
from insights_audit.chain_order import HORIZON
from insights_audit.cursors import TrailPosition
from insights_audit.entries import ENTRY_COLUMNS, RECORDED_BY
from insights_audit.models import AuditEntry

# The id's first 4 bytes are the second the entry was created in: bounding created_at to it
# lets PostgreSQL read one month partition (pk_audit_entries is (id, created_at)).
ENTRY_BY_ID = select(*ENTRY_COLUMNS).where(
    AuditEntry.id == bindparam("entry_id"),
    AuditEntry.org == bindparam("org"),
    AuditEntry.created_at >= bindparam("second"),
    AuditEntry.created_at < bindparam("next_second"),
)
ONE_SECOND = timedelta(seconds=1)


def entry_by_id(connection: Connection, org: str, entry_id: str) -> Row[Any] | None:
    second = datetime.fromtimestamp(int(entry_id[:8], 16), UTC)
    params = {
        "org": org,
        "entry_id": entry_id,
        "second": second,
        "next_second": second + ONE_SECOND,
    }
    return connection.execute(ENTRY_BY_ID, params).one_or_none()


@cache
def _trail_query(after: bool, since: bool, until: bool, action: bool, user_id: bool) -> Select[Any]:
    """The trail query of one combination of filters, built once (ix_audit_entries_trail)."""
    query = select(*ENTRY_COLUMNS).where(
        AuditEntry.org == bindparam("org"),
        AuditEntry.type == bindparam("type"),
        AuditEntry.target_id == bindparam("target_id"),
    )
    if after:
        query = query.where(
            tuple_(AuditEntry.created_at, AuditEntry.id)
            < tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    if since:
        query = query.where(AuditEntry.created_at >= bindparam("since"))
    if until:
        query = query.where(AuditEntry.created_at < bindparam("until"))
    if action:
        query = query.where(AuditEntry.action == bindparam("action"))
    if user_id:
        query = query.where(AuditEntry.user_id == bindparam("user_id"))
    return query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(
        bindparam("limit")
    )


def trail_page(
    connection: Connection,
    org: str,
    type_: str,
    target_id: uuid.UUID,
    *,
    limit: int,
    after: TrailPosition | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    user_id: str | None = None,
) -> list[Row[Any]]:
    """Up to ``limit + 1`` entries of a target, newest first."""
    query = _trail_query(
        after is not None,
        since is not None,
        until is not None,
        action is not None,
        user_id is not None,
    )
    params: dict[str, Any] = {
        "org": org,
        "type": type_,
        "target_id": target_id,
        "limit": limit + 1,
        "since": since,
        "until": until,
        "action": action,
        "user_id": user_id,
    }
    if after is not None:
        params.update(after_created_at=after.created_at, after_id=after.id)
    return list(connection.execute(query, params))


@dataclass(frozen=True)
class TrailFilter:
    """What a search or an export keeps of the org's trail (every part optional, ANDed)."""

    types: tuple[str, ...] = ()
    # Exact actions, or prefixes ending in ``*``.
    actions: tuple[str, ...] = ()
    target_id: uuid.UUID | None = None
    user_ids: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    # Words that must all occur in the entry's searchable text (``audit_search_text``).
    words: tuple[str, ...] = ()


# The searchable text of an entry: the expression ``ix_audit_entries_text`` indexes.
SEARCH_TEXT = func.audit_search_text(
    AuditEntry.action, AuditEntry.user_id, AuditEntry.user_email, AuditEntry.details
)


def _like_escaped(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_conditions(org: str, wanted: TrailFilter) -> list[ColumnElement[bool]]:
    """The WHERE conditions of ``wanted`` on ``org``'s entries."""
    conditions: list[ColumnElement[bool]] = [AuditEntry.org == org]
    if wanted.types:
        conditions.append(AuditEntry.type.in_(wanted.types))
    if wanted.actions:
        exact = [action for action in wanted.actions if not action.endswith("*")]
        matches: list[ColumnElement[bool]] = [AuditEntry.action.in_(exact)] if exact else []
        matches += [
            AuditEntry.action.startswith(action[:-1], autoescape=True)
            for action in wanted.actions
            if action.endswith("*")
        ]
        conditions.append(or_(*matches))
    if wanted.target_id is not None:
        conditions.append(AuditEntry.target_id == wanted.target_id)
    if wanted.user_ids:
        conditions.append(AuditEntry.user_id.in_(wanted.user_ids))
    if wanted.since is not None:
        conditions.append(AuditEntry.created_at >= wanted.since)
    if wanted.until is not None:
        conditions.append(AuditEntry.created_at < wanted.until)
    # Lowercased by PostgreSQL, as the indexed text is: one notion of case for both.
    conditions += [
        SEARCH_TEXT.like(func.lower(f"%{_like_escaped(word)}%"), escape="\\")
        for word in wanted.words
    ]
    return conditions


def search_page(
    connection: Connection,
    org: str,
    wanted: TrailFilter,
    *,
    limit: int,
    after: TrailPosition | None = None,
) -> list[Row[Any]]:
    """Up to ``limit + 1`` of the org's entries that ``wanted`` keeps, newest first."""
    query = select(*ENTRY_COLUMNS).where(*filter_conditions(org, wanted))
    if after is not None:
        query = query.where(
            tuple_(AuditEntry.created_at, AuditEntry.id) < tuple_(after.created_at, after.id)
        )
    query = query.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc()).limit(limit + 1)
    return list(connection.execute(query))


# The entry as the export writes it: text columns, the timestamp in the API's format.
EXPORT_COLUMNS = (
    AuditEntry.id,
    AuditEntry.type,
    AuditEntry.action,
    cast(AuditEntry.target_id, Text).label("target_id"),
    AuditEntry.user_id,
    AuditEntry.user_email,
    RECORDED_BY,
    cast(AuditEntry.details, Text).label("details"),
    func.to_char(
        func.timezone("UTC", AuditEntry.created_at), 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'
    ).label("created_at"),
    AuditEntry.request_id,
    AuditEntry.ip,
    AuditEntry.user_agent,
)


def export_query(org: str, wanted: TrailFilter) -> Select[Any]:
    """The org's entries that ``wanted`` keeps, oldest first (ix_audit_entries_time backwards)."""
    return (
        select(*EXPORT_COLUMNS)
        .where(*filter_conditions(org, wanted))
        .order_by(AuditEntry.created_at, AuditEntry.id)
    )


def feed_page(
    connection: Connection, org: str, position: tuple[str, str], limit: int
) -> list[Row[Any]]:
    """Up to ``limit + 1`` of the org's entries after ``position`` in chain order, only below
    the horizon (ix_audit_entries_chain): none can commit behind them later."""
    query = (
        select(*ENTRY_COLUMNS, cast(AuditEntry.txid, Text).label("txid"))
        .where(AuditEntry.org == org, chain_order.after(position), AuditEntry.txid < HORIZON)
        .order_by(AuditEntry.txid, AuditEntry.id)
        .limit(limit + 1)
    )
    return list(connection.execute(query))
