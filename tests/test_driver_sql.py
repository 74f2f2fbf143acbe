"""Statements run on the driver connection give what SQLAlchemy gives, and fail as it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Integer,
    String,
    Text,
    Uuid,
    bindparam,
    cast,
    exc,
    func,
    literal,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from insights_audit import create_app
from insights_audit.db.driver_sql import DriverStatement, command
from insights_audit.db.engine import create_database_engine, engine
from insights_audit.db.unit_of_work import UnitOfWork, set_tenant, transaction
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view

# Literals SQLAlchemy turns into parameters, a bound JSON document it serializes, a bound
# number: every kind of value a DriverStatement has to pass on by itself.
MIXED = select(
    literal(41) + bindparam("n", type_=Integer),
    literal("it's").label("quoted"),
    cast(func.jsonb_extract_path(bindparam("doc", type_=JSONB), literal("a")), JSONB).label("a"),
    func.jsonb_typeof(bindparam("doc", type_=JSONB)).label("kind"),
)


def test_a_driver_statement_gives_the_rows_sqlalchemy_gives(app: Flask) -> None:
    params = {"n": 1, "doc": {"a": ["é", 2, None], "b": {}}}
    with app.app_context(), transaction() as connection:
        expected = tuple(connection.execute(MIXED, params).one())
        row = DriverStatement(MIXED).one(connection, params)
    assert tuple(row) == expected == (42, "it's", ["é", 2, None], "object")
    assert row.quoted == "it's"


def test_a_driver_statement_reads_nothing_as_none_or_no_rows(app: Flask) -> None:
    nothing = DriverStatement(text("SELECT 1 WHERE false"))
    with app.app_context(), transaction() as connection:
        assert nothing.scalar(connection, {}) is None
        with pytest.raises(exc.NoResultFound):
            nothing.one(connection, {})


def test_a_failing_driver_statement_raises_sqlalchemys_error(app: Flask) -> None:
    division = DriverStatement(text("SELECT 1 / :zero"))
    with app.app_context(), pytest.raises(exc.DataError) as raised, transaction() as connection:
        division.scalar(connection, {"zero": 0})
    assert "division by zero" in str(raised.value.orig)
    assert not raised.value.connection_invalidated


def test_a_connection_lost_under_a_driver_statement_is_invalidated(app: Flask) -> None:
    suicide = DriverStatement(text("SELECT pg_terminate_backend(pg_backend_pid())"))
    with app.app_context():
        with pytest.raises(exc.OperationalError) as raised, transaction() as connection:
            suicide.scalar(connection, {})
        assert raised.value.connection_invalidated
        # The pool hands out a working connection afterwards.
        with transaction() as connection:
            assert DriverStatement(text("SELECT 2")).scalar(connection, {}) == 2


def test_a_failing_command_raises_sqlalchemys_error(app: Flask) -> None:
    with app.app_context(), pytest.raises(exc.DataError) as raised, transaction() as connection:
        command(connection, b"SELECT 1 / 0")
    assert "division by zero" in str(raised.value.orig)
    assert not raised.value.connection_invalidated


def test_a_connection_lost_under_a_command_is_invalidated(app: Flask) -> None:
    with app.app_context():
        with pytest.raises(exc.OperationalError) as raised, transaction() as connection:
            command(connection, b"SELECT pg_terminate_backend(pg_backend_pid())")
        assert raised.value.connection_invalidated
        with transaction() as connection:
            command(connection, b"SELECT 1")
            assert DriverStatement(text("SELECT 2")).scalar(connection, {}) == 2


def test_connections_go_back_to_the_pool_transactional_after_requests(
    app: Flask, client: FlaskClient, token: str
) -> None:
    # Requests run their connection in autocommit around their own BEGIN: a read, a write,
    # and a request that fails inside its transaction (a view of a malformed id is a 400
    # before any SQL; a missing entry is a 404 after its SELECT).
    dashboard = new_id()
    for _ in range(3):
        assert record_view(client, token, dashboard)["viewCount"] >= 1
        assert client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(token)).json
        missing = client.get(f"{BASE}/{'0' * 24}", headers=bearer(token))
        assert missing.status_code == 404
    engine: Engine = app.extensions["insights_audit.engine"]
    with ExitStack() as stack:
        # Every pooled connection at once, so none is left unchecked.
        pooled = app.config["SETTINGS"].pool_size
        connections = [stack.enter_context(engine.connect()) for _ in range(pooled)]
        for connection in connections:
            with connection.begin():
                first = connection.exec_driver_sql("SELECT txid_current()").scalar()
                second = connection.exec_driver_sql("SELECT txid_current()").scalar()
            # Both statements ran in one transaction, as SQLAlchemy's begin() promised.
            assert first == second


# Every kind of value a read alone writes as a literal, and the org it reads under.
EVERY_KIND = select(
    func.concat_ws(
        "|",
        func.current_setting("insights_audit.org"),
        bindparam("s", type_=String),
        bindparam("n", type_=Integer) + 1,
        bindparam("u", type_=Uuid),
        bindparam("t", type_=DateTime(timezone=True)),
        func.coalesce(bindparam("missing", type_=String), "null"),
        bindparam("yes", type_=Boolean),
        cast(bindparam("doc", type_=JSONB), Text),
        literal("50%"),
    )
)
EVERY_KIND_VALUES = {
    "s": "it's \\ 'quoted' é",
    "n": 41,
    "u": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "t": datetime(2026, 12, 5, 3, 4, 5, 678901, tzinfo=UTC),
    "missing": None,
    "yes": True,
    "doc": {"a": ["é", 2, None]},
}


@pytest.fixture
def one_connection(app: Flask) -> Iterator[Engine]:
    """An engine of the test database with a pool of exactly one connection."""
    single = create_database_engine(
        app.config["SETTINGS"].database_url, pool_size=1, max_overflow=0
    )
    yield single
    single.dispose()


def test_a_read_alone_answers_what_the_statement_answers_in_a_transaction(
    one_connection: Engine,
) -> None:
    statement = DriverStatement(EVERY_KIND)
    with one_connection.begin() as connection:
        set_tenant(connection, "o'rg \\ x")
        expected = statement.scalar(connection, EVERY_KIND_VALUES)
    for _ in range(3):  # prepared on first use, executed after
        work = UnitOfWork(one_connection, "o'rg \\ x")
        assert work.value(statement, EVERY_KIND_VALUES) == expected
    assert expected.startswith("o'rg \\ x|it's \\ 'quoted' é|42|12345678-")
    with one_connection.connect() as connection:
        # Nothing left open, and no org left behind on the pooled connection.
        setting = text("SELECT current_setting('insights_audit.org', true)")
        assert connection.execute(setting).scalar() in ("", None)
        prepared = text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'ia\\_%'")
        assert connection.execute(prepared).scalar() == 1


def test_a_read_alone_prepares_again_what_the_session_forgot(one_connection: Engine) -> None:
    statement = DriverStatement(text("SELECT current_setting('insights_audit.org') || :x"))
    assert UnitOfWork(one_connection, "org-a").value(statement, {"x": "!"}) == "org-a!"
    with one_connection.connect() as connection:
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.commit()
    assert UnitOfWork(one_connection, "org-b").value(statement, {"x": "?"}) == "org-b?"


def test_a_failing_read_alone_raises_sqlalchemys_error_and_leaves_the_connection_idle(
    one_connection: Engine,
) -> None:
    division = DriverStatement(text("SELECT (1 / :zero)::text"))
    with pytest.raises(exc.DataError) as raised:
        UnitOfWork(one_connection, "org-a").value(division, {"zero": 0})
    assert "division by zero" in str(raised.value.orig)
    assert not raised.value.connection_invalidated
    assert UnitOfWork(one_connection, "org-a").value(division, {"zero": 1}) == "1"


def test_a_connection_lost_under_a_read_alone_is_invalidated(one_connection: Engine) -> None:
    suicide = DriverStatement(text("SELECT pg_terminate_backend(pg_backend_pid())::text"))
    with pytest.raises(exc.OperationalError) as raised:
        UnitOfWork(one_connection, "org-a").value(suicide, {})
    assert raised.value.connection_invalidated
    again = DriverStatement(text("SELECT 'back'"))
    assert UnitOfWork(one_connection, "org-a").value(again, {}) == "back"


def test_a_read_alone_as_the_app_role_sees_only_its_org(
    app: Flask, app_role_url: str, client: FlaskClient, make_token: TokenFactory
) -> None:
    """Row-level security holds for a read alone: a statement that forgets its org filter
    reads the rows of the work's org only."""
    orgs = [f"org-alone-{new_id()[:8]}" for _ in range(2)]
    for org in orgs:
        record_view(client, make_token(token_org=org), new_id())
    service = create_app(replace(app.config["SETTINGS"], database_url=app_role_url))
    forgetful = DriverStatement(text("SELECT string_agg(DISTINCT org, ',') FROM view_logs"))
    with service.app_context():
        for org in orgs:
            assert UnitOfWork(engine(), org).value(forgetful, {}) == org


