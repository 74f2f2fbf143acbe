"""SQL of the audit trail: reading entries back (the insert lives in ``entries``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    DateTime,
    Integer,
    Row,
    Select,
    SQLColumnExpression,
    Text,
    UnaryExpression,
    Uuid,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.sql import operators
from sqlalchemy.sql.util import ClauseAdapter

from insights_audit.audit import chain_order
from insights_audit.audit.chain_order import HORIZON
from insights_audit.audit.entries import ENTRY_JSON, WRITER
from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.json_sql import (
    api_timestamp,
    constant,
    csv_cell,
    joined,
    json_list,
    quoted,
)
from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.models import VIEW_ACTION, AuditEntry, is_view
from insights_audit.trail.cursors import TrailPosition


@dataclass(frozen=True)
class EntryPage:
    """A page of entries as PostgreSQL wrote it."""

    # The JSON array of the page's entries, in order, as the API shows them.
    data: str
    # How many entries the page holds.
    count: int
    # Whether an entry follows the page.
    more: bool
    # The order key of the page's last entry (empty when the page is empty).
    last: tuple[Any, ...]


def json_page(
    where: Sequence[ColumnElement[bool]], order: Sequence[SQLColumnExpression[Any]]
) -> Select[Any]:
    """The entries ``where`` keeps, in ``order``, as one row: the first ``:limit`` of them as
    one JSON array (``EntryPage``). The order key travels with each entry so that the array
    is aggregated in an explicit order, and a top-N sort or an index scan still stops at
    ``:limit + 1`` rows."""
    keys = [column.element if isinstance(column, UnaryExpression) else column for column in order]
    columns: list[ColumnElement[Any]] = [ENTRY_JSON.label("entry")]
    columns += [key.label(f"key_{n}") for n, key in enumerate(keys)]
    page = select(*columns).where(*where).order_by(*order).limit(bindparam("limit") + 1)
    return _json_page_of(page, order)


def _json_page_of(page_rows: Select[Any], order: Sequence[SQLColumnExpression[Any]]) -> Select[Any]:
    """``json_page`` of ``page_rows``: the entries (``entry``) and their order keys
    (``key_0``...) in ``order``, at most ``:limit + 1`` of them."""
    page = page_rows.subquery("page")
    page_order = [_reorder(column, page.c[f"key_{n}"]) for n, column in enumerate(order)]
    ranked = select(page, func.row_number().over(order_by=page_order).label("n")).subquery("ranked")
    in_page = ranked.c.n <= bindparam("limit")
    last_first = ranked.c.n.desc()

    def last(key: ColumnElement[Any]) -> ColumnElement[Any]:
        values = func.array_agg(aggregate_order_by(key, last_first)).filter(in_page)
        return type_coerce(values, ARRAY(key.type))[1]

    entries = func.string_agg(ranked.c.entry, aggregate_order_by(constant(","), ranked.c.n))
    data = json_list(entries.filter(in_page))
    return select(
        data.label("data"),
        func.count().filter(in_page).label("entries"),
        (func.count() > bindparam("limit")).label("more"),
        *(last(ranked.c[f"key_{n}"]) for n in range(len(order))),
    )


def _reorder(column: SQLColumnExpression[Any], key: ColumnElement[Any]) -> ColumnElement[Any]:
    """``key`` in the direction ``column`` (a column, or a column's ``desc()``) sorts."""
    descending = isinstance(column, UnaryExpression) and column.modifier is operators.desc_op
    return key.desc() if descending else key


def read_page(connection: Connection, query: Select[Any], params: dict[str, Any]) -> EntryPage:
    return _entry_page(connection.execute(query, params).one())


def _entry_page(row: Any) -> EntryPage:
    """The page of a row of ``json_page`` (data, entries, more, the last entry's keys)."""
    data, entries, more = row[0], row[1], row[2]
    return EntryPage(data, entries, more, tuple(row[3:]) if entries else ())


# The id's first 4 bytes are the second the entry was created in: bounding created_at to it
# lets PostgreSQL read one month partition (pk_audit_entries is (id, created_at)).
ENTRY_BY_ID = DriverStatement(
    select(ENTRY_JSON).where(
        AuditEntry.id == bindparam("entry_id"),
        AuditEntry.org == bindparam("org"),
        AuditEntry.created_at >= bindparam("second"),
        AuditEntry.created_at < bindparam("next_second"),
    )
)
ONE_SECOND = timedelta(seconds=1)
NEWEST_FIRST = (AuditEntry.created_at.desc(), AuditEntry.id.desc())


def entry_by_id(work: UnitOfWork, entry_id: str) -> str | None:
    """The entry as one JSON object, if the work's org has it."""
    second = datetime.fromtimestamp(int(entry_id[:8], 16), UTC)
    params = {
        "org": work.org,
        "entry_id": entry_id,
        "second": second,
        "next_second": second + ONE_SECOND,
    }
    found: str | None = work.value(ENTRY_BY_ID, params)
    return found


@cache
def _trail_query(
    after: bool, since: bool, until: bool, action: bool, user_id: bool
) -> DriverStatement:
    """The trail page of one combination of filters, built once (ix_audit_entries_trail)."""
    where = [
        AuditEntry.org == bindparam("org"),
        AuditEntry.type == bindparam("type"),
        AuditEntry.target_id == bindparam("target_id"),
    ]
    if after:
        where.append(
            tuple_(AuditEntry.created_at, AuditEntry.id)
            < tuple_(bindparam("after_created_at"), bindparam("after_id"))
        )
    if since:
        where.append(AuditEntry.created_at >= bindparam("since"))
    if until:
        where.append(AuditEntry.created_at < bindparam("until"))
    if action:
        where.append(AuditEntry.action == bindparam("action"))
    if user_id:
        where.append(AuditEntry.user_id == bindparam("user_id"))
    return DriverStatement(json_page(where, NEWEST_FIRST))


def trail_page(
    work: UnitOfWork,
    type_: str,
    target_id: uuid.UUID,
    *,
    limit: int,
    after: TrailPosition | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    user_id: str | None = None,
) -> EntryPage:
    """A page of a target's entries, newest first."""
    query = _trail_query(
        after is not None,
        since is not None,
        until is not None,
        action is not None,
        user_id is not None,
    )
    params: dict[str, Any] = {
        "org": work.org,
        "type": type_,
        "target_id": target_id,
        "limit": limit,
        "since": since,
        "until": until,
        "action": action,
        "user_id": user_id,
    }
    if after is not None:
        params.update(after_created_at=after.created_at, after_id=after.id)
    return _entry_page(work.first(query, params))


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

    def keeps(self, row: Any) -> bool:
        """Whether a row of ``feed_rows`` passes the type, action, target and user parts of
        the filter (a live tail's; it has no others), as ``filter_conditions`` would."""
        if self.types and row.type not in self.types:
            return False
        if self.actions and not any(
            row.action.startswith(action[:-1]) if action.endswith("*") else row.action == action
            for action in self.actions
        ):
            return False
        if self.target_id is not None and row.target_id != self.target_id:
            return False
        return not self.user_ids or row.user_id in self.user_ids


# The searchable text of an entry: the expression ``ix_audit_entries_text`` indexes.
SEARCH_TEXT = func.audit_search_text(
    AuditEntry.action, AuditEntry.user_id, AuditEntry.user_email, AuditEntry.details
)


def _like_escaped(word: str) -> str:
    return word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# The predicate of the partial index ix_audit_entries_action, written as the index writes it
# (literal, not bound) so that PostgreSQL can prove a query implies it.
NOT_A_VIEW = literal_column(f"NOT ({is_view('audit_entries')})", Boolean)


def _could_be_a_view(action: str) -> bool:
    """Whether an action filter (exact, or a prefix ending in ``*``) can keep a view."""
    return VIEW_ACTION.startswith(action[:-1]) if action.endswith("*") else action == VIEW_ACTION


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
        if not any(_could_be_a_view(action) for action in wanted.actions):
            conditions.append(NOT_A_VIEW)
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
) -> EntryPage:
    """A page of the org's entries that ``wanted`` keeps, newest first. (Words go through
    their index; an action prefix alone is cheaper on the time index, as it always was.)"""
    if wanted.words:
        return _page_by_keys(connection, org, wanted, limit=limit, after=after)
    where = filter_conditions(org, wanted)
    if after is not None:
        where.append(
            tuple_(AuditEntry.created_at, AuditEntry.id) < tuple_(after.created_at, after.id)
        )
    return read_page(connection, json_page(where, NEWEST_FIRST), {"limit": limit})


