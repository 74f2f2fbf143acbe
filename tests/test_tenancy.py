"""Tenancy: a second org sees none of the first org's views, stats, entries or ids."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view


def test_a_second_org_sees_nothing_of_the_first(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    # The same user id in two orgs: only the org separates them.
    first = make_token(user="shared-user", token_org="org-a-" + new_id()[:8])
    second = make_token(user="shared-user", token_org="org-b-" + new_id()[:8])
    d = new_id()
    view = record_view(client, first, d, json={"name": "Secret board"})
    event = client.post(
        BASE, json={"type": "kpi", "action": "edit", "targetId": d}, headers=bearer(first)
    ).json["data"]

    def get(path: str):
        return client.get(BASE + path, headers=bearer(second))

    assert get("/dashboard/recently-viewed").json["data"] == []
    assert get("/dashboard/most-viewed").json["data"] == []
    assert get("/dashboard/most-viewed?days=1").json["data"] == []
    stats = get(f"/dashboard/{d}/stats?days=1").json["data"]
    assert stats["name"] is None and stats["totalViews"] == 0 and stats["topViewers"] == []
    assert stats["dailyViews"][-1]["views"] == 0 and stats["period"]["uniqueViewers"] == 0
    assert get(f"/dashboard/{d}").json["data"] == []
    assert get(f"/kpi/{d}").json["data"] == []
    for entry_id in (view["auditLogId"], event["id"]):
        response = get(f"/{entry_id}")
        assert response.status_code == 404 and response.json["message"] == "Audit log not found"

    # The second org's own view of the same dashboard starts from zero.
    theirs = record_view(client, second, d)
    assert theirs["viewCount"] == 1 and theirs["totalViews"] == 1
    assert (
        client.get(f"{BASE}/dashboard/{d}/stats", headers=bearer(first)).json["data"]["totalViews"]
        == 1
    )


def test_a_cursor_minted_for_one_org_is_refused_for_another(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    first = make_token(token_org="org-c-" + new_id()[:8])
    second = make_token(token_org="org-d-" + new_id()[:8])
    d = new_id()
    for _ in range(3):
        record_view(client, first, d)
    cursor = client.get(f"{BASE}/dashboard/{d}?limit=1", headers=bearer(first)).json["pagination"][
        "nextCursor"
    ]
    response = client.get(f"{BASE}/dashboard/{d}?limit=1&cursor={cursor}", headers=bearer(second))
    assert response.status_code == 400
    assert response.json["errors"] == {"query": {"cursor": ["Not a valid cursor."]}}
    mine = client.get(f"{BASE}/dashboard/{d}?limit=1&cursor={cursor}", headers=bearer(first))
    assert mine.status_code == 200 and len(mine.json["data"]) == 1


def test_an_org_name_with_quotes_and_backslashes_is_scoped_safely(
    app: Flask, app_role_url: str, make_token: TokenFactory
) -> None:
    """The org reaches ``SET LOCAL`` quoted by psycopg: no way out of the string literal, and
    row-level security (the app role) lets exactly that org's rows through."""
    service = create_app(replace(app.config["SETTINGS"], database_url=app_role_url))
    client = service.test_client()
    tricky = "o'brien \\ co'; RESET insights_audit.org; --" + new_id()[:8]
    secret = make_token(token_org=tricky)
    d = new_id()
    record_view(client, secret, d)
    response = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    assert [row["dashboardId"] for row in response.json["data"]] == [d]
