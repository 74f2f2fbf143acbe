"""Audit trail commands and reads, each given the unit of work it runs in."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Row, select

from insights_audit.audit.entries import ENTRY_INSERT, Actor, RequestMeta, entry_params
from insights_audit.audit.view_counts import dashboard_name_upsert, record_view
from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.errors import NotFound, TooManyRequests
from insights_audit.models import VIEW_ACTION, VIEW_TYPE
from insights_audit.trail import queries
from insights_audit.trail.cursors import TrailPosition
from insights_audit.trail.queries import EntryPage, TrailFilter
from insights_audit.trail.schemas import search_words

AUDIT_LOG_NOT_FOUND = "Audit log not found"
EXPORTS_BUSY = "Too many exports are running - try again later"
EXPORT_RETRY_AFTER_SECONDS = 30


def record_entry(
    db: Connection,
    actor: Actor,
    type_: str,
    action: str,
    target_id: uuid.UUID,
    details: dict[str, Any],
    meta: RequestMeta,
) -> Row[Any]:
    """Append one entry in one statement; a dashboard view also counts, as a recorded view does."""
    name = details.get("name") if type_ == "dashboard" else None
    name = name if isinstance(name, str) else None
    if (type_, action) == (VIEW_TYPE, VIEW_ACTION):
        return record_view(db, actor, target_id, name, details, meta)
    params = entry_params(actor, type_, action, target_id, details, meta)
    statement = select(ENTRY_INSERT.cte("entry"))
    if name is not None:
        statement = statement.add_cte(dashboard_name_upsert(actor.org, target_id, name).cte("name"))
    return db.execute(statement, params).one()


def entry(work: UnitOfWork, entry_id: str) -> str:
    """The entry as one JSON object; a 404 unless the work's org has it."""
    found = queries.entry_by_id(work, entry_id)
    if found is None:
        raise NotFound(AUDIT_LOG_NOT_FOUND)
    return found


def trail_page(
    work: UnitOfWork,
    type_: str,
    target_id: uuid.UUID,
    limit: int,
    cursor: TrailPosition | None,
    **filters: Any,
) -> tuple[str, TrailPosition | None]:
    """One page of a target's entries, newest first, as a JSON array, and the position after
    it if there are more."""
    page = queries.trail_page(
        work,
        type_,
        target_id,
        limit=limit,
        after=cursor,
        **filters,
    )
    return _with_position(page)


def _with_position(page: EntryPage) -> tuple[str, TrailPosition | None]:
    return page.data, TrailPosition(*page.last) if page.more else None


def trail_filter(query: dict[str, Any]) -> TrailFilter:
    """The filter a search or export query names."""
    return TrailFilter(
        types=tuple(query.get("type", ())),
        actions=tuple(query.get("action", ())),
        target_id=query.get("targetId"),
        user_ids=tuple(query.get("userId", ())),
        since=query.get("since"),
        until=query.get("until"),
        words=search_words(query.get("q", "")),
    )


def search_page(
    work: UnitOfWork,
    wanted: TrailFilter,
    limit: int,
    cursor: TrailPosition | None,
    concurrency: int,
) -> tuple[str, TrailPosition | None]:
    """One page of the org's entries that ``wanted`` keeps, newest first, as a JSON array,
    and the position after it if there are more. A search with words waits its turn among
    the org's ``concurrency`` at once: an org searching in a loop keeps at most that many
    of the database's cores busy, and every other read gets the rest."""
    if wanted.words:
        queries.wait_for_search_slot(work.connection, work.org, concurrency)
    page = queries.search_page(work.connection, work.org, wanted, limit=limit, after=cursor)
    return _with_position(page)


def begin_export(work: UnitOfWork, concurrency: int) -> None:
    """Begin the snapshot the export reads (``work`` is one), holding one of the org's
    ``concurrency`` export slots; a 429 when every slot is taken."""
    if not queries.take_export_slot(work.connection, work.org, concurrency):
        raise TooManyRequests(EXPORTS_BUSY, EXPORT_RETRY_AFTER_SECONDS)


def feed_page(
    work: UnitOfWork, position: tuple[str, str], limit: int
) -> tuple[str, tuple[str, str], bool, int]:
    """The entries after ``position`` in chain order that no transaction can precede any
    more, as a JSON array; the position after them (``position`` itself when there are none);
    whether more are ready; and how many entries the array holds."""
    page = queries.feed_page(work.connection, work.org, position, limit)
    if page.last:
        position = (str(page.last[0]), page.last[1])
    return page.data, position, page.more, page.count
