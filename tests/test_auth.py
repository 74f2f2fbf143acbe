"""Authentication (bearer tokens), authorization by scope and role, and the order of the
checks: 404, 405, 401, 403, 400, then 404 for a missing resource."""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from insights_audit.db.unit_of_work import transaction
from insights_audit.web.tokens import list_tokens, revoke_token
from tests.conftest import BASE, TokenFactory, bearer, new_id, run_sql

AUTH_MESSAGE = "Authentication required - No valid API token provided"
FORBIDDEN_MESSAGE = "Insufficient permissions - Valid token but lacks required permissions"

READ_PATHS = [
    "/dashboard/recently-viewed",
    "/dashboard/most-viewed",
    "/dashboard/{d}/stats",
    "/dashboard/{d}",
    "/mapping/{d}",
    "/kpi/{d}",
    "/507f1f77bcf86cd799439011",
]


def assert_unauthorized(response) -> None:
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"message": AUTH_MESSAGE, "code": 401, "status": "Unauthorized"}


def assert_forbidden(response) -> None:
    assert response.status_code == 403
    assert response.json == {"message": FORBIDDEN_MESSAGE, "code": 403, "status": "Forbidden"}


@pytest.mark.parametrize("path", READ_PATHS)
def test_every_read_endpoint_requires_a_token(client: FlaskClient, path: str) -> None:
    assert_unauthorized(client.get(BASE + path.format(d=new_id())))


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer iat_",
        "Token iat_abc",
        "Bearer iat_unknown-token-value",
        "Bearer not-even-our-prefix",
    ],
)
def test_malformed_or_unknown_tokens_are_unauthorized(client: FlaskClient, header: str) -> None:
    response = client.get(f"{BASE}/dashboard/recently-viewed", headers={"Authorization": header})
    assert_unauthorized(response)


def test_revoked_token_is_unauthorized(client: FlaskClient, app, token: str, org: str) -> None:
    path = f"{BASE}/dashboard/recently-viewed"
    assert client.get(path, headers=bearer(token)).status_code == 200
    with app.app_context(), transaction() as connection:
        (token_id,) = [t.id for t in list_tokens(connection, org)]
        assert revoke_token(connection, token_id)
    assert_unauthorized(client.get(path, headers=bearer(token)))


def test_expired_token_is_unauthorized(
    client: FlaskClient, app, make_token: TokenFactory, org: str
) -> None:
    secret = make_token(expires_in_days=1)
    path = f"{BASE}/dashboard/recently-viewed"
    assert client.get(path, headers=bearer(secret)).status_code == 200
    run_sql(
        app,
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE org = :org",
        org=org,
    )
    assert_unauthorized(client.get(path, headers=bearer(secret)))


def test_readonly_token_reads(client: FlaskClient, make_token: TokenFactory) -> None:
    secret = make_token(scopes=("api-readonly",))
    for path in READ_PATHS[:-1]:
        response = client.get(BASE + path.format(d=new_id()), headers=bearer(secret))
        assert response.status_code == 200, path


def test_readonly_token_cannot_record_a_view(client: FlaskClient, make_token: TokenFactory) -> None:
    secret = make_token(scopes=("api-readonly",))
    assert_forbidden(client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret)))


def test_readonly_token_cannot_record_an_event(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    secret = make_token(scopes=("api-readonly",))
    body = {"type": "kpi", "action": "update", "targetId": new_id()}
    assert_forbidden(client.post(BASE, json=body, headers=bearer(secret)))


@pytest.mark.parametrize(
    "roles", [("Auditor",), ("Security Manager",), ("Auditor", "Security Manager")]
)
def test_token_without_a_site_role_is_forbidden(
    client: FlaskClient, make_token: TokenFactory, roles: tuple[str, ...]
) -> None:
    secret = make_token(roles=roles)
    assert_forbidden(client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret)))
    assert_forbidden(client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret)))


@pytest.mark.parametrize("role", ["Opsera Administrator", "Administrator", "Power User", "Users"])
def test_every_site_role_may_record_a_view(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    secret = make_token(roles=(role,))
    response = client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret))
    assert response.status_code == 200