def _page_by_keys(
    connection: Connection,
    org: str,
    wanted: TrailFilter,
    *,
    limit: int,
    after: TrailPosition | None,
) -> EntryPage:
    """A search page with words, which the planner may not look up in their index under
    row-level security: ``audit_search_keys`` (migrations 0014, 0018) finds the page's keys,
    testing every filter; then each entry is read by its key (LATERAL: a probe of the key's
    own partition) as the app role, under the policy as before. (Asked for the entries whose
    keys are ``IN`` the function's, the planner chose, near the org's oldest entry, to walk
    every entry after the cursor: 60 ms for a page of seven.)"""
    exact = [action for action in wanted.actions if not action.endswith("*")]
    prefixes = [
        f"{_like_escaped(action[:-1])}%" for action in wanted.actions if action.endswith("*")
    ]
    params = {
        "org": org,
        "patterns": [f"%{_like_escaped(word)}%" for word in wanted.words],
        "types": list(wanted.types) or None,
        "actions": exact or None,
        "action_prefixes": prefixes or None,
        "target_id": wanted.target_id,
        "user_ids": list(wanted.user_ids) or None,
        "since": wanted.since,
        "until": wanted.until,
        "after_created_at": after.created_at if after is not None else None,
        "after_id": after.id if after is not None else None,
        "limit": limit,
    }
    return _entry_page(_search_by_keys().one(connection, params))


