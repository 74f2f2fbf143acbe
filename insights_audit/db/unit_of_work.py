"""The unit of work: one transaction on one org's rows, for a request or a command.

Row-level security admits only the rows of the org named by ``insights_audit.org``, which
``set_tenant`` sets for the current transaction (``set_config(..., is_local => true)``): the
one way the org is set, so a pooled connection never carries an org to its next user.

Two ways to begin one, and only these:

- ``UnitOfWork``: for requests (``web.work.request_work`` makes one per request, opened on
  first use, after authorization). A short read or write begins with ``begin_on`` (BEGIN
  and the tenant in one round trip); a snapshot (``snapshot=True``) is ``REPEATABLE READ``,
  read only, for reads in several statements, and ``unbounded`` lifts the statement
  timeout for long streamed reads, which bound themselves. With replicas configured, a
  ``read`` may begin on a replica instead (``db.replicas``), and other work records its
  writing transaction under the caller's token as it commits.
- ``transaction`` (and ``batch_transaction``, without a statement timeout): for commands
  and background jobs, committed when the block ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection, Engine, event, text

from insights_audit.db import driver_sql
from insights_audit.db.engine import engine, waiting_for_connection
from insights_audit.db.replicas import DOWN, WRITES_ON_READ, ReadRouting

log = logging.getLogger(__name__)

# ``insights_audit.org`` of maintenance across orgs: only the tables' owner may use it.
EVERY_ORG = "*"
# Row-level security reads the org from this setting, set for one transaction at a time.
TENANT_SQL = "SELECT set_config('insights_audit.org', {org}, true)"
_TENANT_WITH_PARAMETER = TENANT_SQL.format(org="%(org)s")


def set_tenant(connection: Connection, org: str) -> None:
    """Scope the connection's transaction to ``org`` for row-level security."""
    driver_sql.run(connection, _TENANT_WITH_PARAMETER, {"org": org})


@lru_cache(maxsize=4096)
def _begin_on(org: str) -> bytes:
    """``BEGIN`` and the tenant, as one simple query: one round trip instead of two."""
    return sql.SQL("BEGIN; " + TENANT_SQL).format(org=sql.Literal(org)).as_bytes()


def begin_on(connection: Connection, org: str) -> None:
    """Begin ``connection``'s transaction scoped to ``org``, in one round trip.

    psycopg would send its own ``BEGIN`` before the first statement; in autocommit it does not,
    and the ``BEGIN`` sent here opens the transaction instead. The pool turns autocommit off
    again when the connection comes back (``init_request_work``), after the transaction has
    ended.
    """
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    driver.autocommit = True
    driver_sql.command(connection, _begin_on(org))


