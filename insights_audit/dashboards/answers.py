"""Engagement answers kept for a minute (``engagement_answers``, migration 0019).

"Viewers also viewed" and recommendations may lag views by at most a minute (§7.2, §7.3).
Their exact computation counts the viewers a dashboard shares with every other one: a tenth
of a second to half a second for a big org's popular dashboards. So each answer asked for is
kept, exact at the moment it was computed (``as_of``):

- A request uses a kept answer younger than ``FRESH_SECONDS``. Otherwise it computes one in
  a transaction of its own and keeps it; requests that find the same answer missing at once
  take turns on a lock (the first computes, the others then find its answer: no stampede).
- The background worker computes again the answers asked for again (``asks``: requests that
  used the kept answer, counted at most every ``MARK_EVERY_SECONDS``) and last asked for in
  the last ``ASKED_WITHIN_SECONDS``, before they are a minute old (``answers_to_refresh``),
  stalest first, within a time budget; an answer asked for once is left to age. It drops
  the answers not asked for within that time, and keeps at most ``KEPT_PER_ORG`` per org
  (the most recently asked for).
- An answer keeps the items of the ``limit`` it was computed for (``items_limit``): the
  order of the items is total, so it also answers any smaller ``limit`` (its first items);
  a request for more computes it again for its own ``limit``, which then replaces it.

The size is bounded by what is asked for: at most ``KEPT_PER_ORG`` answers of at most 50
items (the largest ``limit``) per org, whatever the trail holds.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.replicas import NeedsPrimary
from insights_audit.db.unit_of_work import UnitOfWork, set_tenant

RELATED = "related"
RECOMMENDED = "recommended"
# A kept answer older than this is not used (the lag §7.2 and §7.3 allow).
FRESH_SECONDS = 60
# Answers not asked for within this are dropped by the worker, not computed again; one asked
# for again and steadily stays fresh.
ASKED_WITHIN_SECONDS = 60
# A request marks the answer it uses as asked for (again) at most this often.
MARK_EVERY_SECONDS = 15
# Answers kept per org: beyond them, the least recently asked for are dropped.
KEPT_PER_ORG = 500


@dataclass(frozen=True)
class Question:
    """What an answer answers: ``kind`` (``RELATED``: of the dashboard ``subject``;
    ``RECOMMENDED``: for the user ``subject``) over the window of the last ``days``, its
    first ``limit`` items (an answer kept for a larger ``limit`` answers it too)."""

    kind: str
    subject: str
    days: int
    limit: int

    def params(self, org: str) -> dict[str, Any]:
        return {
            "org": org,
            "kind": self.kind,
            "subject": self.subject,
            "days": self.days,
            "limit": self.limit,
        }


# A computation of an answer: its items (JSON values), best first, on a connection in a
# transaction on the org; it is given the org and the question.
Compute = Callable[[Connection, str, Question], list[Any]]

# The kept answer if fresh and computed for at least ``:limit`` items (its first ``:limit``),
# and whether it is due to be marked asked again (at most every MARK_EVERY_SECONDS). Reads only, so
# that it may run on a replica.
KEPT = DriverStatement(
    text(
        f"""
        SELECT items,
               requested_at < now() - interval '{MARK_EVERY_SECONDS} seconds' AS mark_due
        FROM engagement_answers
        WHERE org = :org AND kind = :kind AND subject = :subject AND days = :days
          AND items_limit >= :limit AND as_of > now() - interval '{FRESH_SECONDS} seconds'
        """
    )
)
MARK_ASKED = text(
    f"""
    UPDATE engagement_answers SET requested_at = now(), asks = asks + 1
    WHERE org = :org AND kind = :kind AND subject = :subject AND days = :days
      AND requested_at < now() - interval '{MARK_EVERY_SECONDS} seconds'
    """
)
# An answer computed at ``as_of`` replaces an older one only (a slow computation never
# overwrites a newer one); a request's marks it asked, the worker's does not.
KEEP = text(
    """
    INSERT INTO engagement_answers
        (org, kind, subject, days, items_limit, as_of, requested_at, asks, items)
    VALUES (:org, :kind, :subject, :days, :limit, :as_of, now(), 0, CAST(:items AS jsonb))
    ON CONFLICT (org, kind, subject, days) DO UPDATE
    SET items_limit = excluded.items_limit, as_of = excluded.as_of, items = excluded.items,
        requested_at = CASE WHEN :asked THEN excluded.requested_at
                            ELSE engagement_answers.requested_at END
    WHERE engagement_answers.as_of < excluded.as_of
    """
)
# Session advisory locks of answers being computed, two-key form, first key "answ" in ASCII.
ANSWER_LOCK = 0x616E7377
_LOCK_KEY = "hashtext(:org || ':' || :kind || ':' || :subject || ':' || :days)"
LOCK = text(f"SELECT pg_advisory_lock({ANSWER_LOCK}, {_LOCK_KEY})")
TRY_LOCK = text(f"SELECT pg_try_advisory_lock({ANSWER_LOCK}, {_LOCK_KEY})")
UNLOCK = text(f"SELECT pg_advisory_unlock({ANSWER_LOCK}, {_LOCK_KEY})")


def answer(
    work: UnitOfWork, primary: Engine, question: Question, compute: Compute, *, snapshot: bool
) -> list[Any]:
    """The items of ``question``'s answer for the work's org: the kept one if fresh (read on
    a replica when the work reads there), else computed now on ``primary`` and kept
    (``snapshot``: in one ``REPEATABLE READ`` snapshot, else ``READ COMMITTED``). On a
    replica, raises ``NeedsPrimary`` when the answer is missing or due to be marked asked."""
    params = question.params(work.org)
    found = work.first(KEPT, params)
    if found is not None:
        items, mark_due = found
        if not mark_due:
            return list(items[: question.limit])
        if work.on_replica:
            raise NeedsPrimary()
        work.connection.execute(MARK_ASKED, params)
        return list(items[: question.limit])
    if work.on_replica:
        raise NeedsPrimary()
    # Nothing else is read in the request's work: its connection goes back to the pool
    # before a second one is taken to compute.
    work.close()
    items = computed(primary, work.org, question, compute, snapshot=snapshot, asked=True)
    assert items is not None  # a request waits for the lock
    return items


def computed(
    primary: Engine,
    org: str,
    question: Question,
    compute: Compute,
    *,
    snapshot: bool,
    asked: bool,
    wait: bool = True,
) -> list[Any] | None:
    """Compute ``question``'s answer and keep it, under the answer's lock: a request
    (``wait``) that waited for it uses a fresh answer kept meanwhile; the worker (not
    ``wait``) does not wait, and gets None when the lock is taken. ``asked``: the
    answer is marked asked (by a request)."""
    params = question.params(org)
    with primary.connect() as connection, _locked(connection, params, wait) as locked:
        if not locked:
            return None
        if wait:
            with connection.begin():
                set_tenant(connection, org)
                found = KEPT.row(connection, params)
            if found is not None:
                return list(found[0][: question.limit])
        isolation = "REPEATABLE READ" if snapshot else "READ COMMITTED"
        with connection.execution_options(isolation_level=isolation).begin():
            set_tenant(connection, org)
            as_of: datetime = connection.execute(text("SELECT now()")).scalar_one()
            items = compute(connection, org, question)[: question.limit]
        # Kept in a transaction of its own, in READ COMMITTED: a request marking the row
        # asked meanwhile never makes it fail to serialize.
        with connection.execution_options(isolation_level="READ COMMITTED").begin():
            set_tenant(connection, org)
            connection.execute(
                KEEP, {**params, "as_of": as_of, "items": _json(items), "asked": asked}
            )
        return items


@contextlib.contextmanager
def _locked(connection: Connection, params: dict[str, Any], wait: bool) -> Iterator[bool]:
    """The answer's session lock on ``connection`` while the block runs (``wait``: waiting
    for it; else only if free, and False when not). A lock that cannot be released is
    released by closing the connection for good, never left on a pooled one."""
    with connection.begin():
        if wait:  # pg_advisory_lock returns once it holds the lock
            connection.execute(LOCK, params)
            locked = True
        else:
            locked = bool(connection.execute(TRY_LOCK, params).scalar_one())
    try:
        yield locked
    finally:
        if locked:
            try:
                with connection.begin():
                    connection.execute(UNLOCK, params)
            except SQLAlchemyError:
                connection.invalidate()


def _json(items: list[Any]) -> str:
    return json.dumps(items, separators=(",", ":"))


# Answers no request asked for within ASKED_WITHIN_SECONDS, and those beyond the
# KEPT_PER_ORG most recently asked for: dropped.
DROP_UNASKED = text(
    f"""
    DELETE FROM engagement_answers
    WHERE org = :org AND (
        requested_at < now() - interval '{ASKED_WITHIN_SECONDS} seconds'
        OR (kind, subject, days) NOT IN (
            SELECT kind, subject, days FROM engagement_answers WHERE org = :org
            ORDER BY requested_at DESC, kind, subject, days LIMIT :kept
        )
    )
    """
)
# The org's kept answers asked for again, older than ``:older_than`` seconds, stalest first.
TO_REFRESH = text(
    """
    SELECT kind, subject, days, items_limit, as_of FROM engagement_answers
    WHERE org = :org AND asks > 0 AND as_of < now() - make_interval(secs => :older_than)
    ORDER BY as_of, kind, subject, days
    """
)


def answers_to_refresh(
    connection: Connection, org: str, older_than: float
) -> list[tuple[datetime, Question]]:
    """The org's answers to compute again (asked for again, older than ``older_than``
    seconds), each with its moment, stalest first; the answers no longer asked for are
    dropped first."""
    connection.execute(DROP_UNASKED, {"org": org, "kept": KEPT_PER_ORG})
    return [
        (row.as_of, Question(row.kind, row.subject, row.days, row.items_limit))
        for row in connection.execute(TO_REFRESH, {"org": org, "older_than": older_than})
    ]
