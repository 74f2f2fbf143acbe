"""The statements every request runs, executed on the driver's own connection.

SQLAlchemy builds every statement of the service. Executing one through
``Connection.execute`` costs about 0.1 ms of Python a call (the compiled cache, an execution
context, a result object), as much as the rest of a small read. A ``DriverStatement`` is
compiled once, by the engine's own dialect, to the SQL text psycopg takes, and runs on the
psycopg connection under a SQLAlchemy ``Connection``: inside its transaction, under its org.
Errors come out as SQLAlchemy's (so the error handlers see what they always saw) and a lost
connection is invalidated, as ``Connection.execute`` would do.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.rows import namedtuple_row
from sqlalchemy import ClauseElement, Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Values the statement carries itself (literals that SQLAlchemy made parameters).
    constants: dict[str, Any]
    # Conversions of parameter values the dialect makes (JSON to text, say).
    processors: dict[str, Processor]

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = {**self.constants, **params}
        for name in self.processors.keys() & params.keys():
            values[name] = self.processors[name](params[name])
        return values


class DriverStatement:
    """A SQLAlchemy statement compiled once and run with psycopg directly."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()

    def _compile(self, dialect: Dialect) -> _Compiled:
        with self._lock:
            if self._compiled is None:
                compiled = self.statement.compile(dialect=dialect)
                assert isinstance(compiled, SQLCompiler)
                if compiled.positional or any(b.expanding for b in compiled.binds.values()):
                    raise TypeError("a DriverStatement takes named, non-expanding parameters")
                # Each parameter's conversion, as the dialect's type makes it (public API).
                processors: dict[str, Processor] = {}
                constants = {}
                for bind in compiled.binds.values():
                    name = compiled.bind_names[bind]
                    processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                    if processor is not None:
                        processors[name] = processor
                    if not bind.required:
                        value = bind.effective_value
                        constants[name] = processors[name](value) if name in processors else value
                self._compiled = _Compiled(compiled.string, constants, processors)
            return self._compiled

    def _execute(
        self, connection: Connection, params: Mapping[str, Any], *, rows: bool
    ) -> psycopg.Cursor[Any]:
        compiled = self._compiled or self._compile(connection.dialect)
        return run(connection, compiled.sql, compiled.values(params), rows=rows)

    def one(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The statement's one row, its columns also by name."""
        row = self._execute(connection, params, rows=True).fetchone()
        if row is None:
            raise exc.NoResultFound("No row was found when one was required")
        return row

    def first(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The statement's first row (its columns also by name), or None when there is none."""
        return self._execute(connection, params, rows=True).fetchone()

    def all(self, connection: Connection, params: Mapping[str, Any]) -> list[Any]:
        """The statement's rows, their columns also by name."""
        return self._execute(connection, params, rows=True).fetchall()

    def tuples(self, connection: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The statement's rows as plain tuples (cheaper than ``all`` for many rows)."""
        return self._execute(connection, params, rows=False).fetchall()

    def scalar(self, connection: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = self._execute(connection, params, rows=False).fetchone()
        return None if row is None else row[0]


def command(connection: Connection, sql: bytes) -> bytes | None:
    """Run ``sql``, statements whose answer is at most one value (``BEGIN``, ``COMMIT``, a
    check), as one simple query straight through libpq: about half the client CPU of a
    cursor's ``execute`` (measured: 36 against 62 µs a round trip). The first value of the
    last statement's first row, as PostgreSQL's text; None when it returns no row. Errors are
    translated as by ``run``."""
    driver: psycopg.Connection[Any] = connection.connection.driver_connection  # type: ignore[assignment]
    try:
        return simple_query(driver, sql)
    except psycopg.Error as error:
        raise _translated(connection, sql, error, None) from error


def simple_query(driver: psycopg.Connection[Any], sql: bytes) -> bytes | None:
    """``sql`` on ``driver`` as by ``command``, errors as psycopg raises them."""
    with driver.lock:
        result = driver.pgconn.exec_(sql)
    if result.status == pq.ExecStatus.FATAL_ERROR:
        if driver.pgconn.status == pq.ConnStatus.BAD:
            # Lost (a restart, a network failure): what psycopg's own execute raises.
            message = result.error_message.decode(errors="replace").strip()
            raise psycopg.OperationalError(message or "the connection was lost")
        raise psycopg.errors.error_from_result(result, encoding=driver.info.encoding)
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise psycopg.InterfaceError(f"unexpected result {result.status} of {sql!r}")
    return result.get_value(0, 0) if result.ntuples else None


def _translated(
    connection: Connection, sql: str | bytes, error: psycopg.Error, cursor: Any
) -> exc.StatementError:
    """``error`` as SQLAlchemy raises it, the connection invalidated if it was lost."""
    fairy = connection.connection
    lost = connection.dialect.is_disconnect(cast(Any, error), fairy, cursor)
    if lost:
        connection.invalidate(error)
    return exc.DBAPIError.instance(
        sql if isinstance(sql, str) else sql.decode(),
        None,
        error,
        psycopg.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=connection.dialect,
    )


def run(
    connection: Connection,
    sql: str | bytes,
    params: Mapping[str, Any] | None,
    *,
    rows: bool = False,
) -> psycopg.Cursor[Any]:
    """Execute ``sql`` on ``connection``'s psycopg connection, in its transaction (without
    ``params``, as a simple query, which may hold several statements)."""
    fairy = connection.connection
    driver: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
    cursor = driver.cursor(row_factory=namedtuple_row) if rows else driver.cursor()
    try:
        return cursor.execute(sql, params)
    except psycopg.Error as error:
        raise _translated(connection, sql, error, cursor) from error
