"""Reads from PostgreSQL streaming replicas that never show a caller less than its own writes.

With ``DATABASE_REPLICA_URLS`` set, a read the routes mark as such (``request_work(read=
True)``) goes to a replica when all of these hold, and to the primary otherwise:

- the replica answered its last probe, no more than ``REPLICA_MAX_LAG_SECONDS`` behind the
  primary. Each worker probes each replica at most once a second (a replica that did not
  answer, once every ``DOWN_RETRY_SECONDS``), in the request that finds its state stale;
- the replica has replayed the caller's last write. Every request that writes records its
  transaction id under its token (``token_write_positions``, in the same transaction, in the
  round trip of its ``COMMIT``); a read looks it up on the primary (one indexed row) and the
  replica's transaction begins by checking that id against its own snapshot
  (``pg_visible_in_snapshot``), in the round trip of its ``BEGIN``. The check sits inside
  the read's transaction, so whatever it reads afterwards was taken at or after that
  moment: a caller reads its own writes whichever worker or host served the write.

Lag comes from the replica itself: the primary's WAL insert position is sampled at each
probe, and a replica is behind by no more than the age of the newest sample its replay
position (``pg_last_wal_replay_lsn()``) has reached (within a WAL page); before there are
samples old enough, the age of its last replayed commit (``pg_last_xact_replay_timestamp()``)
bounds it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from flask import Flask, current_app
from psycopg import sql
from sqlalchemy import Connection, Engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from insights_audit.config import Settings
from insights_audit.db import driver_sql
from insights_audit.db.engine import (
    ENGINE_KEY,
    create_database_engine,
    engine_options,
    waiting_for_connection,
)
from insights_audit.metrics import READS, REPLICA_FALLBACKS, REPLICA_LAG, REPLICA_USABLE

log = logging.getLogger(__name__)

# How long a probe's verdict on a replica holds, per worker.
PROBE_SECONDS = 1.0
# How long a replica that did not answer is left alone before it is tried again.
DOWN_RETRY_SECONDS = 5.0
# The execution option that marks a replica's connections (``on_replica``).
REPLICA_OPTION = "insights_audit_replica"
ROUTING_KEY = "insights_audit.read_routing"
WAL_PAGE_BYTES = 8192

PRIMARY = "primary"
# Why a read went to the primary although replicas are configured (a metric label each).
DOWN, LAGGING, BEHIND_CALLER, WRITES_ON_READ = "down", "lagging", "behind_caller", "writes_on_read"


class NeedsPrimary(Exception):
    """Raised by a read that found it must write (kept counts not made yet) while on a
    replica: the request's read starts again on the primary."""


def on_replica(connection: Connection) -> bool:
    """Whether ``connection`` is a replica's (read only: what would write must not run)."""
    return bool(connection.get_execution_options().get(REPLICA_OPTION, False))


