"""Each API object is declared twice: as a marshmallow schema (the OpenAPI document, POST
answers) and as the JSON that PostgreSQL writes for reads. These tests hold the two
together: the same names in the same order, the same JSON types, null only where the schema
allows it. Any drift between a schema and its SQL fails here."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import marshmallow as ma
from flask.testing import FlaskClient
from marshmallow import fields

from insights_audit.dashboards.schemas import DashboardStats, PopularDashboard, RecentDashboard
from insights_audit.reports.schemas import UsageReport
from insights_audit.trail.export import CSV_HEADER
from insights_audit.trail.schemas import Entry
from insights_audit.web.schemas import Timestamp, format_timestamp
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def check(schema: ma.Schema, value: Any, where: str) -> None:
    """``value`` is what ``schema`` declares: names in order, types, nullability."""
    assert isinstance(value, dict), where
    declared = [field.data_key or name for name, field in schema.dump_fields.items()]
    assert list(value) == declared, where
    for name, field in schema.dump_fields.items():
        check_field(field, value[field.data_key or name], f"{where}.{field.data_key or name}")


def check_field(field: fields.Field, value: Any, where: str) -> None:
    if value is None:
        assert field.allow_none, f"{where} is null, the schema says it never is"
        return
    if isinstance(field, fields.Nested):
        schema = field.schema
        for n, item in enumerate(value if field.many else [value]):
            check(schema, item, f"{where}[{n}]")
    elif isinstance(field, Timestamp):
        assert isinstance(value, str) and TIMESTAMP.fullmatch(value), where
    elif isinstance(field, fields.UUID):
        assert isinstance(value, str) and str(uuid.UUID(value)) == value, where
    elif isinstance(field, fields.Date):
        assert isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\d", value), where
    elif isinstance(field, fields.Integer):
        assert isinstance(value, int) and not isinstance(value, bool), where
    elif isinstance(field, fields.Dict):
        assert isinstance(value, dict), where
    elif isinstance(field, fields.String):
        assert isinstance(value, str), where
    else:
        raise AssertionError(f"{where}: no check for {type(field).__name__}")


def test_an_entry_as_postgresql_writes_it_is_the_entry_schema(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = make_token(user="admin", roles=("Administrator",), email=None)
    body = {"type": "kpi", "action": "edit", "targetId": new_id(), "details": {"a": [1]}}
    posted = client.post(BASE, json={**body, "userId": "other"}, headers=bearer(admin)).json
    view = record_view(client, make_token(), new_id(), json={"name": "Board"})
    for entry_id in (posted["data"]["id"], view["auditLogId"]):
        read = client.get(f"{BASE}/{entry_id}", headers=bearer(admin)).json["data"]
        check(Entry(), read, "entry")
        check(Entry(), client.post(BASE, json=body, headers=bearer(admin)).json["data"], "posted")
    auditor = make_token(roles=("Auditor",))
    page = client.get(f"{BASE}?limit=5", headers=bearer(auditor)).json["data"]
    for n, entry in enumerate(page):
        check(Entry(), entry, f"search[{n}]")


def test_the_csv_header_names_every_entry_field(client: FlaskClient) -> None:
    declared = [field.data_key or name for name, field in Entry().dump_fields.items()]
    assert sorted(CSV_HEADER.split(",")) == sorted(declared)


def test_dashboard_lists_and_stats_as_postgresql_writes_them_are_their_schemas(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    token = make_token()
    named, unnamed = new_id(), new_id()
    record_view(client, token, named, json={"name": "Named"})
    record_view(client, token, unnamed)
    never = new_id()

    def data(path: str) -> Any:
        response = client.get(f"{BASE}{path}", headers=bearer(token))
        assert response.status_code == 200, response.json
        return response.json["data"]

    recent = data("/dashboard/recently-viewed")
    assert {item["name"] for item in recent} == {"Named", None}
    for n, item in enumerate(recent):
        check(RecentDashboard(), item, f"recent[{n}]")
    for path in ("/dashboard/most-viewed", "/dashboard/most-viewed?days=3"):
        items = data(path)
        assert len(items) == 2, path
        for n, item in enumerate(items):
            check(PopularDashboard(), item, f"{path}[{n}]")
    for board in (named, unnamed, never):
        check(DashboardStats(), data(f"/dashboard/{board}/stats?days=3"), f"stats {board}")


def test_the_usage_report_as_postgresql_writes_it_is_its_schema(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    """Every list of the report written by PostgreSQL, nulls included (an unnamed dashboard, a
    viewer without an e-mail, a named dashboard nobody viewed)."""
    viewer = make_token(user="viewer", email=None)
    record_view(client, viewer, new_id(), json={"name": "Named"})
    record_view(client, viewer, new_id())
    record_view(client, make_token(user="other"), new_id())
    auditor = make_token(roles=("Auditor",))
    later = format_timestamp(datetime.now(UTC) + timedelta(minutes=1))
    # A dashboard named by an update, never viewed: a stale one with no last view.
    assert client.post(
        BASE,
        json={
            "type": "dashboard",
            "action": "update",
            "targetId": new_id(),
            "details": {"name": "Idle"},
        },
        headers=bearer(make_token(user="admin", roles=("Administrator",))),
    ).status_code in (200, 201)
    response = client.get(f"{BASE}/reports/usage?until={later}", headers=bearer(auditor))
    assert response.status_code == 200, response.json
    data = response.json["data"]
    assert data["users"] and data["dashboards"] and data["dailyViews"]
    check(UsageReport(), data, "report")
    assert {user["userEmail"] is None for user in data["users"]} == {True, False}
    assert {board["name"] is None for board in data["dashboards"]} == {True, False}
