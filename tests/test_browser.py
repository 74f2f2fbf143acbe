"""Swagger UI in a real browser: authorize with a token and try an operation."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.conftest import BASE, TokenFactory, new_id, record_view, running_gunicorn

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# What this machine's closed network needs: no background traffic, no sandbox as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on this machine (apt-get install chromium)"
)
def test_swagger_ui_authorizes_and_tries_recently_viewed(
    database_url: str, client: FlaskClient, make_token: TokenFactory, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    token = make_token()
    board = new_id()
    record_view(client, token, board, json={"name": "Browser board"})
    errors: list[str] = []
    with (
        running_gunicorn(database_url, AUDIT_SEAL_INTERVAL_SECONDS="0") as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{url}/docs")
        page.locator("button.authorize").first.click()
        page.locator(".auth-container input").first.fill(token)
        page.locator(".auth-btn-wrapper button.authorize").click()
        page.locator("button.btn-done").click()
        operation = page.locator(".opblock-get", has_text=f"{BASE}/dashboard/recently-viewed")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table tbody .response-col_status")
        status.first.wait_for()
        assert status.first.inner_text().strip().startswith("200")
        body = operation.locator(".live-responses-table .microlight").first.inner_text()
        assert board in body and "Browser board" in body
        page.screenshot(path=str(tmp_path / "swagger-ui.png"), full_page=True)
        browser.close()
    assert errors == []
    assert (tmp_path / "swagger-ui.png").stat().st_size > 10_000