def test_unknown_path_is_404_before_authentication(client: FlaskClient) -> None:
    response = client.get(f"{BASE}/dashboard/{new_id()}/nothing-here")
    assert response.status_code == 404
    assert response.json == {"message": "Resource not found", "code": 404, "status": "Not Found"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/507f1f77bcf86cd799439011", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/507f1f77bcf86cd799439011", {"GET", "HEAD", "OPTIONS"}),
        ("PATCH", "/dashboard/{d}", {"GET", "HEAD", "OPTIONS"}),
        ("GET", "/dashboard/{d}/view", {"POST", "OPTIONS"}),
        ("DELETE", "", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("PUT", "", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("POST", "/export", {"GET", "HEAD", "OPTIONS"}),
        ("POST", "/feed", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_wrong_method_is_405_with_allow_before_authentication(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.open(BASE + path.format(d=new_id()), method=method)
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == allowed
    assert response.json["code"] == 405
    assert response.json["status"] == "Method Not Allowed"


def test_authentication_comes_before_input_validation(client: FlaskClient) -> None:
    assert_unauthorized(client.get(f"{BASE}/dashboard/not-a-uuid/stats?days=0"))


def test_authorization_comes_before_input_validation(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    secret = make_token(scopes=("api-readonly",))
    assert_forbidden(
        client.post(f"{BASE}/dashboard/not-a-uuid/view", data="[", headers=bearer(secret))
    )


def test_token_secret_has_a_recognisable_prefix_and_only_its_hash_is_stored(
    app,
    token: str,
    org: str,
) -> None:
    assert token.startswith("iat_") and len(token) >= 4 + 43
    rows = run_sql(app, "SELECT token_hash FROM api_tokens WHERE org = :org", org=org)
    assert len(rows) == 1
    stored = bytes(rows[0][0])
    assert token.encode() not in stored and len(stored) == 32


def test_cached_tokens_are_refused_soon_after_revocation(
    app,
    make_token: TokenFactory,
    org: str,
) -> None:
    cached = create_app(replace(app.config["SETTINGS"], token_cache_seconds=1))
    client = cached.test_client()
    secret = make_token()
    path = f"{BASE}/dashboard/recently-viewed"
    assert client.get(path, headers=bearer(secret)).status_code == 200
    run_sql(app, "UPDATE api_tokens SET revoked_at = now() WHERE org = :org", org=org)
    deadline = time.monotonic() + 5
    while client.get(path, headers=bearer(secret)).status_code == 200:
        assert time.monotonic() < deadline, "revocation must take effect within 5 seconds"
        time.sleep(0.1)
    assert_unauthorized(client.get(path, headers=bearer(secret)))


def test_cached_tokens_are_refused_the_moment_they_expire(
    app,
    make_token: TokenFactory,
    org: str,
) -> None:
    cached = create_app(replace(app.config["SETTINGS"], token_cache_seconds=60))
    client = cached.test_client()
    secret = make_token(expires_in_days=1)
    path = f"{BASE}/dashboard/recently-viewed"
    run_sql(
        app,
        "UPDATE api_tokens SET expires_at = now() + interval '1 second' WHERE org = :org",
        org=org,
    )
    assert client.get(path, headers=bearer(secret)).status_code == 200, "now cached, still valid"
    time.sleep(1.2)
    assert_unauthorized(client.get(path, headers=bearer(secret)))


@pytest.mark.parametrize("scheme", ["Token", "Basic", "JWT", "Bearer:"])
def test_a_valid_token_under_another_scheme_is_unauthorized(
    client: FlaskClient, token: str, scheme: str
) -> None:
    path = f"{BASE}/dashboard/recently-viewed"
    assert client.get(path, headers=bearer(token)).status_code == 200
    assert_unauthorized(client.get(path, headers={"Authorization": f"{scheme} {token}"}))


# 1 s: the shortest cache there is (TOKEN_CACHE_SECONDS is whole seconds) is still a cache.
@pytest.mark.parametrize("seconds", [1, 60])
def test_a_repeat_request_is_answered_from_the_token_cache(
    app: Flask, make_token: TokenFactory, org: str, seconds: int
) -> None:
    cached = create_app(dataclasses.replace(app.config["SETTINGS"], token_cache_seconds=seconds))
    client = cached.test_client()
    secret = make_token()
    path = f"{BASE}/dashboard/recently-viewed"
    assert client.get(path, headers=bearer(secret)).status_code == 200
    # Revoked behind the cache's back: the next request within the TTL never looks it up.
    run_sql(app, "UPDATE api_tokens SET revoked_at = now() WHERE org = :org", org=org)
    assert client.get(path, headers=bearer(secret)).status_code == 200
    # A cache of another worker (a fresh app) looks it up and refuses it.
    fresh = create_app(dataclasses.replace(app.config["SETTINGS"], token_cache_seconds=60))
    assert_unauthorized(fresh.test_client().get(path, headers=bearer(secret)))


def test_a_new_secret_is_the_prefix_and_256_random_bits(make_token: TokenFactory) -> None:
    secrets_ = {make_token() for _ in range(3)}
    assert len(secrets_) == 3
    for secret in secrets_:
        # 32 bytes in URL-safe base64 without padding: 43 characters.
        assert re.fullmatch(r"iat_[A-Za-z0-9_-]{43}", secret), secret


@pytest.mark.parametrize(
    ("named", "user", "email"),
    [
        ({}, "admin", "admin@example.com"),
        ({"userId": "admin"}, "admin", "admin@example.com"),
        ({"userId": "bob"}, "bob", None),
        ({"userId": "aaron"}, "aaron", None),  # sorts before "admin", as "bob" sorts after
        ({"userId": "bob", "userEmail": "bob@example.com"}, "bob", "bob@example.com"),
    ],
)
def test_an_administrator_writes_as_itself_unless_it_names_another_user(
    client: FlaskClient, make_token: TokenFactory, named: dict, user: str, email: str | None
) -> None:
    """Naming itself is the administrator's own entry (its email from the token); naming
    another user records that user, and the administrator as the one who wrote it."""
    admin = make_token(user="admin", email="admin@example.com", roles=("Administrator",))
    body = {"type": "kpi", "action": "update", "targetId": new_id(), **named}
    response = client.post(BASE, json=body, headers=bearer(admin))
    assert response.status_code == 201, response.json
    entry = response.json["data"]
    assert (entry["userId"], entry["userEmail"], entry["recordedBy"]) == (user, email, "admin")


def test_protected_operations_keep_their_own_documentation(client: FlaskClient) -> None:
    """The authorization wrapper keeps each operation's name and docstring for OpenAPI."""
    spec = client.get("/openapi.json").json
    feed = spec["paths"][f"{BASE}/feed"]["get"]
    assert feed["summary"] == "Follow my organisation's trail"
    assert "exactly once" in feed["description"]
    assert feed["security"] == [{"bearerAuth": []}]
