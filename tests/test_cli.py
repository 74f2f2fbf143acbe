"""The ``insights-audit`` command: migrations, tokens, exports and reports."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from insights_audit.db import schema_migrations
from insights_audit.dev import embedded
from tests.conftest import BASE, bearer

CLI = str(Path(sys.executable).with_name("insights-audit"))


def cli(
    database_url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, **(env or {})}
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_db_upgrade_builds_a_fresh_database_and_is_safe_to_repeat(server_url: str) -> None:
    name = f"insights_audit_cli_{uuid.uuid4().hex[:8]}"
    url = embedded.ensure_database(server_url, name)
    try:
        for _ in range(2):
            result = cli(url, "db", "upgrade")
            assert result.returncode == 0, result.stderr
            assert f"Database is at revision {schema_migrations.head_revision()}." in result.stdout
        result = cli(url, "tokens", "list")
        assert result.returncode == 0 and result.stdout == ""
    finally:
        embedded.drop_database(server_url, name)


def test_tokens_create_list_revoke(database_url: str, client: FlaskClient) -> None:
    org = f"cli-{uuid.uuid4().hex[:8]}"
    created = cli(
        database_url,
        "tokens",
        "create",
        "--org",
        org,
        "--user",
        "u-1",
        "--email",
        "u1@example.com",
        "--role",
        "Power User",
        "--role",
        "Auditor",
        "--role",
        "Security Manager",
        "--scope",
        "api-readonly",
        "--name",
        "ci bot",
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("iat_") and " " not in secret
    assert (
        client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret)).status_code == 200
    )

    listed = cli(database_url, "tokens", "list", "--org", org)
    assert listed.returncode == 0
    (line,) = listed.stdout.strip().splitlines()
    token_id, name, token_org, user, roles, scopes, state = line.split("\t")
    assert (name, token_org, user, roles, scopes, state) == (
        "ci bot",
        org,
        "u-1",
        "Auditor,Power User,Security Manager",
        "api-readonly",
        "active",
    )
    assert secret not in listed.stdout

    revoked = cli(database_url, "tokens", "revoke", token_id)
    assert revoked.returncode == 0
    assert cli(database_url, "tokens", "list", "--org", org).stdout.strip().endswith("\trevoked")
    assert (
        client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret)).status_code == 401
    )
    again = cli(database_url, "tokens", "revoke", token_id)
    assert again.returncode != 0 and "No active token" in again.stderr


def test_expired_tokens_are_listed_as_expired(database_url: str, app) -> None:
    from tests.conftest import run_sql

    org = f"cli-{uuid.uuid4().hex[:8]}"
    assert (
        cli(
            database_url,
            "tokens",
            "create",
            "--org",
            org,
            "--user",
            "u",
            "--role",
            "Users",
            "--scope",
            "api",
            "--expires-in-days",
            "1",
        ).returncode
        == 0
    )
    run_sql(
        app,
        "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE org = :org",
        org=org,
    )
    assert (
        cli(database_url, "tokens", "list", "--org", org).stdout.strip().split("\t")[-1]
        == "expired"
    )


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--org", "o", "--user", "u", "--role", "Superuser", "--scope", "api"], "Superuser"),
        (["--org", "o", "--user", "u", "--role", "Users", "--scope", "admin"], "admin"),
        (["--org", "o", "--user", "u", "--scope", "api"], "--role"),
        (["--user", "u", "--role", "Users", "--scope", "api"], "--org"),
        (["--org", "o", "--user", "u", "--role", "Users"], "--scope"),
        (
            [
                "--org",
                "o",
                "--user",
                "u",
                "--role",
                "Users",
                "--scope",
                "api",
                "--expires-in-days",
                "0",
            ],
            "--expires-in-days",
        ),
    ],
)
def test_tokens_create_refuses_bad_options(
    database_url: str, args: list[str], complaint: str
) -> None:
    result = cli(database_url, "tokens", "create", *args)
    assert result.returncode != 0
    assert complaint in result.stderr
    assert "iat_" not in result.stdout


@pytest.mark.parametrize("args", [("tokens", "list"), ("db", "upgrade"), ("audit", "verify")])
def test_an_unreachable_database_is_one_clear_line(args: tuple[str, ...]) -> None:
    result = cli("postgresql://nobody:secret@127.0.0.1:1/none", *args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error: cannot reach the database at postgresql://nobody:***@")
