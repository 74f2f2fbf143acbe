"""Concurrent views are never lost or double counted; idempotent replays and 409s."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import BASE, TokenFactory, bearer, new_id, run_sql

THREADS = 50


def test_concurrent_views_are_counted_exactly(
    app: Flask, make_token: TokenFactory, org: str
) -> None:
    users = [f"user-{n}" for n in range(5)]
    tokens = {user: make_token(user=user) for user in users}
    dashboard = new_id()
    start = threading.Barrier(THREADS)

    def view(n: int) -> tuple[str, int, int]:
        user = users[n % len(users)]
        client = app.test_client()
        start.wait()
        response = client.post(f"{BASE}/dashboard/{dashboard}/view", headers=bearer(tokens[user]))
        assert response.status_code == 200, response.json
        return user, response.json["data"]["viewCount"], response.json["data"]["totalViews"]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(view, range(THREADS)))

    # Every response saw a distinct total, and each user's counts are 1..n without gaps.
    assert sorted(total for _, _, total in results) == list(range(1, THREADS + 1))
    per_user = Counter(user for user, _, _ in results)
    for user in users:
        assert sorted(c for u, c, _ in results if u == user) == list(range(1, per_user[user] + 1))

    client = app.test_client()
    stats = client.get(
        f"{BASE}/dashboard/{dashboard}/stats?days=1", headers=bearer(tokens["user-0"])
    ).json["data"]
    assert stats["totalViews"] == THREADS and stats["uniqueViewers"] == len(users)
    assert stats["dailyViews"][-1] == {
        "date": stats["dailyViews"][-1]["date"],
        "views": THREADS,
        "uniqueViewers": len(users),
    }
    assert sum(v["viewCount"] for v in stats["topViewers"]) == THREADS
    (entries,) = run_sql(
        app,
        "SELECT count(*) FROM audit_entries WHERE org = :org AND target_id = :d",
        org=org,
        d=dashboard,
    )
    assert entries == (THREADS,)
    (connections,) = run_sql(
        app, "SELECT count(DISTINCT request_id) FROM audit_entries WHERE org = :org", org=org
    )
    assert connections == (THREADS,)


def test_idempotent_repeat_replays_the_first_response(app: Flask, token: str) -> None:
    client = app.test_client()
    d = new_id()
    headers = {**bearer(token), "Idempotency-Key": "retry-1"}
    first = client.post(f"{BASE}/dashboard/{d}/view", json={"name": "A"}, headers=headers)
    again = client.post(f"{BASE}/dashboard/{d}/view", json={"name": "A"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.get_data() == first.get_data()  # byte for byte, fields in the same order
    assert (
        again.headers["Idempotent-Replayed"] == "true"
        and "Idempotent-Replayed" not in first.headers
    )
    third = client.post(f"{BASE}/dashboard/{d}/view", headers=bearer(token))
    assert third.json["data"]["viewCount"] == 2


def test_absent_body_and_empty_object_are_the_same_request(app: Flask, token: str) -> None:
    client = app.test_client()
    d = new_id()
    headers = {**bearer(token), "Idempotency-Key": "same"}
    first = client.post(f"{BASE}/dashboard/{d}/view", headers=headers)
    again = client.post(f"{BASE}/dashboard/{d}/view", json={}, headers=headers)
    assert again.status_code == 200 and again.json == first.json


def test_reusing_a_key_for_another_request_is_409(app: Flask, token: str) -> None:
    client = app.test_client()
    d = new_id()
    headers = {**bearer(token), "Idempotency-Key": "k"}
    assert client.post(f"{BASE}/dashboard/{d}/view", headers=headers).status_code == 200
    other_dashboard = client.post(f"{BASE}/dashboard/{new_id()}/view", headers=headers)
    other_body = client.post(f"{BASE}/dashboard/{d}/view", json={"name": "B"}, headers=headers)
    for response in (other_dashboard, other_body):
        assert response.status_code == 409
        assert response.json["code"] == 409 and response.json["status"] == "Conflict"
    assert (
        client.post(f"{BASE}/dashboard/{d}/view", headers=bearer(token)).json["data"]["viewCount"]
        == 2
    )


def test_keys_belong_to_one_token(app: Flask, make_token: TokenFactory) -> None:
    client = app.test_client()
    d = new_id()
    first, second = make_token(user="a"), make_token(user="b")
    one = client.post(
        f"{BASE}/dashboard/{d}/view", headers={**bearer(first), "Idempotency-Key": "k"}
    )
    two = client.post(
        f"{BASE}/dashboard/{d}/view", headers={**bearer(second), "Idempotency-Key": "k"}
    )
    assert one.json["data"]["totalViews"] == 1 and two.json["data"]["totalViews"] == 2


def test_failed_requests_are_not_remembered(app: Flask, token: str) -> None:
    client = app.test_client()
    d = new_id()
    headers = {**bearer(token), "Idempotency-Key": "after-a-400"}
    assert (
        client.post(f"{BASE}/dashboard/{d}/view", json={"bad": 1}, headers=headers).status_code
        == 400
    )
    assert client.post(f"{BASE}/dashboard/{d}/view", headers=headers).status_code == 200


def test_keys_expire_after_24_hours(app: Flask, token: str, org: str) -> None:
    client = app.test_client()
    d = new_id()
    key = f"old-{new_id()}"
    headers = {**bearer(token), "Idempotency-Key": key}
    client.post(f"{BASE}/dashboard/{d}/view", headers=headers)
    run_sql(
        app,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = :key",
        key=key,
    )
    later = client.post(f"{BASE}/dashboard/{d}/view", headers=headers)
    assert later.status_code == 200 and later.json["data"]["viewCount"] == 2
    assert "Idempotent-Replayed" not in later.headers


def test_bad_idempotency_key_is_400(app: Flask, token: str) -> None:
    client = app.test_client()
    response = client.post(
        f"{BASE}/dashboard/{new_id()}/view", headers={**bearer(token), "Idempotency-Key": "x" * 256}
    )
    assert response.status_code == 400 and "Idempotency-Key" in response.json["errors"]["headers"]


def test_event_endpoint_is_idempotent_too(app: Flask, token: str) -> None:
    client = app.test_client()
    body = {"type": "kpi", "action": "edit", "targetId": new_id()}
    headers = {**bearer(token), "Idempotency-Key": "event-1"}
    first = client.post(BASE, json=body, headers=headers)
    again = client.post(BASE, json=body, headers=headers)
    assert first.status_code == again.status_code == 201 and again.json == first.json
    assert client.post(BASE, json={**body, "action": "other"}, headers=headers).status_code == 409


def test_concurrent_duplicates_count_once(app: Flask, token: str) -> None:
    d = new_id()
    start = threading.Barrier(20)

    def send(_: int) -> tuple[int, int | None]:
        client = app.test_client()
        start.wait()
        response = client.post(
            f"{BASE}/dashboard/{d}/view", headers={**bearer(token), "Idempotency-Key": "burst"}
        )
        return response.status_code, (response.json.get("data") or {}).get("viewCount")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(send, range(20)))
    assert {status for status, _ in results} <= {200, 409}
    assert {count for status, count in results if status == 200} == {1}
    client = app.test_client()
    assert (
        client.post(f"{BASE}/dashboard/{d}/view", headers=bearer(token)).json["data"]["viewCount"]
        == 2
    )


def test_a_replayed_entry_is_byte_identical_to_the_first_answer(
    app: Flask, make_token: TokenFactory
) -> None:
    client = app.test_client()
    token = make_token(roles=("Administrator",))
    headers = {**bearer(token), "Idempotency-Key": "entry-1"}
    body = {"type": "kpi", "action": "edit", "targetId": new_id(), "details": {"z": 1, "a": 2}}
    first = client.post(BASE, json=body, headers=headers)
    again = client.post(BASE, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()


def view_with_key(client: FlaskClient, secret: str, board: str, key: str, **body: Any) -> Any:
    headers = {**bearer(secret), "Idempotency-Key": key}
    response = client.post(f"{BASE}/dashboard/{board}/view", json=body or None, headers=headers)
    assert response.status_code == 200, response.json
    return response


def age_key(app: Flask, key: str, hours: float) -> None:
    run_sql(
        app,
        "UPDATE idempotency_keys SET created_at = now() - make_interval(secs => :s)"
        " WHERE key = :key",
        s=hours * 3600,
        key=key,
    )


@pytest.mark.parametrize("newer_first", [False, True])
def test_each_token_gets_back_its_own_answer_to_a_shared_key(
    app: Flask, make_token: TokenFactory, newer_first: bool
) -> None:
    client = app.test_client()
    key, board = f"shared-{new_id()}", new_id()
    # Tokens made in order: the second has the higher id. Either may answer the key first.
    tokens = [make_token(user="a"), make_token(user="b")]
    writers = tokens[::-1] if newer_first else tokens
    answers = {secret: view_with_key(client, secret, board, key) for secret in writers}
    assert [answers[secret].json["data"]["userId"] for secret in tokens] == ["a", "b"]
    for secret in tokens:
        again = view_with_key(client, secret, board, key)
        assert again.get_data() == answers[secret].get_data()
        assert again.headers["Idempotent-Replayed"] == "true"


def test_each_of_a_tokens_keys_replays_its_own_answer(app: Flask, token: str) -> None:
    client = app.test_client()
    prefix = new_id()
    # The middle key first, then the keys on either side of it.
    keys = [f"{prefix}-b", f"{prefix}-a", f"{prefix}-c"]
    boards = {key: new_id() for key in keys}
    answers = {key: view_with_key(client, token, boards[key], key).get_data() for key in keys}
    for key in keys:
        again = view_with_key(client, token, boards[key], key)
        assert again.get_data() == answers[key] and again.headers["Idempotent-Replayed"] == "true"


def test_a_retry_listing_details_in_another_order_is_the_same_request(
    app: Flask, token: str
) -> None:
    client = app.test_client()
    target, headers = new_id(), {**bearer(token), "Idempotency-Key": f"order-{new_id()}"}
    body = {"type": "kpi", "action": "edit", "targetId": target}
    first = client.post(BASE, json={**body, "details": {"field": "a", "to": 1}}, headers=headers)
    again = client.post(BASE, json={**body, "details": {"to": 1, "field": "a"}}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"


def test_an_idempotency_key_is_1_to_255_characters(app: Flask, token: str) -> None:
    client = app.test_client()
    longest = view_with_key(client, token, new_id(), "k" * 255)
    assert longest.json["data"]["viewCount"] == 1
    empty = client.post(
        f"{BASE}/dashboard/{new_id()}/view", headers={**bearer(token), "Idempotency-Key": ""}
    )
    assert empty.status_code == 400 and "Idempotency-Key" in empty.json["errors"]["headers"]


def test_a_key_still_replays_just_before_24_hours(app: Flask, token: str) -> None:
    client = app.test_client()
    key, board = f"young-{new_id()}", new_id()
    first = view_with_key(client, token, board, key)
    age_key(app, key, 23.9)
    again = view_with_key(client, token, board, key)
    assert again.get_data() == first.get_data() and again.headers["Idempotent-Replayed"] == "true"


def test_an_expired_key_reused_then_retried_replays_the_new_answer(app: Flask, token: str) -> None:
    client = app.test_client()
    key, board = f"reused-{new_id()}", new_id()
    view_with_key(client, token, board, key)
    age_key(app, key, 24.1)
    # Reused for another body after expiry: a new request, whose answer is then replayed.
    fresh = view_with_key(client, token, board, key, name="Renamed")
    assert fresh.json["data"]["viewCount"] == 2 and "Idempotent-Replayed" not in fresh.headers
    retry = view_with_key(client, token, board, key, name="Renamed")
    assert retry.get_data() == fresh.get_data() and retry.headers["Idempotent-Replayed"] == "true"
    other = client.post(
        f"{BASE}/dashboard/{board}/view",
        json={"name": "Other"},
        headers={**bearer(token), "Idempotency-Key": key},
    )
    assert other.status_code == 409  # the new fingerprint is the one remembered
