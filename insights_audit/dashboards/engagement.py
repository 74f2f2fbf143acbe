"""SQL of the engagement insights: trending, "viewers also viewed" and recommendations.

Every answer is exact at the moment it is computed (trending at each request; related and
recommended are kept for a minute at most by ``answers``, which computes them with these):

- **Trending** reads the window of the last ``days`` kept counted by the windowed-counts
  engine (``window_counts``), which also holds each dashboard's views in the ``days`` before
  it, both from one snapshot, corrected to the moment as ``most-viewed?days=`` reads it, in
  one statement; the background worker keeps it counted.
- **Related** and **recommended** work on viewer sets. A user viewed a dashboard in a window
  that ends now exactly when their last view of it (``view_logs.last_viewed_at``) is in it,
  so the sets are read from ``view_logs`` (ix_view_logs_dashboard_recency for a dashboard's
  viewers, ix_view_logs_recent for a user's dashboards), and the size of a set from the
  daily counts of last views (``viewers_in_window``) or a pass over the window. Related
  counts the audiences only of the dashboards whose bound can reach its answer, in several
  statements of one ``REPEATABLE READ`` snapshot (``answers`` opens it). Recommended's
  steps (the caller's dashboards, the candidates, their exact scores, the popular fill,
  which may count a window and so cannot be read only) are statements of one ``READ
  COMMITTED`` transaction: a view recorded between two of them is seen by the later ones
  only.

Scores are ordered by their value to 9 decimal places (integer arithmetic cannot compare
square roots; two scores closer than that count as a tie and the next key decides); the API
shows them to 4.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, text

from insights_audit.audit.window_counts import (
    corrections,
    kept_window,
    mark_asked,
    viewers_in_window,
)
from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.replicas import on_replica

# Digits of a score that its order looks at, and that the API shows.
ORDER_DIGITS = 9
SHOWN_DIGITS = 4


def order_key(score: float) -> float:
    """The value a score is ordered by."""
    return round(score, ORDER_DIGITS)


class Scored(Protocol):
    score: float


ScoredItem = TypeVar("ScoredItem", bound=Scored)


def shown(items: list[ScoredItem]) -> list[ScoredItem]:
    """``items`` as the API shows them: scores rounded to ``SHOWN_DIGITS`` decimals."""
    return [replace(item, score=round(item.score, SHOWN_DIGITS)) for item in items]  # type: ignore[type-var]


@dataclass(frozen=True)
class Trending:
    dashboard_id: uuid.UUID
    name: str | None
    recent_views: int
    previous_views: int
    score: float


# The trending score of kept counts, as ix_window_counts_rising orders them (float8: the same
# IEEE operations as ``trending``'s, so exact ties order the same).
KEPT_SCORE = (
    "(CAST(w.views - w.earlier_views AS float8) / sqrt(CAST(w.earlier_views + 1 AS float8)))"
)

# Every dashboard's views in the last window and in the one before it, from the kept window
# (both counted in one snapshot) corrected to the moment: the views since the snapshot, the
# views that slid from the last window into the one before, and those that slid out of that
# (``corrections`` of the window and of the one twice as long, same snapshot). Dashboards no
# view has changed since keep their kept score, so the best rising ones come from
# ix_window_counts_rising; the changed ones are scored again. ``trending`` orders the few
# candidates by the rounded score.
TRENDING_SQL = f"""
    WITH MARK_ASKED {corrections("recent_")}, {corrections("twice_")}, changed AS (
        SELECT dashboard_id, sum(recent) AS recent, sum(twice) AS twice
        FROM (
            SELECT dashboard_id, views AS recent, 0 AS twice FROM recent_added
            UNION ALL SELECT dashboard_id, -views, 0 FROM recent_slid_out
            UNION ALL SELECT dashboard_id, 0, views FROM twice_added
            UNION ALL SELECT dashboard_id, 0, -views FROM twice_slid_out
        ) AS parts
        GROUP BY dashboard_id
    ), candidates AS (
        (SELECT w.dashboard_id, w.views AS recent_views, w.earlier_views AS previous_views
         FROM window_counts AS w
         WHERE w.org = :org AND w.days = :recent_days AND w.views > w.earlier_views
           AND w.dashboard_id NOT IN (SELECT dashboard_id FROM changed)
         ORDER BY {KEPT_SCORE} DESC, w.views DESC, w.dashboard_id
         LIMIT :candidates)
        UNION ALL
        SELECT c.dashboard_id, CAST(counts.recent AS bigint),
               CAST(counts.twice - counts.recent AS bigint)
        FROM changed AS c
        LEFT JOIN window_counts AS w
               ON w.org = :org AND w.days = :recent_days AND w.dashboard_id = c.dashboard_id
        CROSS JOIN LATERAL (
            SELECT coalesce(w.views, 0) + c.recent AS recent,
                   coalesce(w.views + w.earlier_views, 0) + c.twice AS twice
        ) AS counts
    )
    SELECT s.dashboard_id, t.name, s.recent_views, s.previous_views
    FROM (
        SELECT * FROM candidates
        WHERE recent_views > previous_views
        ORDER BY CAST(recent_views - previous_views AS float8)
                     / sqrt(CAST(previous_views + 1 AS float8)) DESC,
                 recent_views DESC, dashboard_id
        LIMIT :candidates
    ) AS s
    LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = s.dashboard_id
