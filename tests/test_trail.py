"""Audit trails of a target, single entries, recording events, and bad input."""

from __future__ import annotations

import base64
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.dialects import postgresql

from insights_audit.trail.queries import ENTRY_BY_ID
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view, run_sql

ENTRY_FIELDS = {
    "id",
    "type",
    "action",
    "targetId",
    "userId",
    "userEmail",
    "recordedBy",
    "details",
    "createdAt",
    "requestId",
    "ip",
    "userAgent",
}


def record_event(client: FlaskClient, secret: str, **body: object) -> dict[str, Any]:
    response = client.post(BASE, json=body, headers=bearer(secret))
    assert response.status_code == 201, response.json
    assert response.json["message"] == "Successfully recorded audit log"
    data: dict[str, Any] = response.json["data"]
    return data


def trail(client: FlaskClient, secret: str, path: str):
    response = client.get(BASE + path, headers=bearer(secret))
    assert response.status_code == 200, response.json
    return response


def test_recorded_event_is_returned_whole_and_read_back(client: FlaskClient, token: str) -> None:
    target = new_id()
    entry = record_event(
        client,
        token,
        type="kpi",
        action="threshold.update",
        targetId=target.upper(),
        details={"from": 1, "to": 2, "nested": {"ok": True}},
    )
    assert set(entry) == ENTRY_FIELDS
    assert entry["targetId"] == target and entry["userId"] == "user-1"
    assert entry["userEmail"] == "user-1@example.com" and entry["ip"] == "127.0.0.1"
    assert len(entry["id"]) == 24 and entry["details"] == {
        "from": 1,
        "to": 2,
        "nested": {"ok": True},
    }
    created = datetime.fromisoformat(str(entry["createdAt"]).replace("Z", "+00:00"))
    assert int(str(entry["id"])[:8], 16) == int(created.timestamp())
    response = client.get(f"{BASE}/{str(entry['id']).upper()}", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {"data": entry, "message": "Successfully retrieved audit log"}
    # Built by PostgreSQL, read back in the schema's field order too.
    assert list(response.json["data"]) == list(entry)


def test_request_id_is_recorded_and_echoed(client: FlaskClient, token: str) -> None:
    response = client.post(
        BASE,
        json={"type": "mapping", "action": "create", "targetId": new_id()},
        headers={**bearer(token), "X-Request-ID": "req-42", "User-Agent": "pytest-agent"},
    )
    assert response.headers["X-Request-ID"] == "req-42"
    assert response.json["data"]["requestId"] == "req-42"
    assert response.json["data"]["userAgent"] == "pytest-agent"


def test_unknown_audit_log_id_is_404(client: FlaskClient, token: str) -> None:
    response = client.get(f"{BASE}/507f1f77bcf86cd799439011", headers=bearer(token))
    assert response.status_code == 404
    assert response.json == {"message": "Audit log not found", "code": 404, "status": "Not Found"}


@pytest.mark.parametrize(
    "bad_id",
    [
        "507f1f77bcf86cd79943901",
        "507f1f77bcf86cd7994390111",
        "507f1f77bcf86cd79943901g",
        "dashboard",
    ],
)
def test_malformed_audit_log_id_is_400(client: FlaskClient, token: str, bad_id: str) -> None:
    response = client.get(f"{BASE}/{bad_id}", headers=bearer(token))
    assert response.status_code == 400
    assert response.json["message"] == "Invalid audit log ID format"


@pytest.mark.parametrize(
    ("kind", "message"),
    [("mapping", "Invalid mapping ID format"), ("kpi", "Invalid kpi ID format")],
)
def test_malformed_mapping_and_kpi_ids_are_400(
    client: FlaskClient, token: str, kind: str, message: str
) -> None:
    response = client.get(f"{BASE}/{kind}/12345", headers=bearer(token))
    assert response.status_code == 400 and response.json["message"] == message


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("dashboard", "Successfully retrieved dashboard audit logs"),
        ("mapping", "Successfully retrieved mapping audit logs"),
        ("kpi", "Successfully retrieved kpi audit logs"),
    ],
)
def test_trail_holds_only_entries_of_that_type_and_target(
    client: FlaskClient, token: str, kind: str, message: str
) -> None:
    target, other = new_id(), new_id()
    mine = [
        record_event(client, token, type=kind, action=f"step{n}", targetId=target) for n in range(3)
    ]
    for other_kind in {"dashboard", "mapping", "kpi"} - {kind}:
        record_event(client, token, type=other_kind, action="create", targetId=target)
    record_event(client, token, type=kind, action="create", targetId=other)
    response = trail(client, token, f"/{kind}/{target}")
    assert response.json["message"] == message
    assert [e["id"] for e in response.json["data"]] == [e["id"] for e in reversed(mine)]
    assert response.json["pagination"] == {"limit": 100, "nextCursor": None}
    assert "Link" not in response.headers


