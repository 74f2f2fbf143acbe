"""The built-in viewer: its API (viewer links, ``/me``), how ``/ui/`` is served, and a
person's path through it in a real browser."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from insights_audit.config import Settings
from tests.conftest import (
    BASE,
    TEST_SIGNING_KEY,
    TokenFactory,
    bearer,
    new_id,
    record_view,
    run_sql,
    running_gunicorn,
)
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

ADMIN = ("Administrator",)
SCREENSHOTS = Path(
    os.environ.get("SCREENSHOT_DIR", Path(__file__).parent.parent / ".data" / "screenshots")
)


def mint(client: FlaskClient, admin: str, **body: Any) -> Any:
    response = client.post(
        f"{BASE}/viewer-links", json={"userId": "user-1", **body}, headers=bearer(admin)
    )
    return response


def test_a_viewer_link_is_a_read_only_token_for_one_person_and_is_audited(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    admin = make_token(roles=ADMIN, user="admin-1")
    response = mint(client, admin, userEmail="u1@example.com", roles=["Auditor"], ttlSeconds=600)
    assert response.status_code == 201, response.json
    assert response.json["message"] == "Successfully created viewer link"
    link = response.json["data"]
    assert link["url"] == f"http://localhost/ui/#token={link['token']}"
    me = client.get(f"{BASE}/me", headers=bearer(link["token"])).json["data"]
    assert me["userId"] == "user-1" and me["userEmail"] == "u1@example.com"
    assert me["roles"] == ["Auditor"] and me["scopes"] == ["api-readonly"]
    assert me["expiresAt"] == link["expiresAt"]
    # It reads, it never writes.
    assert client.get(f"{BASE}/feed", headers=bearer(link["token"])).status_code == 200
    view = client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(link["token"]))
    assert view.status_code == 403
    trail = client.get(f"{BASE}?type=token", headers=bearer(admin)).json["data"]
    (entry,) = trail
    assert entry["action"] == "viewer-link.create" and entry["userId"] == "admin-1"
    assert entry["details"]["userId"] == "user-1" and entry["details"]["roles"] == ["Auditor"]
    assert entry["details"]["expiresAt"] == link["expiresAt"]
    assert link["token"] not in json.dumps(entry)


def test_a_viewer_link_expires(app: Flask, client: FlaskClient, make_token: TokenFactory) -> None:
    admin = make_token(roles=ADMIN)
    link = mint(client, admin, ttlSeconds=60).json["data"]
    assert client.get(f"{BASE}/me", headers=bearer(link["token"])).status_code == 200
    run_sql(
        app,
        "UPDATE api_tokens SET expires_at = now() - interval '1 second'"
        " WHERE user_id = 'user-1' AND name LIKE 'viewer link%'",
    )
    assert client.get(f"{BASE}/me", headers=bearer(link["token"])).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttlSeconds": 59}, "ttlSeconds"),
        ({"ttlSeconds": 86401}, "ttlSeconds"),
        ({"roles": ["Root"]}, "roles"),
        ({"roles": []}, "roles"),
        ({"userId": ""}, "userId"),
        ({"userEmail": "not-an-email"}, "userEmail"),
        ({"token": "x"}, "token"),
    ],
)
def test_bad_viewer_links_are_400(
    client: FlaskClient, make_token: TokenFactory, body: dict[str, Any], field: str
) -> None:
    response = mint(client, make_token(roles=ADMIN), **body)
    assert response.status_code == 400, response.json
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(
    ("roles", "scopes"),
    [(("Users",), ("api",)), (("Auditor",), ("api",)), (ADMIN, ("api-readonly",))],
)
def test_only_administrators_mint_viewer_links(
    client: FlaskClient, make_token: TokenFactory, roles: tuple[str, ...], scopes: tuple[str, ...]
) -> None:
    assert mint(client, make_token(roles=roles, scopes=scopes)).status_code == 403


def test_me_needs_a_token(client: FlaskClient) -> None:
    assert client.get(f"{BASE}/me").status_code == 401
    assert client.get(f"{BASE}/me?x=1", headers=bearer("iat_nope")).status_code == 401


def test_the_cli_mints_a_viewer_link(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["viewer-link", "--org", org, "--user", "u-9", "--role", "Auditor", "--ttl", "90m"]
    )
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    token = url.split("#token=", 1)[1]
    me = client.get(f"{BASE}/me", headers=bearer(token)).json["data"]
    assert me["userId"] == "u-9" and me["org"] == org and me["roles"] == ["Auditor"]
    trail = client.get(f"{BASE}?type=token", headers=bearer(make_token(roles=ADMIN))).json["data"]
    assert trail[0]["details"]["via"] == "cli" and trail[0]["userId"] == "insights-audit"
    for bad in (["--ttl", "2d"], ["--ttl", "soon"], ["--role", "Root"]):
        result = runner.invoke(args=["viewer-link", "--org", org, "--user", "u", *bad])
        assert result.exit_code != 0


def test_the_viewer_is_served_with_a_strict_policy_and_cacheable_assets(
    client: FlaskClient,
) -> None:
    page = client.get("/ui/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-cache"
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html
    assets = re.findall(r'(?:src|href)="(/ui/assets/[^"]+)"', html)
    assert len(assets) == 4
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert re.search(r"\.[0-9a-f]{16}\.", asset)
    assert client.get("/ui/assets/app.js").status_code == 404
    assert client.get("/ui").status_code == 308
    assert not [url for url in re.findall(r'(?:src|href)="([^"]+)"', html) if "//" in url]


def test_frame_ancestors_is_a_setting(database_url: str) -> None:
    app = create_app(
        Settings(
            database_url=database_url,
            audit_signing_key=TEST_SIGNING_KEY,
            ui_frame_ancestors="https://portal.example.com",
        )
    )
    page = app.test_client().get("/ui/")
    assert "frame-ancestors https://portal.example.com" in page.headers["Content-Security-Policy"]


def test_vendored_assets_keep_their_licences() -> None:
    vendor = Path(__file__).parent.parent / "insights_audit" / "viewer" / "static" / "vendor"
    for folder in vendor.iterdir():
        assert (folder / "LICENSE").read_text().strip()
        assert (folder / "VERSION").read_text().strip()


# ---- in a real browser ----------------------------------------------------------------


def post(url: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method="POST",
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def get(url: str, path: str, token: str) -> Any:
    request = urllib.request.Request(f"{url}{path}", headers=bearer(token))
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def check_page(page: Any, name: str, errors: list[str]) -> None:
    """No console error, no serious or critical axe violation, nothing wider than 390 px; a
    screenshot kept."""
    from axe_playwright_python.sync_playwright import Axe

    page.wait_for_load_state("networkidle")
    results = Axe().run(page)
    serious = [
        (violation["id"], [node["target"] for node in violation["nodes"]][:3])
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert serious == [], (name, serious)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, (name, width)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert errors == [], (name, errors)


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)"
)
def test_a_person_looks_at_usage_and_the_trail_in_the_viewer(
    app_role_url: str, client: FlaskClient, make_token: TokenFactory, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    me = make_token(user="user-1")
    other = make_token(user="user-2", email="user-2@example.com")
    admin = make_token(roles=ADMIN, user="admin-1")
    board, second = new_id(), new_id()
    record_view(client, me, board, json={"name": "Revenue board"})
    record_view(client, me, board)
    record_view(client, other, board)
    record_view(client, other, second, json={"name": "Churn board"})
    kpi = new_id()
    for action, threshold in (("settings.update", 90), ("delete", 0)):
        body = {
            "type": "kpi",
            "action": action,
            "targetId": kpi,
            "details": {"threshold": threshold},
        }
        assert client.post(BASE, json=body, headers=bearer(admin)).status_code == 201
    errors: list[str] = []
    with (
        running_gunicorn(app_role_url, AUDIT_SEAL_INTERVAL_SECONDS="1") as url,
        sync_playwright() as playwright,
    ):
        link = post(
            url, f"{BASE}/viewer-links", admin, {"userId": "user-1", "roles": ["Users", "Auditor"]}
        )
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, accept_downloads=True)
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(link["data"]["url"])

        # Signed in by the link; the token has left the address bar for the tab's storage.
        recent = page.get_by_role("region", name="My recently viewed")
        expect(recent.get_by_role("link", name="Revenue board")).to_be_visible()
        assert "token=" not in page.url
        assert (
            page.evaluate("sessionStorage.getItem('insights-audit-token')") == link["data"]["token"]
        )
        expect(page.get_by_text("user-1 ·")).to_be_visible()
        check_page(page, "overview", errors)

        # The dashboard: a chart of real size, whose numbers are the stats endpoint's.
        recent.get_by_role("link", name="Revenue board").click()
        expect(page.get_by_role("heading", name="Revenue board", level=1)).to_be_visible()
        canvas = page.locator(".chart canvas").first
        expect(canvas).to_be_visible()
        box = canvas.bounding_box()
        assert box is not None and box["width"] > 250 and box["height"] > 150
        stats = get(url, f"{BASE}/dashboard/{board}/stats?days=30", me)["data"]
        page.get_by_text("The numbers of each day").click()
        cells = page.locator("details table tbody tr").last.locator("td").all_inner_texts()
        assert cells == [stats["dailyViews"][-1]["date"], "3", "2"]
        expect(
            page.get_by_role("region", name="Viewers of this dashboard also viewed").get_by_role(
                "link", name="Churn board"
            )
        ).to_be_visible()
        check_page(page, "dashboard", errors)

        # Search with two filters, open an entry, export what the filters keep as CSV.
        page.get_by_role("link", name="Search").click()
        page.get_by_role("checkbox", name="kpi").check()
        page.get_by_label("Actions").fill("settings.*")
        page.get_by_role("button", name="Search").click()
        rows = page.locator("#h-entries ~ div table tbody tr")
        expect(rows).to_have_count(1)
        rows.first.click()
        expect(page.locator("pre.json").first).to_contain_text('"threshold": 90')
        with page.expect_download() as download:
            page.get_by_role("button", name="CSV").click()
        exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [(row["type"], row["action"]) for row in exported] == [("kpi", "settings.update")]
        check_page(page, "search", errors)

        # Live: a new entry appears within seconds.
        page.get_by_role("link", name="Live").click()
        expect(page.get_by_text("Connected")).to_be_visible(timeout=10_000)
        post(
            url, f"{BASE}", admin, {"type": "mapping", "action": "live.check", "targetId": new_id()}
        )
        expect(page.locator(".live-log").get_by_text("live.check")).to_be_visible(timeout=5_000)
        check_page(page, "live", errors)

        # The report, printed to PDF.
        page.get_by_role("link", name="Report").click()
        expect(page.get_by_role("heading", name="Views per day")).to_be_visible()
        expect(page.locator(".figures").first).to_contain_text("4")
        check_page(page, "report", errors)
        pdf = tmp_path / "report.pdf"
        page.pdf(path=str(pdf))
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 10_000
        browser.close()


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)"
)
def test_pages_a_token_cannot_use_are_not_offered_and_a_403_reads_as_a_sentence(
    database_url: str, make_token: TokenFactory
) -> None:
    from playwright.sync_api import expect, sync_playwright

    token = make_token(user="user-3")
    with (
        running_gunicorn(database_url, AUDIT_SEAL_INTERVAL_SECONDS="0") as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{url}/ui/")
        page.get_by_label("API token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        nav = page.get_by_role("navigation", name="Pages")
        expect(nav.get_by_role("link", name="Overview")).to_be_visible()
        for name in ("Search", "Live", "Report"):
            expect(nav.get_by_role("link", name=name)).to_be_hidden()
        page.goto(f"{url}/ui/#/search")
        expect(page.get_by_role("alert")).to_contain_text("auditors and administrators")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.get_by_label("API token").fill("iat_not-a-token")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text("not valid")
        browser.close()
