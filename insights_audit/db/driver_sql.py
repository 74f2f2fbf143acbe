"""The statements every request runs, executed on the driver's own connection.

SQLAlchemy builds every statement of the service. Executing one through
``Connection.execute`` costs about 0.1 ms of Python a call (the compiled cache, an execution
context, a result object), as much as the rest of a small read. A ``DriverStatement`` is
compiled once, by the engine's own dialect, to the SQL text psycopg takes, and runs on the
psycopg connection under a SQLAlchemy ``Connection``: inside its transaction, under its org.
Errors come out as SQLAlchemy's (so the error handlers see what they always saw) and a lost
connection is invalidated, as ``Connection.execute`` would do. A read of one statement can
also run alone (``row_alone``): on a pooled connection with no ``Connection`` around it, in
one round trip that sets the org and executes the statement, prepared on the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg import pq
from psycopg import sql as psycopg_sql
from psycopg.adapt import Transformer
from psycopg.rows import namedtuple_row
from sqlalchemy import ClauseElement, Connection, exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import NullType

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    # Values the statement carries itself (literals that SQLAlchemy made parameters).
    constants: dict[str, Any]
    # Conversions of parameter values the dialect makes (JSON to text, say).
    processors: dict[str, Processor]
    # Each parameter's SQL type, as the dialect writes it (``unknown`` for an untyped one).
    types: dict[str, str]

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = {**self.constants, **params}
        for name in self.processors.keys() & params.keys():
            values[name] = self.processors[name](params[name])
        return values


# A collation, which a column's type names and a parameter's cannot.
_COLLATION = re.compile(r' COLLATE "[^"]*"')
# A parameter of psycopg's SQL (``%(name)s``) or an escaped percent sign (``%%``).
_PARAMETER = re.compile(r"%%|%\((\w+)\)s")


@dataclass(frozen=True)
class _Prepared:
    """The statement as a prepared statement of the server's (``PREPARE``/``EXECUTE``)."""

    name: bytes
    prepare: bytes
    # The parameters' names in the order of ``$1``, ``$2``...
    order: tuple[str, ...]

    @classmethod
    def of(cls, compiled: _Compiled) -> _Prepared:
        order: list[str] = []

        def positional(found: re.Match[str]) -> str:
            name = found.group(1)
            if name is None:
                return "%"
            if name not in order:
                order.append(name)
            return f"${order.index(name) + 1}"

        text = _PARAMETER.sub(positional, compiled.sql)
        # Each parameter's type declared (inferred, some could not be: ``concat_ws``'s).
        types = ", ".join(compiled.types[name] for name in order)
        text = f"({types}) AS {text}" if order else f" AS {text}"
        name = b"ia_" + hashlib.sha256(text.encode()).hexdigest()[:24].encode()
        return cls(name, b"PREPARE " + name + text.encode(), tuple(order))