def test_trail_of_unknown_target_is_empty(client: FlaskClient, token: str) -> None:
    assert trail(client, token, f"/mapping/{new_id()}").json["data"] == []


def test_trail_filters_by_action_user_and_time(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    admin = make_token(user="admin", roles=("Administrator",))
    target = new_id()
    record_event(client, admin, type="kpi", action="create", targetId=target)
    record_event(client, admin, type="kpi", action="update", targetId=target)
    record_event(client, admin, type="kpi", action="update", targetId=target, userId="bob")
    run_sql(
        app,
        "UPDATE audit_entries SET created_at = '2026-01-01T10:00:00Z'"
        " WHERE org = :org AND action = 'create'",
        maintenance=True,
        org=org,
    )
    updates = trail(client, admin, f"/kpi/{target}?action=update").json["data"]
    assert [e["userId"] for e in updates] == ["bob", "admin"]
    assert [
        e["action"] for e in trail(client, admin, f"/kpi/{target}?userId=admin").json["data"]
    ] == ["update", "create"]
    older = trail(client, admin, f"/kpi/{target}?until=2026-01-01T10:00:00.001Z").json["data"]
    assert [e["action"] for e in older] == ["create"]
    edge = trail(client, admin, f"/kpi/{target}?since=2026-01-01T11:00:00%2B01:00").json["data"]
    assert len(edge) == 3, "since is inclusive and honours the offset"
    after = trail(client, admin, f"/kpi/{target}?since=2026-01-01T10:00:00.001Z").json["data"]
    assert [e["action"] for e in after] == ["update", "update"]
    unencoded_plus = trail(
        client, admin, f"/kpi/{target}?until=2026-01-01T11:00:00.001+01:00"
    ).json["data"]
    assert [e["action"] for e in unencoded_plus] == ["create"]


def test_paging_returns_every_entry_once_while_new_entries_arrive(
    client: FlaskClient, token: str
) -> None:
    target = new_id()
    existing = [record_view(client, token, target)["auditLogId"] for _ in range(7)]
    seen: list[str] = []
    path = f"/dashboard/{target}?limit=2"
    pages = 0
    while True:
        response = trail(client, token, path)
        page = response.json["data"]
        seen.extend(e["id"] for e in page)
        assert len(page) <= 2
        record_view(client, token, target)  # a newer entry arrives between pages
        cursor = response.json["pagination"]["nextCursor"]
        pages += 1
        if cursor is None:
            assert "Link" not in response.headers
            break
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"') and link.startswith("<http://localhost/")
        url = urlparse(link[1 : link.index(">")])
        assert parse_qs(url.query) == {"limit": ["2"], "cursor": [cursor]}
        path = url.path.removeprefix(BASE) + "?" + url.query
    assert seen == list(reversed(existing))
    assert pages == 4


def test_entries_at_the_same_instant_are_ordered_by_id_and_paged_exactly(
    client: FlaskClient, app: Flask, token: str, org: str
) -> None:
    target = new_id()
    ids = [
        record_event(client, token, type="mapping", action="sync", targetId=target)["id"]
        for _ in range(5)
    ]
    run_sql(
        app,
        "UPDATE audit_entries SET created_at = '2026-03-01T00:00:00Z' WHERE org = :org",
        maintenance=True,
        org=org,
    )
    seen: list[str] = []
    cursor = None
    while True:
        response = trail(
            client, token, f"/mapping/{target}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        )
        seen.extend(e["id"] for e in response.json["data"])
        cursor = response.json["pagination"]["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "cursor=not-a-cursor",
        "cursor=" + base64.urlsafe_b64encode(b"123.zz").decode(),
        "cursor=",
        "since=2026-11-27",
        "since=2026-11-27T10:00:00",
        "until=yesterday",
        "since=2026-11-27T10:00:00Z&until=2026-11-27T09:00:00Z",
        "action=Bad Action",
        "userId=",
        "unknown=1",
    ],
)
def test_trail_rejects_bad_query(client: FlaskClient, token: str, query: str) -> None:
    response = client.get(f"{BASE}/dashboard/{new_id()}?{query}", headers=bearer(token))
    assert response.status_code == 400, response.json
    assert response.json["errors"]["query"]
    assert response.json["code"] == 400 and response.json["status"] == "Bad Request"


def test_limit_1000_is_accepted(client: FlaskClient, token: str) -> None:
    assert (
        trail(client, token, f"/dashboard/{new_id()}?limit=1000").json["pagination"]["limit"]
        == 1000
    )


# Recording an event ---------------------------------------------------------------------


def test_dashboard_view_event_counts_like_the_view_endpoint(
    client: FlaskClient, token: str
) -> None:
    d = new_id()
    record_view(client, token, d)
    entry = record_event(
        client, token, type="dashboard", action="view", targetId=d, details={"name": "Via event"}
    )
    assert entry["action"] == "view"
    again = record_view(client, token, d)
    assert again["viewCount"] == 3 and again["totalViews"] == 3
    stats = client.get(f"{BASE}/dashboard/{d}/stats?days=1", headers=bearer(token)).json["data"]
    assert stats["name"] == "Via event" and stats["dailyViews"][-1]["views"] == 3


def test_other_dashboard_actions_do_not_count_as_views(client: FlaskClient, token: str) -> None:
    d = new_id()
    record_event(client, token, type="dashboard", action="share", targetId=d)
    stats = client.get(f"{BASE}/dashboard/{d}/stats?days=1", headers=bearer(token)).json["data"]
    assert stats["totalViews"] == 0
    most = client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(token)).json["data"]
    assert most == []


