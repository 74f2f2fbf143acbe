"""Links are built on PUBLIC_BASE_URL or a trusted host; any other host is refused."""

from __future__ import annotations

import dataclasses
import runpy
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from insights_audit.web.request_context import host_name
from tests.conftest import BASE, TokenFactory, bearer, new_id

ROOT = Path(__file__).resolve().parent.parent


def page_link(client: FlaskClient, token: str, board: str, **headers: str) -> str:
    for _ in range(2):
        client.post(f"{BASE}/dashboard/{board}/view", headers=bearer(token))
    response = client.get(f"{BASE}/dashboard/{board}?limit=1", headers={**bearer(token), **headers})
    assert response.status_code == 200, response.json
    return response.headers["Link"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example"])
def test_a_request_for_an_untrusted_host_is_a_400(
    client: FlaskClient, token: str, host: str
) -> None:
    response = client.get(f"{BASE}/dashboard/{new_id()}", headers={**bearer(token), "Host": host})
    assert response.status_code == 400
    assert response.json["message"].startswith("Host not allowed")
    assert client.get("/healthz", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
def test_loopback_hosts_are_trusted_by_default_and_links_use_them(
    client: FlaskClient, token: str, host: str
) -> None:
    link = page_link(client, token, new_id(), Host=host)
    assert link.startswith(f"<http://{host.lower()}{BASE}/dashboard/")


def test_public_base_url_decides_links_whatever_the_host(
    app: Flask, make_token: TokenFactory
) -> None:
    settings = dataclasses.replace(
        app.config["SETTINGS"], public_base_url="https://audit.example.com"
    )
    public = create_app(settings).test_client()
    link = page_link(public, make_token(), new_id(), Host="evil.example")
    assert link.startswith(f"<https://audit.example.com{BASE}/dashboard/")


def test_configured_trusted_hosts_replace_the_loopback_names(
    app: Flask, make_token: TokenFactory
) -> None:
    settings = dataclasses.replace(app.config["SETTINGS"], trusted_hosts=("audit.internal",))
    served = create_app(settings).test_client()
    assert served.get("/healthz", headers={"Host": "audit.internal:443"}).status_code == 200
    assert served.get("/healthz", headers={"Host": "localhost"}).status_code == 400


def test_host_names_drop_their_port() -> None:
    assert [host_name(h) for h in ("a.b:80", "[::1]:8000", "[::1]", "::1", "A.B")] == [
        "a.b",
        "::1",
        "::1",
        "::1",
        "a.b",
    ]


@pytest.mark.parametrize(("proxies", "allowed"), [("0", ""), ("", ""), ("1", "*")])
def test_gunicorn_trusts_forwarded_headers_only_behind_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch, proxies: str, allowed: str
) -> None:
    monkeypatch.setenv("TRUSTED_PROXIES", proxies)
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert config["forwarded_allow_ips"] == allowed