class UnitOfWork:
    """One transaction on ``org``'s rows, begun on first use of ``connection``."""

    def __init__(
        self,
        bind: Engine,
        org: str,
        *,
        snapshot: bool = False,
        unbounded: bool = False,
        routing: ReadRouting | None = None,
        caller: int | None = None,
        read: bool = False,
    ) -> None:
        self.org = org
        self._bind = bind
        # With replicas (``routing``): a ``read`` tries a replica that shows every write of
        # token ``caller``; any other work records its writing transaction under ``caller``
        # as it commits, for the reads that follow.
        self._routing = routing
        self._caller = caller
        self._read = read
        self.on_replica = False
        self._replica_declined = False
        # A snapshot transaction sees one consistent state of the database for its whole life
        # (REPEATABLE READ, read only): for reads in several statements, and (``unbounded``:
        # no statement timeout) for long streamed reads, which bound themselves.
        self._snapshot = snapshot
        self._unbounded = unbounded
        self._connection: Connection | None = None
        self._driver: psycopg.Connection[Any] | None = None
        self._after_commit: list[Callable[[], None]] = []
        # A cancel from another thread and the connection's return to the pool take turns:
        # a cancel never reaches the connection's next user.
        self._cancelling = threading.Lock()

    @property
    def connection(self) -> Connection:
        if self._connection is None:
            if (
                self._read
                and not self._replica_declined
                and self._routing is not None
                and self._caller is not None
            ):
                on_replica = self._routing.open_read(
                    self.org, self._caller, snapshot=self._snapshot, unbounded=self._unbounded
                )
                if on_replica is not None:
                    self.on_replica = True
                    self._connection = on_replica
                    self._driver = on_replica.connection.driver_connection  # type: ignore[assignment]
                    return on_replica
            with waiting_for_connection():
                connection = self._bind.connect()
            if self._snapshot:
                connection = connection.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            connection.begin()
            self._connection = connection
            self._driver = connection.connection.driver_connection  # type: ignore[assignment]
            if self._snapshot:
                set_tenant(connection, self.org)
                if self._unbounded:
                    connection.execute(text("SET LOCAL statement_timeout = 0"))
            else:
                begin_on(connection, self.org)
        return self._connection

    def first(
        self, statement: driver_sql.DriverStatement, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """``statement``'s first row as a tuple, or None when there is none.

        A read that is the work's first statement (of a work that is not a snapshot and with
        no replicas to choose from) runs as a transaction of its own, in one round trip
        (``DriverStatement.row_alone``): a one-statement read needs no other. Otherwise it
        runs in the work's transaction.
        """
        if self._connection is not None or self._snapshot or self._routing is not None:
            return statement.row(self.connection, params)
        with waiting_for_connection():
            pooled = self._bind.raw_connection()
        try:
            with self._cancelling:
                self._driver = pooled.driver_connection  # type: ignore[assignment]
            return statement.row_alone(pooled, self._bind.dialect, self.org, params)
        except driver_sql.NotAlone:
            pass
        finally:
            with self._cancelling:
                self._driver = None
            pooled.close()
        return statement.row(self.connection, params)

    def value(self, statement: driver_sql.DriverStatement, params: Mapping[str, Any]) -> Any:
        """The first column of ``statement``'s first row (None when there is none), read as
        ``first`` reads it."""
        row = self.first(statement, params)
        return None if row is None else row[0]

    def cancel(self) -> None:
        """Cancel the statement the work's connection runs, if any; safe from another thread
        (the statement fails with ``QueryCanceled`` in the thread that waits for it)."""
        with self._cancelling:
            driver = self._driver
            if driver is None or driver.closed:
                return
            try:
                driver.cancel_safe(timeout=5)
            except (psycopg.Error, OSError):
                log.warning("could not cancel a statement of org %s", self.org)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the work has committed (never if it rolls back)."""
        self._after_commit.append(callback)

    def move_to_primary(self, *, lost: bool = False) -> None:
        """End the read begun on a replica: used again, the work opens on the primary. The
        read found it must write, or (``lost``) the replica failed it."""
        if self.on_replica and self._routing is not None:
            replica = self._routing.replica_of(self._connection) if self._connection else None
            self.close()
            self.on_replica, self._replica_declined = False, True
            if lost and replica is not None:
                self._routing.lost(replica)
            self._routing.count_primary_read(DOWN if lost else WRITES_ON_READ)

    def commit(self) -> None:
        if self._connection is not None and self._connection.in_transaction():
            if self.on_replica:
                driver_sql.command(self._connection, b"COMMIT")
            elif not self._snapshot:
                # COMMIT straight through libpq; SQLAlchemy's commit below then finds the
                # driver's transaction ended and only closes its own.
                driver_sql.command(self._connection, self._commit_sql())
            self._connection.commit()
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            callback()

    def _commit_sql(self) -> bytes:
        if self._routing is None or self._read or self._caller is None:
            return b"COMMIT"
        # The caller's reads from replicas wait for this transaction, if it wrote.
        return _RECORD_WRITE % self._caller + b"; COMMIT"

    def close(self) -> None:
        """End the work: a transaction still open is rolled back."""
        with self._cancelling:
            connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            connection.close()


# The writing transaction of a token, kept for its reads from replicas (``db.replicas``);
# nothing is written when the transaction wrote nothing (it has no id).
_RECORD_WRITE = (
    b"INSERT INTO token_write_positions (token_id, xid)"
    b" SELECT %d, xid FROM pg_current_xact_id_if_assigned() AS xid WHERE xid IS NOT NULL"
    b" ON CONFLICT (token_id) DO UPDATE SET xid = excluded.xid"
)


def reset_autocommit_on_checkin(bind: Engine) -> None:
    """Request work runs its connection in autocommit around its own BEGIN (``begin_on``);
    every connection goes back to the pool without it, for the next user."""
    event.listen(bind.pool, "checkin", _autocommit_off)


def _autocommit_off(dbapi_connection: Any, _record: Any) -> None:
    if dbapi_connection is not None and dbapi_connection.autocommit:
        dbapi_connection.autocommit = False


@contextmanager
def transaction(org: str | None = None, bind: Engine | None = None) -> Iterator[Connection]:
    """A unit of work outside a request (on ``org``'s rows if given): commits when the block
    ends, rolls back if it raises."""
    with (bind or engine()).begin() as connection:
        if org is not None:
            set_tenant(connection, org)
        yield connection


@contextmanager
def batch_transaction(bind: Engine | None = None, org: str = EVERY_ORG) -> Iterator[Connection]:
    """A transaction for long batch work (loads, rebuilds) on ``org``'s rows: no statement
    timeout, more memory."""
    with transaction(org, bind) as connection:
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SET LOCAL work_mem = '256MB'"))
        yield connection
