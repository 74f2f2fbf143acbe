"""The Api, the Blueprint and the database engine, bound to the app in ``create_app``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NoReturn

import flask_smorest
import psycopg
from flask import Flask, current_app, g
from psycopg import sql
from sqlalchemy import Connection, Engine, create_engine, func, select, text
from webargs import core
from webargs.flaskparser import FlaskParser, abort

from insights_audit.config import Settings, sqlalchemy_url
from insights_audit.errors import register_error_handlers

ENGINE_KEY = "insights_audit.engine"
CONNECTION_KEY = "_insights_audit_connection"


UNSTORABLE_TEXT = "Text must not contain NUL characters (\\u0000) or unpaired surrogates."


def storable(value: Any) -> bool:
    """Whether every string in ``value`` (keys included) is text PostgreSQL can store."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(storable(key) and storable(item) for key, item in value.items())
    if isinstance(value, list):
        return all(storable(item) for item in value)
    return True


class ArgumentsParser(FlaskParser):
    """Webargs parser that answers 400 and reads any non-empty body as JSON."""

    DEFAULT_VALIDATION_STATUS = 400
    # None: each schema decides (StrictSchema raises on unknown query and body fields).
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "query": None}

    def _raw_load_json(self, req: Any) -> Any:
        # The content type is not trusted: a non-empty body must be a JSON object.
        data = core.parse_json(req.get_data(cache=True))
        if not storable(data):
            abort(400, messages={"json": {"_schema": [UNSTORABLE_TEXT]}})
        return data

    def load_querystring(self, req: Any, schema: Any) -> Any:
        if not all(storable(value) for value in req.args.values()):
            abort(400, messages={"query": {"_schema": [UNSTORABLE_TEXT]}})
        return super().load_querystring(req, schema)

    def _handle_invalid_json_error(
        self, error: Any, req: Any, *args: Any, **kwargs: Any
    ) -> NoReturn:
        abort(400, exc=error, messages={"json": {"_schema": ["Invalid JSON body."]}})


class Api(flask_smorest.Api):
    def _register_error_handlers(self) -> None:
        register_error_handlers(self._app)


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = ArgumentsParser()


def init_engine(app: Flask, settings: Settings) -> Engine:
    engine = create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_recycle=3600,
        connect_args={
            "connect_timeout": max(1, settings.pool_timeout_s),
            "options": f"-c statement_timeout={settings.statement_timeout_ms} -c timezone=UTC",
            "application_name": "insights-audit",
        },
        json_serializer=lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False),
    )
    app.extensions[ENGINE_KEY] = engine
    app.teardown_appcontext(_close_connection)
    return engine


def engine() -> Engine:
    engine: Engine = current_app.extensions[ENGINE_KEY]
    return engine


def connection() -> Connection:
    """The app context's connection, in autocommit mode for SQLAlchemy and psycopg.

    Outside ``tenant_scope`` (the token lookup) each statement is its own transaction; inside
    it, the statements of an authenticated request share the one transaction that
    ``tenant_scope`` opens and commits itself.
    """
    current: Connection | None = g.get(CONNECTION_KEY)
    if current is None:
        current = engine().connect().execution_options(isolation_level="AUTOCOMMIT")
        setattr(g, CONNECTION_KEY, current)
    return current


def _close_connection(_: BaseException | None) -> None:
    current: Connection | None = g.pop(CONNECTION_KEY, None)
    if current is not None:
        current.close()  # the pool's reset rolls back a transaction left open


@lru_cache(maxsize=4096)
def _begin_for(org: str) -> bytes:
    """``BEGIN; SET LOCAL insights_audit.org = '<org>'``, the org quoted by psycopg."""
    return sql.SQL("BEGIN; SET LOCAL insights_audit.org = {}").format(sql.Literal(org)).as_bytes()


@contextmanager
def tenant_scope(org: str) -> Iterator[Connection]:
    """The request's work for ``org``: one transaction in which row-level security admits
    only that org's rows.

    ``BEGIN`` and ``SET LOCAL insights_audit.org`` go in one round trip (simple protocol, the
    org quoted by psycopg), ``COMMIT`` when the block ends, ``ROLLBACK`` if it raises. The
    setting ends with the transaction, so a pooled connection carries no org to the next
    request.
    """
    current = connection()
    driver = current.connection.driver_connection
    assert driver is not None
    try:
        driver.execute(_begin_for(org))
        try:
            yield current
        except BaseException:
            driver.rollback()
            raise
        driver.commit()  # sends COMMIT: the server is in the transaction BEGIN opened
    except psycopg.OperationalError:
        # SQLAlchemy does not see these calls: drop the broken connection from the pool here.
        current.invalidate()
        raise


@contextmanager
def transaction(org: str | None = None) -> Iterator[Connection]:
    """One unit of work (on ``org``'s rows if given): commits when the block ends, rolls back
    if it raises."""
    with engine().begin() as connection:
        if org is not None:
            set_tenant(connection, org)
        yield connection


# ``insights_audit.org`` of maintenance across orgs: only the tables' owner may use it.
EVERY_ORG = "*"


def set_tenant(connection: Connection, org: str) -> None:
    """Scope the connection's transaction to ``org`` for row-level security (``SET LOCAL``)."""
    connection.execute(select(func.set_config("insights_audit.org", org, True)))


@contextmanager
def batch_transaction(bind: Engine | None = None, org: str = EVERY_ORG) -> Iterator[Connection]:
    """A transaction for long batch work (loads, rebuilds) on ``org``'s rows: no statement
    timeout, more memory."""
    with (bind or engine()).begin() as connection:
        set_tenant(connection, org)
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SET LOCAL work_mem = '256MB'"))
        yield connection
