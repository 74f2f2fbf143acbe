"""Statements run on the driver connection give what SQLAlchemy gives, and fail as it fails."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, Integer, bindparam, cast, exc, func, literal, select, text
from sqlalchemy.dialects.postgresql import JSONB

from insights_audit.db.driver_sql import DriverStatement, command
from insights_audit.db.unit_of_work import transaction
from tests.conftest import BASE, bearer, new_id, record_view

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
