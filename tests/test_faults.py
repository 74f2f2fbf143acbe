"""Bad luck and bad actors: an exhausted pool answers 503 quickly; secrets never leak."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pytest
from flask import Flask

from insights_audit import create_app
from insights_audit.extensions import engine
from tests.conftest import BASE, TokenFactory, bearer


def test_an_exhausted_pool_answers_503_with_retry_after_within_the_pool_timeout(
    app: Flask, make_token: TokenFactory
) -> None:
    settings = replace(
        app.config["SETTINGS"], pool_size=1, max_overflow=0, pool_timeout_s=1, token_cache_seconds=0
    )
    small = create_app(settings)
    secret = make_token()
    with small.app_context():
        held = engine().connect()  # the pool's only connection, busy elsewhere
        try:
            started = time.monotonic()
            response = small.test_client().get(
                f"{BASE}/dashboard/recently-viewed", headers=bearer(secret)
            )
            elapsed = time.monotonic() - started
        finally:
            held.close()
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.json["code"] == 503 and response.json["status"] == "Service Unavailable"
    assert elapsed < 3
    # Free again: the same app serves the next request without a restart.
    ok = small.test_client().get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    assert ok.status_code == 200


def test_tokens_appear_in_no_error_body_and_no_log(
    app: Flask, make_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    unknown = "iat_" + "x" * 43
    readonly = make_token(scopes=("api-readonly",))
    caplog.set_level(logging.DEBUG)
    responses = [
        client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(unknown)),
        client.post(f"{BASE}/dashboard/not-a-uuid/view", headers=bearer(readonly)),
        client.get(f"{BASE}/dashboard/not-a-uuid/stats", headers=bearer(readonly)),
        client.get(f"{BASE}/dashboard/recently-viewed?limit=0", headers=bearer(readonly)),
    ]
    assert [r.status_code for r in responses] == [401, 403, 400, 400]
    for response in responses:
        body = response.get_data(as_text=True)
        assert unknown not in body and readonly not in body
    assert unknown not in caplog.text and readonly not in caplog.text