def _read_once(bind: Engine, org: str, statement: DriverStatement, values: dict[str, Any]) -> Any:
    """``statement``'s value read by a unit of work of its own, closed afterwards."""
    work = UnitOfWork(bind, org)
    try:
        return work.value(statement, values)
    finally:
        work.close()


def test_values_a_literal_cannot_carry_are_read_as_in_a_transaction(
    one_connection: Engine,
) -> None:
    """An offset PostgreSQL refuses (+18:31: Python allows 23:59), an instant at the end of
    Python's calendar and a NUL in text: the same answer, or the same error, either way."""
    moment = DriverStatement(select(cast(bindparam("t", type_=DateTime(timezone=True)), Text)))
    odd = {"t": datetime(5866, 3, 11, 16, 13, 28, tzinfo=timezone(timedelta(hours=18, minutes=31)))}
    last = {"t": datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))}
    for values in (odd, last):
        with one_connection.begin() as connection:
            expected = moment.scalar(connection, values)
        assert _read_once(one_connection, "org-a", moment, values) == expected
    assert _read_once(one_connection, "org-a", moment, odd) == "5866-03-10 21:42:28+00"
    echo = DriverStatement(select(bindparam("s", type_=String)))
    with pytest.raises(exc.DataError):
        _read_once(one_connection, "org-a", echo, {"s": "a\x00b"})
