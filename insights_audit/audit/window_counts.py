"""The windowed-counts engine: for each org and ``days`` that clients ask for, every
dashboard's views in the window of the last ``days`` x 24 h, kept with the snapshot they saw
(migration 0010).

Each kept window also holds every dashboard's views in the window as long just before it
(``earlier_views``, the same snapshot), which trending compares with. ``most-viewed?days=``
and trending read them (``kept_window``, then ``corrections`` in their statement: the kept
counts corrected to the moment); the first request for a window counts it (others asking at
once wait for that count), and then the background worker about every minute, counts them
again: at most ``WINDOWS_KEPT_PER_ORG`` windows per org (the most recently asked for), within
a time budget per pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from insights_audit.db.driver_sql import DriverStatement
from insights_audit.db.replicas import NeedsPrimary, on_replica
from insights_audit.models import is_view

_BOUNDS = """
    bounds AS (
        SELECT now() - make_interval(days => :days) AS since
    ), snapshot AS (
        SELECT (since AT TIME ZONE 'UTC')::date - 1 AS day FROM bounds
    )"""
# The kept counts' moment and snapshot if younger than 10 minutes (older ones are counted
# again), given back so that the next statement can use them as constants.
_KEPT = """
    SELECT bounds.since, snapshot.day, w.as_of, CAST(w.snapshot AS text) AS snapshot,
           CAST(pg_snapshot_xmin(w.snapshot) AS text) AS xmin{stored}
    FROM bounds CROSS JOIN snapshot
    LEFT JOIN window_snapshots AS w
           ON w.org = :org AND w.days = :days AND w.as_of > now() - interval '10 minutes'
    """

WINDOW_START = DriverStatement(
    text(
        f"""
        WITH {_BOUNDS}, marker AS (
            INSERT INTO total_snapshots (org, day)
            SELECT :org, day FROM snapshot
            ON CONFLICT DO NOTHING
            RETURNING day
        ), filled AS (
            -- First use of this day: each dashboard's running total at its end, looked up once.
            INSERT INTO dashboard_day_totals (org, day, dashboard_id, total_views)
            SELECT :org, marker.day, t.dashboard_id, earlier.total_views
            FROM marker
            JOIN dashboard_totals AS t ON t.org = :org
            JOIN LATERAL (
                SELECT d.total_views FROM dashboard_daily_views AS d
                WHERE d.org = :org AND d.dashboard_id = t.dashboard_id AND d.day <= marker.day
                ORDER BY d.day DESC LIMIT 1
            ) AS earlier ON true
            RETURNING 1
        )
        {_KEPT.format(stored="")}
        """
    )
)
# The same on a replica, which cannot store a day: whether the primary has stored it, and
# whether the kept counts are due to be marked in demand (``mark_asked``).
_STORED = """,
    EXISTS (SELECT 1 FROM total_snapshots AS m WHERE m.org = :org AND m.day = snapshot.day)
        AS stored,
    coalesce(w.requested_at < now() - interval '5 minutes', false) AS mark_due"""
WINDOW_START_STORED = DriverStatement(text(f"WITH {_BOUNDS} {_KEPT.format(stored=_STORED)}"))


def window_start(connection: Connection, org: str, days: int, *, in_demand: bool = False) -> Any:
    """The window of the last ``days`` x 24 h: its first moment, the day before it (whose
    running totals are stored on first use) and the kept counts' moment, snapshot and xmin
    (None when not kept). On a replica, raises ``NeedsPrimary`` when the day is not stored
    yet, or (``in_demand``: the kept counts are read) when they are due to be marked in
    demand."""
    params = {"org": org, "days": days}
    if not on_replica(connection):
        return WINDOW_START.one(connection, params)
    row = WINDOW_START_STORED.one(connection, params)
    if not row.stored or (in_demand and row.mark_due):
        raise NeedsPrimary()
    return row[:5]


def _views_before(name: str, since: str, snapshot_day: str) -> str:
    """A CTE ``name``: every dashboard's views before the moment ``:{since}`` = the running
    total at the end of the day before its day (``:{snapshot_day}``, stored by
    ``WINDOW_START``) + that day's views before it (raw entries, < 1 day)."""
    return f"""
    {name}_first_day AS (
        SELECT e.target_id AS dashboard_id, count(*) AS views
        FROM audit_entries AS e
        WHERE e.org = :org AND {is_view("e")}
          AND e.created_at >= date_trunc('day', CAST(:{since} AS timestamptz))
          AND e.created_at < :{since}
        GROUP BY e.target_id
    ), {name} AS (
        SELECT t.dashboard_id, coalesce(s.total_views, 0) + coalesce(b.views, 0) AS views
        FROM dashboard_totals AS t
        LEFT JOIN dashboard_day_totals AS s
               ON s.org = :org AND s.day = :{snapshot_day} AND s.dashboard_id = t.dashboard_id
        LEFT JOIN {name}_first_day AS b ON b.dashboard_id = t.dashboard_id
        WHERE t.org = :org AND t.last_viewed_at >= :earlier_since
    )"""