class DriverStatement:
    """A SQLAlchemy statement compiled once and run with psycopg directly."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None
        self._prepared: _Prepared | None = None
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
                types = {}
                for bind in compiled.binds.values():
                    name = compiled.bind_names[bind]
                    types[name] = (
                        "unknown"
                        if isinstance(bind.type, NullType)
                        else _COLLATION.sub("", dialect.type_compiler_instance.process(bind.type))
                    )
                    processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
                    if processor is not None:
                        processors[name] = processor
                    if not bind.required:
                        value = bind.effective_value
                        constants[name] = processors[name](value) if name in processors else value
                self._compiled = _Compiled(compiled.string, constants, processors, types)
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

    def row(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The statement's first row as a plain tuple, or None when there is none."""
        row: tuple[Any, ...] | None = self._execute(connection, params, rows=False).fetchone()
        return row

    def row_alone(
        self, pooled: PooledConnection, dialect: Dialect, org: str, params: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The statement's first row (as ``row`` gives it), read in a transaction of its own
        on ``org``'s rows: the tenant and the statement go in one message, as one implicit
        transaction of the server's, so the read costs one round trip and leaves nothing to
        commit (``pooled`` must be outside any transaction). The statement is prepared once
        per connection (``PREPARE``), then executed with its values written as literals, and
        its row loaded by psycopg's own loaders. Errors as ``run`` raises them."""
        compiled = self._compiled or self._compile(dialect)
        prepared = self._prepared
        if prepared is None:
            prepared = self._prepared = _Prepared.of(compiled)
        driver: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
        known: set[bytes] = pooled.info.setdefault(_PREPARED_KEY, set())
        escaping = pq.Escaping(driver.pgconn)
        encoding = driver.info.encoding
        values = compiled.values(params)
        try:
            literals = [
                _literal(values[name], escaping, encoding, driver) for name in prepared.order
            ]
        except (OverflowError, ValueError) as error:
            raise NotAlone from error
        message = b"".join(
            (
                _TENANT_ALONE % escaping.escape_literal(org.encode(encoding)),
                b"EXECUTE ",
                prepared.name,
                b"(" if prepared.order else b"",
                b", ".join(literals),
                b")" if prepared.order else b"",
            )
        )
        for attempt in (1, 2):
            try:
                if prepared.name not in known:
                    _prepare(driver, prepared)
                    known.add(prepared.name)
                return _first_row(driver, message)
            except psycopg.errors.InvalidSqlStatementName as error:
                # The session lost its prepared statements (psycopg deallocates them all
                # after a ROLLBACK of its own): prepare again, once.
                known.discard(prepared.name)
                if attempt == 2:
                    raise _translated(dialect, pooled, message, error, None) from error
            except psycopg.Error as error:
                raise _translated(dialect, pooled, message, error, None) from error
        raise AssertionError("unreachable")


class NotAlone(Exception):
    """A value a read alone cannot write as a literal: the read runs in a transaction."""


class PooledConnection(Protocol):
    """A connection of SQLAlchemy's pool, used without a ``Connection`` around it."""

    @property
    def driver_connection(self) -> Any: ...

    @property
    def info(self) -> dict[Any, Any]: ...

    def invalidate(self, e: BaseException | None = None, soft: bool = False) -> None: ...


# The names of the statements prepared on a connection, kept with it by the pool (and
# forgotten with it when the pool replaces it).
_PREPARED_KEY = "insights_audit.prepared"
_TENANT_ALONE = b"SELECT set_config('insights_audit.org', %s, true); "


def _prepare(driver: psycopg.Connection[Any], prepared: _Prepared) -> None:
    # Already prepared by an earlier use that failed after preparing it.
    with contextlib.suppress(psycopg.errors.DuplicatePreparedStatement):
        simple_query(driver, prepared.prepare)


def _literal(
    value: Any, escaping: pq.abc.Escaping, encoding: str, driver: psycopg.Connection[Any]
) -> bytes:
    """``value`` as an SQL literal (its type comes from the prepared statement's parameter)."""
    if value is None:
        return b"NULL"
    if value is True or value is False:
        return b"true" if value else b"false"
    if type(value) is int:
        return str(value).encode()
    if isinstance(value, str):
        if "\x00" in value:
            # libpq would cut the text at the NUL; psycopg refuses it, as before.
            raise ValueError("NUL in text")
        return escaping.escape_literal(value.encode(encoding))
    if isinstance(value, uuid.UUID):
        return b"'" + str(value).encode() + b"'"
    if isinstance(value, datetime) and value.tzinfo is not None:
        # In UTC: PostgreSQL takes offsets up to 15:59, Python up to 23:59 (OverflowError at
        # the ends of Python's calendar).
        return b"'" + value.astimezone(UTC).isoformat().encode() + b"'"
    return psycopg_sql.Literal(value).as_bytes(driver)


def _first_row(driver: psycopg.Connection[Any], message: bytes) -> tuple[Any, ...] | None:
    """The first row of the last statement of ``message`` (several statements, one simple
    query), loaded as psycopg loads a cursor's rows."""
    if driver.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.InterfaceError("a read alone needs a connection outside any transaction")
    with driver.lock:
        result = driver.pgconn.exec_(message)
    answer = _checked(driver, result, message)
    if not answer.ntuples:
        return None
    loading = Transformer.from_context(driver)
    loading.set_pgresult(answer)
    row: tuple[Any, ...] = loading.load_row(0, tuple)
    return row


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
        raise _translated(connection.dialect, connection, sql, error, None) from error


def simple_query(driver: psycopg.Connection[Any], sql: bytes) -> bytes | None:
    """``sql`` on ``driver`` as by ``command``, errors as psycopg raises them."""
    with driver.lock:
        result = driver.pgconn.exec_(sql)
    result = _checked(driver, result, sql)
    return result.get_value(0, 0) if result.ntuples else None


def _checked(driver: psycopg.Connection[Any], result: pq.abc.PGresult, sql: bytes) -> Any:
    """``result``, or the error it reports, raised as psycopg raises it."""
    if result.status == pq.ExecStatus.FATAL_ERROR:
        if driver.pgconn.status == pq.ConnStatus.BAD:
            # Lost (a restart, a network failure): what psycopg's own execute raises.
            message = result.error_message.decode(errors="replace").strip()
            raise psycopg.OperationalError(message or "the connection was lost")
        raise psycopg.errors.error_from_result(result, encoding=driver.info.encoding)
    if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        raise psycopg.InterfaceError(f"unexpected result {result.status} of {sql[:200]!r}")
    return result


def _translated(
    dialect: Dialect,
    connection: Connection | PooledConnection,
    sql: str | bytes,
    error: psycopg.Error,
    cursor: Any,
) -> exc.StatementError:
    """``error`` as SQLAlchemy raises it, ``connection`` invalidated if it was lost."""
    driver = (
        connection.connection.driver_connection
        if isinstance(connection, Connection)
        else connection.driver_connection
    )
    lost = dialect.is_disconnect(error, driver, cursor)  # type: ignore[arg-type]
    if lost:
        connection.invalidate(error)
    return exc.DBAPIError.instance(
        sql if isinstance(sql, str) else sql.decode(errors="replace"),
        None,
        error,
        psycopg.Error,
        hide_parameters=True,
        connection_invalidated=lost,
        dialect=dialect,
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
        raise _translated(connection.dialect, connection, sql, error, cursor) from error