"""
TRENDING = DriverStatement(text(TRENDING_SQL.replace("MARK_ASKED", mark_asked(":recent_days"))))
TRENDING_ON_REPLICA = DriverStatement(text(TRENDING_SQL.replace("MARK_ASKED", "")))
# Candidates ordered exactly beyond those asked for (trending, recommended): the order of
# the SQL's float scores and the exact one differ only for scores closer than 1e-9 that are
# not equal, and never reach this far.
SPARE_CANDIDATES = 10


def trending(connection: Connection, org: str, days: int, limit: int) -> list[Trending]:
    """Dashboards viewed more in the last ``days`` x 24 h than in the ``days`` before, by
    (recent - previous) / sqrt(previous + 1), highest first."""
    window = kept_window(connection, org, days)
    # The window twice as long, seen from the same kept counts: it starts ``days`` earlier.
    twice = replace(window, days=2 * days, since=window.since - timedelta(days=days))
    statement = TRENDING_ON_REPLICA if on_replica(connection) else TRENDING
    params = {
        "org": org,
        "candidates": limit + SPARE_CANDIDATES,
        **window.params("recent_"),
        **twice.params("twice_"),
    }
    found = [
        Trending(
            row.dashboard_id,
            row.name,
            row.recent_views,
            row.previous_views,
            (row.recent_views - row.previous_views) / math.sqrt(row.previous_views + 1),
        )
        for row in statement.all(connection, params)
    ]
    found.sort(key=lambda item: (-order_key(item.score), -item.recent_views, item.dashboard_id))
    return found[:limit]


@dataclass(frozen=True)
class Related:
    dashboard_id: uuid.UUID
    name: str | None
    shared_viewers: int
    score: float


# For every other dashboard Y viewed in the window by a user who viewed X in it, how many
# such users (X's viewers: ix_view_logs_dashboard_recency; their dashboards:
# ix_view_logs_recent). How many viewed X in it is ``VIEWERS``, asked first.
_SHARED_SQL = """
    x_viewers AS (
        SELECT v.user_id FROM view_logs AS v
        WHERE v.org = :org AND v.dashboard_id = :dashboard_id AND v.last_viewed_at >= :since
    ), shared AS (
        SELECT v.dashboard_id, count(*) AS shared
        FROM x_viewers AS x
        JOIN view_logs AS v ON v.org = :org AND v.user_id = x.user_id
        WHERE v.last_viewed_at >= :since AND v.dashboard_id <> :dashboard_id
        GROUP BY v.dashboard_id
    )"""
SHARED_VIEWERS = DriverStatement(
    text(
        f"""
    WITH {_SHARED_SQL}
    SELECT CAST(dashboard_id AS text), shared
    FROM shared
    ORDER BY shared DESC, dashboard_id
    """
    )
)
# How many users viewed the dashboard in the window (ix_view_logs_dashboard_recency alone).
VIEWERS = DriverStatement(
    text(
        "SELECT count(*) FROM view_logs"
        " WHERE org = :org AND dashboard_id = :dashboard_id AND last_viewed_at >= :since"
    )
)
# A dashboard viewed by at most this many users in the window shares viewers with so many
# others, at such low scores, that the bound of ``related`` discards few of them: every
# audience is counted with the shared viewers, in one statement that orders the scores
# (float8, the same IEEE operations as ``cosine``) and returns the best few.
FEW_VIEWERS = 500
RELATED_IN_ONE_STATEMENT = DriverStatement(
    text(
        f"""
    WITH {_SHARED_SQL}, audiences AS (
        SELECT v.dashboard_id, count(*) AS viewers
        FROM view_logs AS v
        WHERE v.org = :org AND v.last_viewed_at >= :since
        GROUP BY v.dashboard_id
    )
    SELECT CAST(s.dashboard_id AS text), s.shared, a.viewers
    FROM shared AS s
    JOIN audiences AS a ON a.dashboard_id = s.dashboard_id
    ORDER BY CAST(s.shared AS float8) / sqrt(CAST(:viewers AS float8) * a.viewers) DESC,
             s.shared DESC, s.dashboard_id
    LIMIT :candidates
    """
    )
)
# How many users viewed each of the given dashboards in the window, from the daily counts of
# last views (a few rows a dashboard); or every dashboard's, in one pass over the window's
# ``view_logs`` (ix_view_logs_dashboard_recency), when many are asked for.
AUDIENCES = DriverStatement(
    text(
        f"""
    SELECT CAST(y.dashboard_id AS text), {viewers_in_window("y.dashboard_id")} AS viewers
    FROM unnest(CAST(:dashboards AS uuid[])) AS y(dashboard_id)
    """
    )
)
AUDIENCES_IN_ONE_PASS = DriverStatement(
    text(
        """
    SELECT CAST(v.dashboard_id AS text), count(*) AS viewers
    FROM view_logs AS v
    WHERE v.org = :org AND v.last_viewed_at >= :since
    GROUP BY v.dashboard_id
    """
    )
)
# Above this many dashboards, their audiences are counted in one pass.
FEW_AUDIENCES = 200
NAMES = DriverStatement(
    text(
        "SELECT CAST(dashboard_id AS text), name FROM dashboard_totals"
        " WHERE org = :org AND dashboard_id = ANY(CAST(:dashboards AS uuid[]))"
    )
)


def window_since(connection: Connection, days: int) -> datetime:
    """The first moment of the window of the last ``days`` x 24 hours."""
    since: datetime = connection.execute(
        text("SELECT now() - make_interval(days => :days)"), {"days": days}
    ).scalar_one()
    return since


def cosine(shared: int, viewers: int, other_viewers: int) -> float:
    """The cosine of two viewer sets of the given sizes that share ``shared`` viewers."""
    return shared / math.sqrt(viewers * other_viewers)


# Bounds are compared with this much room for the floating point of their square roots.
BOUND_MARGIN = 2e-9


def related(
    connection: Connection, org: str, dashboard_id: uuid.UUID, days: int, limit: int
) -> list[Related]:
    """Dashboards whose viewers in the window overlap those of ``dashboard_id``, by cosine.

    Every dashboard's shared viewers are counted, but audiences (the other factor of the
    score) only for the dashboards that can reach the top: a dashboard Y sharing s of the
    n viewers of X has at least s viewers, so its score is at most sqrt(s / n). The audiences
    of the ``limit`` + spare dashboards sharing most set a floor (the ``limit``-th best of
    their scores, which the answer can only beat); any Y whose bound is below it cannot be
    in the answer, and only the others' audiences are counted. A dashboard with few viewers
    has a weak bound (its floor is low), so there every audience is counted at once."""
    params = {"org": org, "dashboard_id": dashboard_id, "since": window_since(connection, days)}
    viewers = VIEWERS.scalar(connection, params)
    if not viewers:
        return []
    if viewers <= FEW_VIEWERS:
        rows = RELATED_IN_ONE_STATEMENT.tuples(
            connection, {**params, "viewers": viewers, "candidates": limit + SPARE_CANDIDATES}
        )
        found = sorted((_row(board, both, viewers, a) for board, both, a in rows), key=_rank)
    else:
        found = _bounded(connection, params, viewers, limit)
    found = found[:limit]
    names = dict(NAMES.tuples(connection, {"org": org, "dashboards": [item[3] for item in found]}))
    return [
        Related(uuid.UUID(board), names.get(board), both, score) for score, _, both, board in found
    ]


def _bounded(
    connection: Connection, params: dict[str, Any], viewers: int, limit: int
) -> list[ScoredRow]:
    """The best dashboards by the bound: shared viewers of every dashboard (plain tuples and
    text ids, which sort in C), audiences of the first few and of those whose bound reaches
    the floor they set."""
    shared = SHARED_VIEWERS.tuples(connection, params)
    first = shared[: limit + SPARE_CANDIDATES]
    found = _scored(connection, params, viewers, first)
    if len(found) >= limit and len(shared) > len(first):
        floor = found[limit - 1][0] - BOUND_MARGIN
        least = floor * floor * viewers if floor > 0 else 0  # sqrt(s / n) >= floor
        rest = [row for row in shared[len(first) :] if row[1] >= least]
        found = sorted(found + _scored(connection, params, viewers, rest), key=_rank)
    return found


# A scored dashboard: (score, its order key, shared viewers, id as text).
ScoredRow = tuple[float, float, int, str]


def _rank(row: ScoredRow) -> tuple[float, int, str]:
    return (-row[1], -row[2], row[3])


def _scored(
    connection: Connection, params: dict[str, Any], viewers: int, rows: list[Any]
) -> list[ScoredRow]:
    """The ``rows`` (dashboard, shared viewers) scored with their audiences, best first."""
    if not rows:
        return []
    counts = {row[0]: row[1] for row in rows}
    if len(rows) <= FEW_AUDIENCES:
        audiences = AUDIENCES.tuples(connection, {**params, "dashboards": list(counts)})
    else:  # every dashboard's of the window, the ones asked for picked here
        audiences = AUDIENCES_IN_ONE_PASS.tuples(connection, params)
    found = [
        _row(board, counts[board], viewers, audience)
        for board, audience in audiences
        if board in counts
    ]
    found.sort(key=_rank)
    return found


def _row(board: str, both: int, viewers: int, audience: int) -> ScoredRow:
    score = cosine(both, viewers, audience)
    return (score, order_key(score), both, board)


@dataclass(frozen=True)
class Recommended:
    dashboard_id: uuid.UUID
    name: str | None
    score: float
    reason: str
    because: list[uuid.UUID]


# The caller's dashboards X viewed in the window, their viewers in it and how many
# (ix_view_logs_dashboard_recency, from the index alone).
MINE_SQL = """
    mine AS (
        SELECT v.dashboard_id AS x FROM view_logs AS v
        WHERE v.org = :org AND v.user_id = :user_id AND v.last_viewed_at >= :since
    ), x_viewers AS MATERIALIZED (
        SELECT v.dashboard_id AS x, v.user_id
        FROM mine JOIN view_logs AS v ON v.org = :org AND v.dashboard_id = mine.x
        WHERE v.last_viewed_at >= :since
    ), x_sizes AS (
        SELECT x, count(*) AS viewers FROM x_viewers GROUP BY x
    )