# CTEs ending in ``in_window``: for every dashboard viewed in the window [``:since``, now]
# or in the one as long before it [``:earlier_since``, ``:since``), the views in each
# (``view_count``, ``earlier_views``), from all views and the views before either start.
# Exact in the statement's snapshot.
IN_WINDOW = f"""
    {_views_before("before_window", "since", "snapshot_day")},
    {_views_before("before_earlier", "earlier_since", "earlier_snapshot_day")},
    in_window AS (
        SELECT t.dashboard_id, t.name, t.last_viewed_at,
               t.view_count - b.views AS view_count, b.views - e.views AS earlier_views
        FROM dashboard_totals AS t
        JOIN before_window AS b ON b.dashboard_id = t.dashboard_id
        JOIN before_earlier AS e ON e.dashboard_id = t.dashboard_id
        WHERE t.org = :org AND t.last_viewed_at >= :earlier_since
    )
"""


# Counts the window again and keeps the counts with the snapshot they saw: one statement, so
# the counts and ``pg_current_snapshot()`` describe the same views. Rows in dashboard order,
# so that two recounts of one window lock them in the same order.
KEEP_WINDOW = text(
    f"""
    WITH {IN_WINDOW}, kept AS (
        INSERT INTO window_snapshots (org, days, as_of, snapshot, requested_at)
        VALUES (:org, :days, now(), pg_current_snapshot(), now())
        ON CONFLICT (org, days) DO UPDATE
        SET as_of = excluded.as_of, snapshot = excluded.snapshot
        RETURNING as_of, CAST(snapshot AS text) AS snapshot,
                  CAST(pg_snapshot_xmin(snapshot) AS text) AS xmin
    ), gone AS (
        DELETE FROM window_counts AS w
        WHERE w.org = :org AND w.days = :days
          AND w.dashboard_id NOT IN (SELECT dashboard_id FROM in_window)
        RETURNING 1
    )
    , counted AS (
        INSERT INTO window_counts (org, days, dashboard_id, views, earlier_views, last_viewed_at)
        SELECT :org, :days, dashboard_id, view_count, earlier_views, last_viewed_at
        FROM in_window
        ORDER BY dashboard_id
        ON CONFLICT (org, days, dashboard_id) DO UPDATE
        SET views = excluded.views, earlier_views = excluded.earlier_views,
            last_viewed_at = excluded.last_viewed_at
        RETURNING 1
    )
    SELECT as_of, snapshot, xmin FROM kept
    """
)


def keep_counts(
    connection: Connection, org: str, days: int, since: Any, snapshot_day: Any
) -> tuple[Any, str, str]:
    """Count the window that starts at ``since`` again, and the one as long before it, and
    keep the counts (``snapshot_day``: the day before it, from ``WINDOW_START``); the kept
    moment, snapshot and its xmin."""
    earlier_since, earlier_snapshot_day, *_ = window_start(connection, org, 2 * days)
    params = {
        "org": org,
        "days": days,
        "since": since,
        "snapshot_day": snapshot_day,
        "earlier_since": earlier_since,
        "earlier_snapshot_day": earlier_snapshot_day,
    }
    kept = connection.execute(KEEP_WINDOW, params).one()
    return kept.as_of, kept.snapshot, kept.xmin