MOMENT = DateTime(timezone=True)


@cache
def _search_by_keys() -> DriverStatement:
    """The statement of ``_page_by_keys``, built once."""
    texts = ARRAY(Text)
    keys = func.audit_search_keys(
        bindparam("org", type_=Text),
        bindparam("patterns", type_=texts),
        bindparam("types", type_=texts),
        bindparam("actions", type_=texts),
        bindparam("action_prefixes", type_=texts),
        bindparam("target_id", type_=Uuid),
        bindparam("user_ids", type_=texts),
        bindparam("since", type_=MOMENT),
        bindparam("until", type_=MOMENT),
        bindparam("after_created_at", type_=MOMENT),
        bindparam("after_id", type_=Text),
        bindparam("limit", type_=Integer) + 1,
    ).table_valued("created_at", "id")
    wanted = keys.render_derived("wanted")
    entry = (
        select(AuditEntry.__table__)
        .where(
            AuditEntry.org == bindparam("org"),
            AuditEntry.id == wanted.c.id,
            AuditEntry.created_at == wanted.c.created_at,
        )
        .limit(1)  # one entry a key; and it keeps the subquery from being joined by hash
        .lateral("entry")
    )
    read_by_key = ClauseAdapter(entry).traverse
    order = [read_by_key(column) for column in NEWEST_FIRST]
    rows = (
        select(
            read_by_key(ENTRY_JSON).label("entry"),
            entry.c.created_at.label("key_0"),
            entry.c.id.label("key_1"),
        )
        .select_from(wanted.join(entry, true()))
        .order_by(*order)
        .limit(bindparam("limit") + 1)
    )
    return DriverStatement(_json_page_of(rows, order))


# The export's lines are written by PostgreSQL (NDJSON: ``ENTRY_JSON``; CSV: the cells
# below, as Python's csv module writes them); the service only joins them.

# jsonb writes ", " and ": " between items; outside strings those are its only spaces. Each
# match keeps a whole string or a run of other characters and drops a lone space: compact JSON.
COMPACT_JSON = r'("(?:[^"\\]|\\.)*"|[^" ]+)| '


def _json_cell(value: SQLColumnExpression[Any]) -> ColumnElement[str]:
    """A jsonb object as one quoted cell of compact JSON: it starts with '{', never a
    formula."""
    compact = func.regexp_replace(
        cast(value, Text), constant(COMPACT_JSON), constant("\\1"), constant("g")
    )
    return quoted(compact)


# The CSV file's columns and their cells, in order: every cell quoted. The service writes
# ids, the validated type and the time itself: those need no guard.
CSV_CELLS = {
    "id": quoted(cast(AuditEntry.id, Text)),
    "type": quoted(cast(AuditEntry.type, Text)),
    "action": csv_cell(AuditEntry.action),
    "targetId": quoted(cast(AuditEntry.target_id, Text)),
    "userId": csv_cell(AuditEntry.user_id),
    "userEmail": csv_cell(AuditEntry.user_email),
    "recordedBy": csv_cell(WRITER),
    "createdAt": quoted(api_timestamp(AuditEntry.created_at)),
    "requestId": csv_cell(AuditEntry.request_id),
    "ip": csv_cell(AuditEntry.ip),
    "userAgent": csv_cell(AuditEntry.user_agent),
    "details": _json_cell(AuditEntry.details),
}
CSV_HEADER = ",".join(CSV_CELLS)
EXPORT_LINES = {"ndjson": ENTRY_JSON, "csv": joined(list(CSV_CELLS.values()), ",")}


