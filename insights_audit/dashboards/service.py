"""Dashboard reads, each given the request's unit of work (the views pass it in)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import Connection, Engine

from insights_audit.dashboards import answers, engagement, queries
from insights_audit.dashboards.engagement import Recommended, Related, Trending
from insights_audit.db.engine import engine
from insights_audit.db.unit_of_work import UnitOfWork


def recently_viewed(work: UnitOfWork, user_id: str, limit: int) -> str:
    """``user_id``'s dashboards, last viewed first, as a JSON array."""
    return queries.recent_dashboards_for(work, user_id, limit)


def most_viewed(work: UnitOfWork, limit: int, days: int | None) -> str:
    """The org's most viewed dashboards (of all time, or the last ``days``), as a JSON array."""
    if days is None:
        return queries.most_viewed_all_time(work, limit)
    return queries.most_viewed_recently(work.connection, work.org, limit, days)


def dashboard_stats(work: UnitOfWork, dashboard_id: uuid.UUID, days: int) -> str:
    """Totals, a zero-filled daily series of ``days`` UTC days and the top viewers, as a JSON
    object."""
    return queries.dashboard_stats(work, dashboard_id, days)


def trending(work: UnitOfWork, days: int, limit: int) -> list[Trending]:
    """The org's dashboards viewed more in the last ``days`` than in the ``days`` before."""
    return engagement.trending(work.connection, work.org, days, limit)


def related(work: UnitOfWork, dashboard_id: uuid.UUID, days: int, limit: int) -> list[Related]:
    """What the viewers of ``dashboard_id`` also viewed in the last ``days``, as kept for at
    most a minute (``answers``)."""
    question = answers.Question(answers.RELATED, str(dashboard_id), days, limit)
    items = _kept_answer(work, question)
    return [Related(uuid.UUID(board), name, shared, score) for board, name, shared, score in items]


def _related_now(connection: Connection, org: str, question: answers.Question) -> list[Any]:
    found = engagement.related(
        connection, org, uuid.UUID(question.subject), question.days, question.limit
    )
    return [[str(item.dashboard_id), item.name, item.shared_viewers, item.score] for item in found]


def recommended(work: UnitOfWork, user_id: str, days: int, limit: int) -> list[Recommended]:
    """Dashboards for ``user_id``: those the viewers of their own dashboards viewed, then the
    org's most viewed of the window, never one they viewed in it; as kept for at most a
    minute (``answers``)."""
    question = answers.Question(answers.RECOMMENDED, user_id, days, limit)
    items = _kept_answer(work, question)
    return [
        Recommended(uuid.UUID(board), name, score, reason, [uuid.UUID(x) for x in because])
        for board, name, score, reason, because in items
    ]


def _recommended_now(connection: Connection, org: str, question: answers.Question) -> list[Any]:
    user_id, days, limit = question.subject, question.days, question.limit
    since = engagement.window_since(connection, days)
    chosen, mine = engagement.similar_to_mine(connection, org, user_id, since, limit)
    if len(chosen) < limit:
        taken = mine | {item.dashboard_id for item in chosen}
        wanted = limit - len(chosen) + len(taken)
        top = json.loads(queries.most_viewed_recently(connection, org, wanted, days))
        fill = [item for item in engagement.popular(top) if item.dashboard_id not in taken]
        chosen += fill[: limit - len(chosen)]
    return [
        [
            str(item.dashboard_id),
            item.name,
            item.score,
            item.reason,
            [str(board) for board in item.because],
        ]
        for item in chosen
    ]


# How each kind of kept answer is computed, and whether in one snapshot (related's statements
# read together; recommended's popular fill may count a window, which a snapshot could not).
KINDS: dict[str, tuple[answers.Compute, bool]] = {
    answers.RELATED: (_related_now, True),
    answers.RECOMMENDED: (_recommended_now, False),
}


def _kept_answer(work: UnitOfWork, question: answers.Question) -> list[Any]:
    compute, snapshot = KINDS[question.kind]
    return answers.answer(work, engine(), question, compute, snapshot=snapshot)


def compute_again(primary: Engine, org: str, question: answers.Question) -> bool:
    """Compute a kept answer again (the background worker), unless a request is computing
    it; whether it was computed."""
    compute, snapshot = KINDS[question.kind]
    return (
        answers.computed(
            primary, org, question, compute, snapshot=snapshot, asked=False, wait=False
        )
        is not None
    )