# The kept counts of a window younger than 10 minutes, as ``WINDOW_START`` gives them.
KEPT_WINDOW = text(
    """
    SELECT as_of, CAST(snapshot AS text) AS snapshot, CAST(pg_snapshot_xmin(snapshot) AS text)
    FROM window_snapshots
    WHERE org = :org AND days = :days AND as_of > now() - interval '10 minutes'
    """
)
# Advisory locks of first counts, two-key form, first key "wfst" in ASCII.
FIRST_COUNT_LOCK = 0x77667374


def count_first(
    connection: Connection, org: str, days: int, since: Any, snapshot_day: Any
) -> tuple[Any, str, str]:
    """Count a window that has no kept counts yet. Requests that find the same window
    uncounted at once take turns on a lock held to the end of their transaction: the first
    counts, the others then find its counts and use them (no stampede of counts on a cold
    window)."""
    connection.execute(
        text("SELECT pg_advisory_xact_lock(:lock_class, hashtext(:org || ':' || :days))"),
        {"lock_class": FIRST_COUNT_LOCK, "org": org, "days": days},
    )
    kept = connection.execute(KEPT_WINDOW, {"org": org, "days": days}).first()
    if kept is not None:
        return kept[0], kept[1], kept[2]
    return keep_counts(connection, org, days, since, snapshot_day)


@dataclass(frozen=True)
class KeptWindow:
    """A window of the last ``days`` x 24 h with kept counts: its first moment, the day
    before it, and the moment, snapshot and xmin of its kept counts."""

    days: int
    since: datetime
    snapshot_day: date
    as_of: datetime
    snapshot: str
    xmin: str

    def params(self, prefix: str = "") -> dict[str, Any]:
        """The parameters of ``corrections(prefix)`` for this prefix."""
        return {
            f"{prefix}days": self.days,
            f"{prefix}since": self.since,
            f"{prefix}snapshot_day": self.snapshot_day,
            f"{prefix}as_of": self.as_of,
            # The start of the window when the counts were kept, a constant for the planner
            # (the trail's month partitions before it are left out of the plan).
            f"{prefix}slid_from": self.as_of - timedelta(days=self.days),
            f"{prefix}snapshot": self.snapshot,
            f"{prefix}xmin": self.xmin,
        }


def kept_window(connection: Connection, org: str, days: int) -> KeptWindow:
    """The window of the last ``days`` x 24 h with kept counts, counted now if it has none
    (the first request for it; on a replica, which cannot keep them, ``NeedsPrimary``)."""
    since, snapshot_day, *kept = window_start(connection, org, days, in_demand=True)
    if kept[0] is None:
        if on_replica(connection):
            raise NeedsPrimary()
        kept = list(count_first(connection, org, days, since, snapshot_day))
    as_of, snapshot, xmin = kept
    return KeptWindow(days, since, snapshot_day, as_of, snapshot, xmin)


def mark_asked(*days: str) -> str:
    """A CTE ``asked`` and its comma, for a statement that reads the kept counts of the
    windows whose ``days`` are the given SQL expressions: they are in demand, so the
    background worker keeps them counted (written at most every 5 minutes; only requests
    mark them, never the worker's own recounts). A replica cannot: there, a request that
    finds the mark due goes to the primary (``window_start``)."""
    return f"""asked AS (
        UPDATE window_snapshots SET requested_at = now()
        WHERE org = :org AND days IN ({", ".join(days)})
          AND requested_at < now() - interval '5 minutes'
        RETURNING 1
    ),"""