def lsn_number(lsn: str) -> int:
    """A WAL position (``16/B374D848``) as a number, for comparisons."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class ReplicaState:
    usable: bool
    reason: str | None
    lag_seconds: float | None
    checked_at: float


class Replica:
    """One replica: its engine and what this worker last learnt of it."""

    def __init__(self, name: str, engine: Engine) -> None:
        self.name = name
        self.engine = engine
        self.state: ReplicaState | None = None
        self.reads = READS.labels(name)

    def stale(self, now: float) -> bool:
        if self.state is None:
            return True
        wait = DOWN_RETRY_SECONDS if self.state.reason == DOWN else PROBE_SECONDS
        return now - self.state.checked_at >= wait


def replica_name(url: str) -> str:
    """How metrics and logs name a replica: host, port and database, never credentials."""
    parsed = make_url(url)
    host = parsed.host or parsed.query.get("host") or "localhost"
    return f"{host}:{parsed.port or 5432}/{parsed.database or ''}"


# The caller's last writing transaction (the primary's knowledge, one primary-key row),
# prepared once on the lookup connection: each read sends only its EXECUTE.
_PREPARE_LAST_WRITE = (
    b"PREPARE last_write (bigint) AS"
    b" SELECT xid::text FROM token_write_positions WHERE token_id = $1"
)
_LAST_WRITE = b"EXECUTE last_write(%d)"
_PROBE = text(
    "SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replayed,"
    " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8 AS commit_age"
)


@lru_cache(maxsize=4096)
def _begin_read(org: str, snapshot: bool, unbounded: bool) -> tuple[bytes, bytes]:
    """``BEGIN`` on a replica and the tenant, answering a check put between the two halves
    (``_SHOWS``): one round trip."""
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot else "BEGIN READ ONLY"
    if unbounded:
        begin += "; SET LOCAL statement_timeout = 0"
    # The check's answer first: ``command`` gives the first value back.
    tenant = sql.SQL(", set_config('insights_audit.org', {org}, true)").format(org=sql.Literal(org))
    return f"{begin}; SELECT ".encode(), tenant.as_bytes()


# Whether the replica's snapshot shows the caller's last writing transaction committed.
_SHOWS = b"pg_visible_in_snapshot('%d'::xid8, pg_current_snapshot())"


class PrimaryLookups:
    """One connection of the worker to the primary, taken out of its pool, in autocommit,
    for the write-position lookup of each read: a primary-key read costs less than a pool's
    checkout and checkin around it (measured in process). Threads take turns on it."""

    def __init__(self, primary: Engine) -> None:
        self._primary = primary
        self._lock = threading.Lock()
        self._fairy: Any = None
        self._driver: psycopg.Connection[Any] | None = None

    def value(self, statement: bytes) -> bytes | None:
        """``statement``'s answer (as ``driver_sql.command``'s), on the primary. A connection
        found lost (the primary restarted, an idle connection was cut) is replaced once."""
        with self._lock:
            try:
                try:
                    return self._query(statement)
                except psycopg.OperationalError:
                    return self._query(statement)
            except psycopg.Error as error:
                raise sa_exc.DBAPIError.instance(
                    statement.decode(),
                    None,
                    error,
                    psycopg.Error,
                    hide_parameters=True,
                    connection_invalidated=True,
                    dialect=self._primary.dialect,
                ) from error

    def _query(self, statement: bytes) -> bytes | None:
        driver = self._driver or self._connect()
        try:
            return driver_sql.simple_query(driver, statement)
        except psycopg.Error as error:
            # The next statement starts on a fresh connection.
            self._fairy.invalidate(error)
            self._fairy = self._driver = None
            raise

    def _connect(self) -> psycopg.Connection[Any]:
        with waiting_for_connection():
            fairy = self._primary.raw_connection()
        driver: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
        fairy.detach()  # the pool opens another in its place
        driver.autocommit = True
        try:
            driver_sql.simple_query(driver, _PREPARE_LAST_WRITE)
        except psycopg.Error as error:
            fairy.invalidate(error)
            raise
        self._fairy, self._driver = fairy, driver
        return driver


class ReadRouting:
    """Chooses where each read goes: a usable replica that shows the caller's writes, or the
    primary. One per app (per worker process); thread-safe."""

    def __init__(
        self,
        primary: Engine,
        replicas: Sequence[Replica],
        max_lag_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.replicas = list(replicas)
        self.max_lag_seconds = max_lag_seconds
        self._clock = clock
        self._probing = threading.Lock()
        # (moment, WAL position) of the primary at recent probes, oldest first.
        self._primary_positions: deque[tuple[float, int]] = deque()
        self._turn = itertools.count()
        self._lookups = PrimaryLookups(primary)

    # -- which replicas may serve ------------------------------------------------------

    def usable(self) -> tuple[list[Replica], str | None]:
        """The replicas that may serve reads now, and why none may (when none may)."""
        now = self._clock()
        if any(replica.stale(now) for replica in self.replicas):
            # The first probe is waited for; later ones are made by one request at a time
            # while the others use the last verdict.
            first = any(replica.state is None for replica in self.replicas)
            if self._probing.acquire(blocking=first):
                try:
                    self._probe_stale(self._clock())
                finally:
                    self._probing.release()
        usable = [r for r in self.replicas if r.state is not None and r.state.usable]
        if usable:
            return usable, None
        reasons = {r.state.reason for r in self.replicas if r.state is not None}
        return [], LAGGING if LAGGING in reasons else DOWN

    def _probe_stale(self, now: float) -> None:
        stale = [replica for replica in self.replicas if replica.stale(now)]
        if not stale:
            return
        primary_position = self._primary_position(now)
        for replica in stale:
            replica.state = self._probe(replica, now, primary_position)
            REPLICA_USABLE.labels(replica.name).set(1 if replica.state.usable else 0)
            if replica.state.lag_seconds is not None:
                REPLICA_LAG.labels(replica.name).set(replica.state.lag_seconds)

    def _primary_position(self, now: float) -> int | None:
        try:
            with self.primary.connect() as connection:
                lsn: str = connection.execute(
                    text("SELECT pg_current_wal_insert_lsn()::text")
                ).scalar_one()
        except sa_exc.DBAPIError:
            return None
        position = lsn_number(lsn)
        self._primary_positions.append((now, position))
        # Samples older than the lag limit (and one more) are all a verdict needs.
        horizon = now - self.max_lag_seconds - 2 * PROBE_SECONDS
        while len(self._primary_positions) > 2 and self._primary_positions[1][0] < horizon:
            self._primary_positions.popleft()
        return position

    def _probe(self, replica: Replica, now: float, primary_position: int | None) -> ReplicaState:
        try:
            with replica.engine.connect() as connection:
                row = connection.execute(_PROBE).one()
        except sa_exc.DBAPIError as error:
            log.warning("replica %s is not answering: %s", replica.name, error.orig)
            return ReplicaState(False, DOWN, None, now)
        if not row.standby or row.replayed is None:
            # A promoted replica is a primary of its own: reads there would miss new writes.
            log.warning("replica %s is not a streaming replica; skipped", replica.name)
            return ReplicaState(False, DOWN, None, now)
        lag = self._lag(lsn_number(row.replayed), row.commit_age, now, primary_position)
        usable = lag is not None and lag <= self.max_lag_seconds
        return ReplicaState(usable, None if usable else LAGGING, lag, now)

    def _lag(
        self, replayed: int, commit_age: float | None, now: float, primary_position: int | None
    ) -> float | None:
        # Within one WAL page counts as reached: an idle primary's position can sit past its
        # last record (a page's padding), where replay never goes.
        reached = replayed + WAL_PAGE_BYTES
        if primary_position is not None and reached >= primary_position:
            return 0.0
        # Behind no more than the age of the newest sample it has reached.
        passed = [moment for moment, position in self._primary_positions if position <= reached]
        if passed:
            return now - max(passed)
        if commit_age is not None:
            return max(0.0, commit_age)
        return None

    # -- opening a read --------------------------------------------------------------------

    def open_read(
        self, org: str, caller: int, *, snapshot: bool, unbounded: bool
    ) -> Connection | None:
        """A connection to a replica, its transaction begun on ``org`` and showing every
        write of token ``caller``; None when the read must go to the primary (counted with
        its reason)."""
        replicas, reason = self.usable()
        if not replicas:
            self.count_primary_read(reason or DOWN)
            return None
        xid = self._last_write(caller)
        start = next(self._turn) % len(replicas)
        for replica in replicas[start:] + replicas[:start]:
            try:
                with waiting_for_connection():
                    connection = replica.engine.connect()
                head, tail = _begin_read(org, snapshot, unbounded)
                shows = b"true" if xid is None else _SHOWS % xid
                shows_caller = self._begin(connection, head + shows + tail)
            except sa_exc.DBAPIError:
                self.lost(replica)
                reason = DOWN
                continue
            if shows_caller:
                replica.reads.inc()
                return connection
            connection.close()
            reason = BEHIND_CALLER
        self.count_primary_read(reason or DOWN)
        return None

    def lost(self, replica: Replica) -> None:
        """``replica`` failed a read: skipped until its next probe, its pooled connections
        dropped (a restarted server would fail each of them once)."""
        replica.state = ReplicaState(False, DOWN, None, self._clock())
        REPLICA_USABLE.labels(replica.name).set(0)
        replica.engine.dispose()

    def count_primary_read(self, reason: str) -> None:
        """Count a read sent to the primary although replicas are configured, and why."""
        REPLICA_FALLBACKS.labels(reason).inc()
        READS.labels(PRIMARY).inc()

    def replica_of(self, connection: Connection) -> Replica | None:
        """The replica ``connection`` is to (None for the primary's)."""
        return next((r for r in self.replicas if r.engine is connection.engine), None)

    def _last_write(self, caller: int) -> int | None:
        xid = self._lookups.value(_LAST_WRITE % caller)
        return None if xid is None else int(xid)

    def _begin(self, connection: Connection, begin: bytes) -> bool:
        """Begin the read's transaction as the primary's are begun (``begin_on``); whether
        the replica shows the caller's last write."""
        try:
            connection.begin()
            driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
            driver.autocommit = True
            answer = driver_sql.command(connection, begin)
        except sa_exc.DBAPIError:
            connection.close()
            raise
        return answer == b"t"


def init_read_routing(app: Flask, settings: Settings) -> ReadRouting | None:
    """The app's read routing over ``DATABASE_REPLICA_URLS`` (None without replicas)."""
    routing = None
    if settings.database_replica_urls:
        options = engine_options(settings)
        # A replica that does not answer is skipped; a request should not wait long for it.
        options["connect_args"]["connect_timeout"] = min(2, max(1, settings.pool_timeout_s))
        replicas = [
            Replica(
                replica_name(url),
                create_database_engine(url, execution_options={REPLICA_OPTION: True}, **options),
            )
            for url in settings.database_replica_urls
        ]
        primary = app.extensions[ENGINE_KEY]
        routing = ReadRouting(primary, replicas, settings.replica_max_lag_seconds)
    app.extensions[ROUTING_KEY] = routing
    return routing


def read_routing() -> ReadRouting | None:
    """The current app's read routing (None without replicas)."""
    routing: ReadRouting | None = current_app.extensions.get(ROUTING_KEY)
    return routing