def export_query(org: str, wanted: TrailFilter, fmt: str) -> Select[Any]:
    """One line of the export file per entry of the org that ``wanted`` keeps, built by
    PostgreSQL, oldest first (ix_audit_entries_time backwards)."""
    return (
        select(EXPORT_LINES[fmt])
        .where(*filter_conditions(org, wanted))
        .order_by(AuditEntry.created_at, AuditEntry.id)
    )


# Exports of one org take turns on these advisory locks (two-key form, first key "expt" in
# ASCII), held until their transaction ends: at most ``concurrency`` run at once.
EXPORT_LOCK_CLASS = 0x65787074


def take_export_slot(connection: Connection, org: str, concurrency: int) -> bool:
    """Whether one of ``org``'s ``concurrency`` export slots was free (it is now held by
    ``connection``'s transaction)."""
    return _take_slot(connection, EXPORT_LOCK_CLASS, org, concurrency)


# Searches with words: how many one org runs at once, across every worker and host.
SEARCH_LOCK_CLASS = 0x73726368


def wait_for_search_slot(connection: Connection, org: str, concurrency: int) -> None:
    """Hold one of ``org``'s ``concurrency`` search slots for ``connection``'s transaction,
    waiting for one when all are taken (no longer than the statement timeout: then the
    search is a 503 like any statement that runs out of time)."""
    if not _take_slot(connection, SEARCH_LOCK_CLASS, org, concurrency):
        connection.execute(
            text(
                "SELECT pg_advisory_xact_lock(:lock_class,"
                " hashtext(:org || ':' || floor(random() * :slots)::integer))"
            ),
            {"slots": concurrency, "lock_class": SEARCH_LOCK_CLASS, "org": org},
        )


def _take_slot(connection: Connection, lock_class: int, org: str, concurrency: int) -> bool:
    """Whether one of ``org``'s ``concurrency`` slots of ``lock_class`` was free (it is now
    held by ``connection``'s transaction)."""
    slot = connection.execute(
        text(
            "SELECT slot FROM generate_series(0, :slots - 1) AS slot"
            " WHERE pg_try_advisory_xact_lock(:lock_class, hashtext(:org || ':' || slot)) LIMIT 1"
        ),
        {"slots": concurrency, "lock_class": lock_class, "org": org},
    ).scalar()
    return slot is not None


def export_count(org: str, wanted: TrailFilter) -> Select[int]:
    """How many lines ``export_query`` gives."""
    return select(func.count()).select_from(AuditEntry).where(*filter_conditions(org, wanted))


def feed_page(connection: Connection, org: str, position: tuple[str, str], limit: int) -> EntryPage:
    """A page of the org's entries after ``position`` in chain order, only below the horizon
    (ix_audit_entries_chain): none can commit behind them later. ``last`` is the page's
    last position, ``(txid, id)``."""
    query = json_page(
        [AuditEntry.org == org, chain_order.after(position), AuditEntry.txid < HORIZON],
        (AuditEntry.txid, AuditEntry.id),
    )
    chain_order.read_in_chain_order(connection)
    return read_page(connection, query, {"limit": limit})


def feed_rows(
    connection: Connection,
    org: str,
    position: tuple[str, str],
    limit: int,
    wanted: TrailFilter | None = None,
) -> list[Row[Any]]:
    """Up to ``limit`` of the org's entries after ``position`` in chain order, below the
    horizon, that ``wanted`` keeps (every one without it), one row each: ``txid`` (text),
    ``id``, ``type``, ``action``, ``target_id``, ``user_id``, ``created_at`` and ``entry`` (its
    JSON)."""
    conditions = filter_conditions(org, wanted) if wanted is not None else [AuditEntry.org == org]
    query = (
        select(
            cast(AuditEntry.txid, Text).label("txid"),
            AuditEntry.id,
            AuditEntry.type,
            AuditEntry.action,
            AuditEntry.target_id,
            AuditEntry.user_id,
            AuditEntry.created_at,
            ENTRY_JSON.label("entry"),
        )
        .where(*conditions, chain_order.after(position), AuditEntry.txid < HORIZON)
        .order_by(AuditEntry.txid, AuditEntry.id)
        .limit(limit)
    )
    chain_order.read_in_chain_order(connection)
    return list(connection.execute(query))


def newest_position(connection: Connection, org: str) -> tuple[str, str]:
    """The position of the org's newest entry below the horizon (the chain's start if none)."""
    newest = connection.execute(
        select(cast(AuditEntry.txid, Text), AuditEntry.id)
        .where(AuditEntry.org == org, AuditEntry.txid < HORIZON)
        .order_by(AuditEntry.txid.desc(), AuditEntry.id.desc())
        .limit(1)
    ).first()
    return (newest[0], newest[1]) if newest is not None else chain_order.START