def corrections(prefix: str = "") -> str:
    """CTEs ``{prefix}added`` and ``{prefix}slid_out``: per dashboard, the views of the window
    the kept counts did not see (a transaction id at or past the snapshot's xmin:
    ix_audit_entries_chain; the snapshot comes in as a constant, so the planner can use the
    index), and the views the kept counts saw that slid out of the window since
    (ix_audit_entries_views_by_time). Parameters: ``KeptWindow.params(prefix)``."""
    return f"""
    {prefix}added AS (
        SELECT e.target_id AS dashboard_id, count(*) AS views
        FROM audit_entries AS e
        WHERE e.org = :org AND e.txid >= CAST(:{prefix}xmin AS xid8)
          AND NOT pg_visible_in_snapshot(e.txid, CAST(:{prefix}snapshot AS pg_snapshot))
          AND {is_view("e")} AND e.created_at >= :{prefix}since
        GROUP BY e.target_id
    ), {prefix}slid_out AS (
        SELECT e.target_id AS dashboard_id, count(*) AS views
        FROM audit_entries AS e
        WHERE e.org = :org AND {is_view("e")}
          AND e.created_at >= :{prefix}slid_from AND e.created_at < :{prefix}since
          AND pg_visible_in_snapshot(e.txid, CAST(:{prefix}snapshot AS pg_snapshot))
        GROUP BY e.target_id
    )"""


def viewers_in_window(dashboard: str, since: str = ":since") -> str:
    """SQL of the number of users who viewed ``dashboard`` (an SQL expression) in the window
    that starts at ``since`` and ends now, exact in the statement's snapshot: a user viewed it
    in the window iff their last view of it is in it, so those whose last view is on a later
    day than the window's first (``dashboard_daily_views.last_viewers``, one row a day) plus
    those whose last view is on that first day, after the window's start (ix_view_logs_
    dashboard_recency, less than a day of rows)."""
    first_day = f"CAST(timezone('UTC', CAST({since} AS timestamptz)) AS date)"
    return f"""(
        (SELECT coalesce(sum(d.last_viewers), 0) FROM dashboard_daily_views AS d
         WHERE d.org = :org AND d.dashboard_id = {dashboard} AND d.day > {first_day})
        + (SELECT count(*) FROM view_logs AS v
           WHERE v.org = :org AND v.dashboard_id = {dashboard}
             AND v.last_viewed_at >= {since}
             AND v.last_viewed_at < date_trunc('day', CAST({since} AS timestamptz))
                                    + interval '1 day'))"""


def keep_window(connection: Connection, org: str, days: int) -> None:
    """Count ``org``'s ``days`` window again from now and keep the counts."""
    since, snapshot_day, *_ = window_start(connection, org, days)
    keep_counts(connection, org, days, since, snapshot_day)


# Windows kept counted per org: a client asking for many distinct ``days`` gets each one
# counted on request, but the background worker keeps only the most recently asked for.
WINDOWS_KEPT_PER_ORG = 16

# The org's windows beyond the WINDOWS_KEPT_PER_ORG most recently asked for: their counts
# go, and their snapshot is marked stale, so that a later request counts them afresh.
EVICT_WINDOWS = text(
    """
    WITH evicted AS (
        UPDATE window_snapshots SET as_of = '-infinity'
        WHERE org = :org AND as_of > '-infinity' AND days NOT IN (
            SELECT days FROM window_snapshots WHERE org = :org
            ORDER BY requested_at DESC, days LIMIT :kept
        )
        RETURNING days
    )
    DELETE FROM window_counts
    WHERE org = :org AND days IN (SELECT days FROM evicted)
    """
)

# Of those, the windows asked for in the last hour whose counts are older than a minute,
# stalest first.
WINDOWS_TO_KEEP = text(
    """
    SELECT days, as_of FROM window_snapshots
    WHERE org = :org AND requested_at > now() - interval '1 hour'
      AND as_of < now() - interval '1 minute' AND as_of > '-infinity'
    ORDER BY as_of, days
    """
)


def windows_to_keep(connection: Connection, org: str) -> list[tuple[int, Any]]:
    """The org's windows to count again, with the moment of their counts, stalest first;
    windows beyond the most recently asked for are evicted first."""
    connection.execute(EVICT_WINDOWS, {"org": org, "kept": WINDOWS_KEPT_PER_ORG})
    return [(row.days, row.as_of) for row in connection.execute(WINDOWS_TO_KEEP, {"org": org})]