@pytest.mark.parametrize("role", ["Administrator", "Opsera Administrator"])
def test_administrators_record_on_behalf_of_others(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    admin = make_token(user="admin", roles=(role,))
    d = new_id()
    entry = record_event(client, admin, type="dashboard", action="view", targetId=d, userId="bob")
    assert (entry["userId"], entry["userEmail"], entry["recordedBy"]) == ("bob", None, "admin")
    read_back = client.get(f"{BASE}/{entry['id']}", headers=bearer(admin)).json["data"]
    assert read_back["recordedBy"] == "admin"
    entry = record_event(
        client,
        admin,
        type="kpi",
        action="edit",
        targetId=d,
        userId="carol",
        userEmail="carol@example.com",
    )
    assert (entry["userId"], entry["userEmail"]) == ("carol", "carol@example.com")
    bob = make_token(user="bob")
    mine = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(bob)).json["data"]
    assert [m["dashboardId"] for m in mine] == [d]


@pytest.mark.parametrize("role", ["Power User", "Users"])
def test_other_roles_may_not_record_on_behalf_of_others(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    secret = make_token(user="me", roles=(role,))
    response = client.post(
        BASE,
        json={"type": "kpi", "action": "edit", "targetId": new_id(), "userId": "bob"},
        headers=bearer(secret),
    )
    assert response.status_code == 403
    own = record_event(client, secret, type="kpi", action="edit", targetId=new_id(), userId="me")
    assert (own["userId"], own["userEmail"], own["recordedBy"]) == (
        "me",
        "user-1@example.com",
        "me",
    )


@pytest.mark.parametrize("role", ["Users", "Administrator"])
def test_nobody_records_another_email_as_their_own(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    secret = make_token(user="me", roles=(role,))
    body = {"type": "kpi", "action": "edit", "targetId": new_id(), "userId": "me"}
    response = client.post(
        BASE, json={**body, "userEmail": "ceo@example.com"}, headers=bearer(secret)
    )
    assert response.status_code == 400
    assert "userEmail" in response.json["errors"]["json"]
    same = client.post(
        BASE, json={**body, "userEmail": "user-1@example.com"}, headers=bearer(secret)
    )
    assert same.status_code == 201 and same.json["data"]["userEmail"] == "user-1@example.com"


def test_entry_ids_carry_no_counter_shared_across_orgs(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    first, second = make_token(token_org=f"org-a-{new_id()[:6]}"), make_token()
    tails = []
    for n in range(20):
        secret = first if n % 2 else second
        entry = record_event(client, secret, type="kpi", action="edit", targetId=new_id())
        tails.append(int(entry["id"][-6:], 16))
    # A counter would make consecutive writes, in any org, differ by one.
    steps = [(later - earlier) % 16**6 for earlier, later in itertools.pairwise(tails)]
    assert sum(step == 1 for step in steps) <= 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "x", "targetId": "123e4567-e89b-12d3-a456-426614174000"}, "type"),
        ({"type": "kpi", "targetId": "123e4567-e89b-12d3-a456-426614174000"}, "action"),
        (
            {"type": "report", "action": "x", "targetId": "123e4567-e89b-12d3-a456-426614174000"},
            "type",
        ),
        (
            {"type": "kpi", "action": "Bad", "targetId": "123e4567-e89b-12d3-a456-426614174000"},
            "action",
        ),
        (
            {"type": "kpi", "action": "a" * 65, "targetId": "123e4567-e89b-12d3-a456-426614174000"},
            "action",
        ),
        (
            {"type": "kpi", "action": "x", "targetId": "123e4567e89b12d3a456426614174000"},
            "targetId",
        ),
        ({"type": "kpi", "action": "x"}, "targetId"),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "details": [],
            },
            "details",
        ),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "details": None,
            },
            "details",
        ),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "details": {"b": "x" * 16400},
            },
            "details",
        ),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "userEmail": "a@b.c",
            },
            "userEmail",
        ),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "userId": "u",
                "userEmail": "nope",
            },
            "userEmail",
        ),
        (
            {
                "type": "kpi",
                "action": "x",
                "targetId": "123e4567-e89b-12d3-a456-426614174000",
                "createdAt": "2026-01-01T00:00:00Z",
            },
            "createdAt",
        ),
    ],
)
def test_bad_event_bodies_are_400_with_errors(
    client: FlaskClient, token: str, body: dict[str, object], field: str
) -> None:
    response = client.post(BASE, json=body, headers=bearer(token))
    assert response.status_code == 400
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize("raw", [b"", b"[]", b"{", b"\xff\xfe"])
def test_event_body_must_be_a_json_object(client: FlaskClient, token: str, raw: bytes) -> None:
    response = client.post(
        BASE, data=raw, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "json" in response.json["errors"]


def test_details_up_to_16_kib_are_kept(client: FlaskClient, token: str) -> None:
    details = {"blob": "x" * (16 * 1024 - 12)}
    entry = record_event(client, token, type="kpi", action="x", targetId=new_id(), details=details)
    assert entry["details"] == details


def test_body_over_64_kib_is_413(client: FlaskClient, token: str) -> None:
    body = b'{"type": "kpi", "pad": "' + b"x" * (65 * 1024) + b'"}'
    response = client.post(
        BASE, data=body, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.json["code"] == 413


def test_entries_cannot_be_changed_through_the_api(client: FlaskClient, token: str) -> None:
    entry = record_event(client, token, type="kpi", action="x", targetId=new_id())
    for method in ("PUT", "PATCH", "DELETE"):
        response = client.open(
            f"{BASE}/{entry['id']}", method=method, json={"action": "y"}, headers=bearer(token)
        )
        assert response.status_code == 405
    again = client.get(f"{BASE}/{entry['id']}", headers=bearer(token)).json["data"]
    assert again == entry


def test_timestamps_are_rfc3339_utc_with_milliseconds(client: FlaskClient, token: str) -> None:
    entry = record_event(client, token, type="kpi", action="x", targetId=new_id())
    created = str(entry["createdAt"])
    assert created.endswith("Z") and created[19] == "." and len(created) == 24
    assert abs(
        datetime.fromisoformat(created.replace("Z", "+00:00")) - datetime.now(UTC)
    ) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "details",
    [{"note": "a\u0000b"}, {"a\u0000": 1}, {"list": ["\ud800"]}],
)
def test_text_postgresql_cannot_store_is_a_400(
    client: FlaskClient, token: str, details: dict[str, object]
) -> None:
    """Found by fuzzing: NUL characters and unpaired surrogates used to end in a 500."""
    body = {"type": "kpi", "action": "update", "targetId": new_id(), "details": details}
    raw = json.dumps(body).encode()  # escaped: valid JSON, unstorable text
    response = client.post(
        BASE, data=raw, headers={**bearer(token), "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json["errors"] == {
        "json": {
            "_schema": ["Text must not contain NUL characters (\\u0000) or unpaired surrogates."]
        }
    }
    query = client.get(f"{BASE}/kpi/{new_id()}?userId=a%00b", headers=bearer(token))
    assert query.status_code == 400 and "query" in query.json["errors"]


def test_a_nul_in_the_user_agent_is_dropped(client: FlaskClient, token: str) -> None:
    headers = {**bearer(token), "User-Agent": "agent\u0000/1"}
    body = {"type": "kpi", "action": "update", "targetId": new_id()}
    response = client.post(BASE, json=body, headers=headers)
    assert response.status_code == 201
    assert response.json["data"]["userAgent"] == "agent/1"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": 1e400}}',
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": NaN}}',
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": -Infinity}}',
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": ' + b"9" * 4301 + b"}}",
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": 9223372036854775808}}',
        b'{"type": "kpi", "action": "x", "targetId": "%s", "details": {"a": '
        + b"[" * 350
        + b"]" * 350
        + b"}}",
    ],
)
def test_json_the_trail_cannot_hold_is_a_400_and_stores_nothing(
    client: FlaskClient, token: str, org: str, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    target = new_id()
    response = client.post(BASE, data=raw.replace(b"%s", target.encode()), headers=bearer(token))
    assert response.status_code == 400, response.json
    assert response.json["errors"]["json"]["_schema"]
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert run_sql(
        client.application, "SELECT count(*) FROM audit_entries WHERE org = :org", org=org
    ) == [(0,)]


def test_the_largest_accepted_integer_and_nesting_are_stored(
    client: FlaskClient, token: str
) -> None:
    nested: Any = 1
    for _ in range(30):  # the body and its details are the first two of the 32 levels
        nested = [nested]
    details = {"big": 2**63 - 1, "deep": nested}
    entry = record_event(client, token, type="kpi", action="x", targetId=new_id(), details=details)
    assert entry["details"] == details
    one_deeper = {"type": "kpi", "action": "x", "targetId": new_id(), "details": {"d": [nested]}}
    assert client.post(BASE, json=one_deeper, headers=bearer(token)).status_code == 400
    one_deeper = {"type": "kpi", "action": "x", "targetId": new_id(), "details": {"d": [nested]}}
    assert client.post(BASE, json=one_deeper, headers=bearer(token)).status_code == 400


@pytest.mark.parametrize("action", ["fuzz\n", "view\n", "a\nb"])
def test_an_action_with_a_newline_is_refused(client: FlaskClient, token: str, action: str) -> None:
    body = {"type": "kpi", "action": action, "targetId": new_id()}
    response = client.post(BASE, json=body, headers=bearer(token))
    assert response.status_code == 400 and "action" in response.json["errors"]["json"]


def test_a_dashboard_name_in_details_has_the_view_body_limit(
    client: FlaskClient, token: str
) -> None:
    board = new_id()
    body = {"type": "dashboard", "action": "rename", "targetId": board}
    too_long = client.post(
        BASE, json={**body, "details": {"name": "n" * 257}}, headers=bearer(token)
    )
    assert too_long.status_code == 400 and "details" in too_long.json["errors"]["json"]
    record_event(client, token, **body, details={"name": "n" * 256})
    stats = client.get(f"{BASE}/dashboard/{board}/stats", headers=bearer(token)).json["data"]
    assert stats["name"] == "n" * 256


def post_entry(client: FlaskClient, secret: str, **fields: Any) -> Any:
    body = {"type": "kpi", "action": "edit", "targetId": new_id(), **fields}
    return client.post(BASE, json=body, headers=bearer(secret))


def test_details_are_limited_to_16_kib_of_utf8_exactly(client: FlaskClient, token: str) -> None:
    wrapper = len('{"b":""}')
    exact = {"b": "x" * (16 * 1024 - wrapper)}
    assert post_entry(client, token, details=exact).status_code == 201
    assert (
        post_entry(client, token, details={"b": "x" * (16 * 1024 - wrapper + 1)}).status_code == 400
    )
    # Counted in UTF-8 bytes: "é" is two.
    accented = {"b": "é" * ((16 * 1024 - wrapper) // 2)}
    assert post_entry(client, token, details=accented).status_code == 201
    over = {"b": "é" * ((16 * 1024 - wrapper) // 2) + "x"}
    response = post_entry(client, token, details=over)
    assert response.status_code == 400 and "details" in response.json["errors"]["json"]


def test_an_email_without_a_user_is_refused_for_that_reason(
    client: FlaskClient, token: str
) -> None:
    response = post_entry(client, token, userEmail="someone@example.com")
    assert response.status_code == 400
    assert response.json["errors"]["json"]["userEmail"] == [
        "userEmail is only accepted together with userId."
    ]


@pytest.mark.parametrize("action", ["1edit", "_edit", "-edit", ".edit", "Edit", "a" * 65])
def test_actions_start_with_a_letter_and_stay_short(
    client: FlaskClient, token: str, action: str
) -> None:
    response = post_entry(client, token, action=action)
    assert response.status_code == 400 and "action" in response.json["errors"]["json"]


def test_the_longest_action_is_64_characters(client: FlaskClient, token: str) -> None:
    assert post_entry(client, token, action="a" * 64).status_code == 201


def test_user_ids_and_emails_have_exact_length_limits(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = make_token(user="admin", roles=("Administrator",))
    assert post_entry(client, admin, userId="u" * 255).status_code == 201
    empty = post_entry(client, admin, userId="")
    assert empty.status_code == 400 and "userId" in empty.json["errors"]["json"]
    too_long = post_entry(client, admin, userId="u" * 256)
    assert too_long.status_code == 400 and "userId" in too_long.json["errors"]["json"]
    domain = ".".join(["d" * 60] * 4) + ".com"  # 248 characters
    longest = "e" * (320 - len(domain) - 1) + "@" + domain
    assert len(longest) == 320
    assert post_entry(client, admin, userId="x", userEmail=longest).status_code == 201
    over = post_entry(client, admin, userId="x", userEmail="e" + longest)
    assert over.status_code == 400 and "userEmail" in over.json["errors"]["json"]


def test_an_empty_time_window_is_refused(client: FlaskClient, token: str) -> None:
    moment = "2026-03-01T00:00:00Z"
    response = client.get(
        f"{BASE}/kpi/{new_id()}?since={moment}&until={moment}", headers=bearer(token)
    )
    assert response.status_code == 400 and "until" in response.json["errors"]["query"]


def test_reading_an_entry_by_id_touches_one_partition(
    app: Flask, client: FlaskClient, token: str, org: str
) -> None:
    entry = record_event(client, token, type="kpi", action="edit", targetId=new_id())
    second = datetime.fromtimestamp(int(entry["id"][:8], 16), UTC)
    statement = ENTRY_BY_ID.statement.params(
        org=org, entry_id=entry["id"], second=second, next_second=second + timedelta(seconds=1)
    ).compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    plan = "\n".join(row[0] for row in run_sql(app, f"EXPLAIN {statement}"))
    scanned = set(re.findall(r"on (audit_entries_\w+)", plan))
    assert len(scanned) == 1, plan


def test_a_trail_user_filter_takes_1_to_255_characters(client: FlaskClient, token: str) -> None:
    path = f"{BASE}/kpi/{new_id()}?userId="
    for value, status in (("u", 200), ("u" * 255, 200), ("u" * 256, 400)):
        assert client.get(path + value, headers=bearer(token)).status_code == status


def test_the_openapi_document_marks_the_fields_an_entry_may_leave_null(
    client: FlaskClient,
) -> None:
    entry = client.get("/openapi.json").json["components"]["schemas"]["Entry"]["properties"]
    nullable = {name for name, field in entry.items() if field.get("nullable")}
    assert nullable == {"userEmail", "requestId", "ip", "userAgent"}