"""

# The ranking, without a row per pair (X, Y): score(Y) = sum over X of shared(X, Y) /
# sqrt(|X| |Y|) = (sum over the viewers u of Y of weight(u)) / sqrt(|Y|), where weight(u) is
# the sum of 1 / sqrt(|X|) over my dashboards X that u viewed. One pass over the window's
# viewers of every dashboard gives both sums and |Y|; its floating sums differ from the exact
# score in the last bits only, so it picks the candidates and ``RECOMMENDED`` scores them
# exactly.
CANDIDATES = text(
    f"""
    WITH {MINE_SQL}, weights AS (
        SELECT xv.user_id, sum(1 / sqrt(CAST(xs.viewers AS float8))) AS weight
        FROM x_viewers AS xv JOIN x_sizes AS xs ON xs.x = xv.x
        GROUP BY xv.user_id
    ), scored AS (
        SELECT v.dashboard_id AS y, count(*) AS viewers, sum(w.weight) AS weight
        FROM view_logs AS v
        LEFT JOIN weights AS w ON w.user_id = v.user_id
        WHERE v.org = :org AND v.last_viewed_at >= :since
          AND v.dashboard_id NOT IN (SELECT x FROM mine)
        GROUP BY v.dashboard_id
    )
    SELECT y
    FROM scored
    WHERE weight > 0
    ORDER BY round(CAST(weight / sqrt(CAST(viewers AS float8)) AS numeric), {ORDER_DIGITS})
             DESC, y
    LIMIT :candidates
    """
)

# For each of my dashboards X and each candidate Y, the viewers both share, and the sizes of
# both viewer sets: the exact score and its ``because``.
RECOMMENDED = text(
    f"""
    WITH {MINE_SQL}, y_viewers AS MATERIALIZED (
        SELECT v.dashboard_id AS y, v.user_id
        FROM view_logs AS v
        WHERE v.org = :org AND v.dashboard_id = ANY(:candidates) AND v.last_viewed_at >= :since
    ), y_sizes AS (
        SELECT y, count(*) AS viewers FROM y_viewers GROUP BY y
    ), pairs AS (
        SELECT xv.x, yv.y, count(*) AS shared
        FROM x_viewers AS xv JOIN y_viewers AS yv ON yv.user_id = xv.user_id
        GROUP BY xv.x, yv.y
    )
    SELECT p.y, p.x, p.shared, xs.viewers AS x_viewers, ys.viewers AS y_viewers, t.name
    FROM pairs AS p
    JOIN x_sizes AS xs ON xs.x = p.x
    JOIN y_sizes AS ys ON ys.y = p.y
    LEFT JOIN dashboard_totals AS t ON t.org = :org AND t.dashboard_id = p.y
    """
)

MINE = text(
    "SELECT dashboard_id FROM view_logs"
    " WHERE org = :org AND user_id = :user_id AND last_viewed_at >= :since"
)
BECAUSE_LIMIT = 3


def similar_to_mine(
    connection: Connection, org: str, user_id: str, since: datetime, limit: int
) -> tuple[list[Recommended], set[uuid.UUID]]:
    """The ``limit`` dashboards the caller did not view in the window whose viewers overlap
    those of the ones they did most, by the sum of the cosines, highest first; and the
    caller's own."""
    params: dict[str, Any] = {"org": org, "user_id": user_id, "since": since}
    mine = set(connection.scalars(MINE, params))
    if not mine:
        return [], mine
    params["candidates"] = list(
        connection.scalars(CANDIDATES, {**params, "candidates": limit + SPARE_CANDIDATES})
    )
    contributions: dict[uuid.UUID, list[tuple[float, uuid.UUID]]] = {}
    names: dict[uuid.UUID, str | None] = {}
    for row in connection.execute(RECOMMENDED, params):
        contributions.setdefault(row.y, []).append(
            (cosine(row.shared, row.x_viewers, row.y_viewers), row.x)
        )
        names[row.y] = row.name
    found = []
    for y, parts in contributions.items():
        parts.sort(key=lambda part: (-order_key(part[0]), part[1]))
        score = math.fsum(part[0] for part in parts)
        because = [x for _, x in parts[:BECAUSE_LIMIT]]
        found.append(Recommended(y, names[y], score, "similar", because))
    found.sort(key=lambda item: (-order_key(item.score), item.dashboard_id))
    return found[:limit], mine


def popular(items: list[dict[str, Any]]) -> list[Recommended]:
    """The most viewed dashboards (``most-viewed`` items) as popular recommendations."""
    return [
        Recommended(uuid.UUID(item["dashboardId"]), item["name"], 0.0, "popular", [])
        for item in items
    ]
