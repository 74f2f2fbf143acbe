"""``GET {base}/feed``: every entry of the org exactly once, in chain order, with no gaps."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from tests.conftest import (
    BASE,
    TokenFactory,
    bearer,
    entry_held_open,
    new_id,
    record_view,
    run_sql,
)

AUDITOR = ("Auditor",)


def feed(client: FlaskClient, token: str, after: str | None = None, limit: int = 500) -> Any:
    query = f"limit={limit}" + (f"&after={after}" if after else "")
    response = client.get(f"{BASE}/feed?{query}", headers=bearer(token))
    assert response.status_code == 200, response.json
    assert response.json["message"] == "Successfully retrieved audit log feed"
    return response.json


def chain(app: Flask, org: str) -> list[str]:
    rows = run_sql(app, "SELECT id FROM audit_entries WHERE org = :org ORDER BY txid, id", org=org)
    return [entry_id for (entry_id,) in rows]


def insert_slowly(database_url: str, org: str, hold_s: float, count: int) -> None:
    """Write ``count`` entries in one transaction kept open ``hold_s`` seconds."""
    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', %s, true)", (org,))
        for _ in range(count):
            connection.execute(
                "INSERT INTO audit_entries (id, org, type, action, target_id, user_id)"
                " VALUES (audit_object_id(now()), %s, 'kpi', 'slow', gen_random_uuid(), 'w')",
                (org,),
            )
        time.sleep(hold_s)


def test_a_follower_receives_every_entry_once_in_chain_order_despite_slow_writers(
    app: Flask, client: FlaskClient, database_url: str, make_token: TokenFactory, org: str
) -> None:
    writer = make_token(user="writer")
    done = threading.Event()

    def write_views() -> None:
        own = app.test_client()
        for _ in range(60):
            record_view(own, writer, new_id())
            time.sleep(random.random() / 100)

    writers = [threading.Thread(target=write_views) for _ in range(2)]
    writers += [
        threading.Thread(target=insert_slowly, args=(database_url, org, hold, 5))
        for hold in (0.3, 1.5, 0.8)
    ]
    for thread in writers:
        thread.start()

    def finish() -> None:
        for thread in writers:
            thread.join()
        done.set()

    threading.Thread(target=finish).start()
    token = make_token(roles=AUDITOR, scopes=("api-readonly",))
    received: list[str] = []
    after = None
    while True:
        finished = done.is_set()
        body = feed(client, token, after, limit=7)
        received += [entry["id"] for entry in body["data"]]
        assert body["pagination"]["nextCursor"]
        after = body["pagination"]["nextCursor"]
        if finished and not body["pagination"]["hasMore"] and not body["data"]:
            break
        time.sleep(0.02)
    assert received == chain(app, org)
    assert len(received) == 120 + 15


def test_an_open_transaction_delays_the_feed_and_never_makes_it_skip(
    app: Flask, client: FlaskClient, database_url: str, make_token: TokenFactory, org: str
) -> None:
    token = make_token(roles=AUDITOR)
    viewer = make_token()
    with entry_held_open(database_url, org):
        later = record_view(client, viewer, new_id())["auditLogId"]  # commits first
        body = feed(client, token)
        assert body["data"] == [] and body["pagination"]["hasMore"] is False
        held = body["pagination"]["nextCursor"]
    # The open transaction committed (leaving the block): both entries, the older one first.
    body = feed(client, token, held)
    assert [entry["id"] for entry in body["data"]] == chain(app, org)
    assert body["data"][-1]["id"] == later


def test_with_nothing_new_the_position_is_given_back(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    viewer = make_token()
    for _ in range(3):
        record_view(client, viewer, new_id())
    token = make_token(roles=AUDITOR)
    first = feed(client, token, limit=2)
    assert len(first["data"]) == 2 and first["pagination"]["hasMore"] is True
    second = feed(client, token, first["pagination"]["nextCursor"], limit=2)
    assert len(second["data"]) == 1 and second["pagination"]["hasMore"] is False
    position = second["pagination"]["nextCursor"]
    third = feed(client, token, position)
    assert third["data"] == [] and third["pagination"] == {
        "limit": 500,
        "nextCursor": position,
        "hasMore": False,
    }


def test_positions_survive_a_restart_of_the_service(
    app: Flask, client: FlaskClient, make_token: TokenFactory
) -> None:
    viewer = make_token()
    first = record_view(client, viewer, new_id())["auditLogId"]
    token = make_token(roles=AUDITOR)
    position = feed(client, token)["pagination"]["nextCursor"]
    second = record_view(client, viewer, new_id())["auditLogId"]
    restarted = create_app(app.config["SETTINGS"]).test_client()
    body = feed(restarted, token, position)
    assert [entry["id"] for entry in body["data"]] == [second] != [first]


@pytest.mark.parametrize(
    "forge",
    [
        lambda position: position[:-2] + ("AA" if not position.endswith("AA") else "BB"),
        lambda position: "bm90IGEgcG9zaXRpb24",
        lambda position: "%%%",
    ],
)
def test_a_forged_position_is_a_400(
    client: FlaskClient, make_token: TokenFactory, forge: Any
) -> None:
    record_view(client, make_token(), new_id())
    token = make_token(roles=AUDITOR)
    position = feed(client, token)["pagination"]["nextCursor"]
    response = client.get(f"{BASE}/feed?after={forge(position)}", headers=bearer(token))
    assert response.status_code == 400 and "after" in response.json["errors"]["query"]


def test_another_orgs_position_is_a_400(client: FlaskClient, make_token: TokenFactory) -> None:
    record_view(client, make_token(), new_id())
    position = feed(client, make_token(roles=AUDITOR))["pagination"]["nextCursor"]
    stranger = make_token(roles=AUDITOR, token_org=f"org-y-{new_id()[:8]}")
    response = client.get(f"{BASE}/feed?after={position}", headers=bearer(stranger))
    assert response.status_code == 400


def test_a_trail_cursor_is_not_a_feed_position(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    viewer = make_token()
    board = new_id()
    for _ in range(2):
        record_view(client, viewer, board)
    token = make_token(roles=AUDITOR)
    trail = client.get(f"{BASE}/dashboard/{board}?limit=1", headers=bearer(viewer)).json
    cursor = trail["pagination"]["nextCursor"]
    assert client.get(f"{BASE}/feed?after={cursor}", headers=bearer(token)).status_code == 400


@pytest.mark.parametrize("role", ["Users", "Power User"])
def test_the_feed_is_for_auditors_and_administrators(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    assert client.get(f"{BASE}/feed", headers=bearer(make_token(roles=(role,)))).status_code == 403


@pytest.mark.parametrize("limit", [1, 1000])
def test_a_feed_limit_of_1_to_1000_is_accepted(
    client: FlaskClient, make_token: TokenFactory, limit: int
) -> None:
    token = make_token(roles=AUDITOR)
    response = client.get(f"{BASE}/feed?limit={limit}", headers=bearer(token))
    assert response.status_code == 200 and response.json["pagination"]["limit"] == limit


def test_a_feed_page_holds_500_entries_unless_told(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    body = client.get(f"{BASE}/feed", headers=bearer(make_token(roles=AUDITOR))).json
    assert body["pagination"]["limit"] == 500


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "type=kpi", "cursor=x"])
def test_bad_feed_queries_are_400(
    client: FlaskClient, make_token: TokenFactory, query: str
) -> None:
    response = client.get(f"{BASE}/feed?{query}", headers=bearer(make_token(roles=AUDITOR)))
    assert response.status_code == 400
