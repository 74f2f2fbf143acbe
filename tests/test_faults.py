"""Bad luck and bad actors: an exhausted pool answers 503 quickly, a database restart loses or
half-writes nothing, secrets never leak."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from flask import Flask

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.engine import ENGINE_KEY, engine
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.web.tokens import create_token
from tests.conftest import BASE, TokenFactory, bearer, new_id
from tests.conftest import TEST_SIGNING_KEY as KEY


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


def test_views_across_a_database_restart_are_whole_or_absent(tmp_path: Path) -> None:
    """Views keep arriving while a real PostgreSQL (embedded, of its own) stops and starts:
    every 200 is counted and in the trail, every 5xx left all or nothing behind, and the same
    app serves again without a restart."""
    data_dir = tmp_path / "pg"
    server = embedded.start_embedded_server(data_dir, delete_on_exit=True)
    url = embedded.ensure_database(server, "faults")
    schema_migrations.upgrade(url)
    settings = Settings(
        database_url=url, pool_timeout_s=1, token_cache_seconds=0, audit_signing_key=KEY
    )
    app = create_app(settings)
    org = f"org-{uuid.uuid4().hex[:8]}"
    with app.app_context(), transaction() as connection:
        _, secret = create_token(
            connection,
            org=org,
            user_id="u",
            user_email=None,
            roles=["Users"],
            scopes=["api"],
            name=None,
            expires_in_days=None,
        )
    outcomes: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def viewer() -> None:
        client = app.test_client()
        while not stop.is_set():
            dashboard = new_id()
            response = client.post(f"{BASE}/dashboard/{dashboard}/view", headers=bearer(secret))
            outcomes.append((dashboard, response.status_code, time.monotonic()))

    threads = [threading.Thread(target=viewer) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    embedded.restart_embedded_server(data_dir, pause_s=1.5)
    restarted = time.monotonic()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join()

    statuses = Counter(status for _, status, _ in outcomes)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, "the restart was not seen"
    assert any(status == 200 and at > restarted for _, status, at in outcomes), "no recovery"
    with psycopg.connect(url) as superuser:  # the superuser: sees every org
        rows = superuser.execute(
            "SELECT e.target_id::text, count(*),"
            " (SELECT view_count FROM dashboard_totals t"
            "   WHERE t.org = e.org AND t.dashboard_id = e.target_id),"
            " (SELECT sum(views) FROM dashboard_daily_views d"
            "   WHERE d.org = e.org AND d.dashboard_id = e.target_id),"
            " (SELECT count(*) FROM view_logs v"
            "   WHERE v.org = e.org AND v.dashboard_id = e.target_id)"
            " FROM audit_entries e WHERE e.org = %s GROUP BY e.org, e.target_id",
            (org,),
        ).fetchall()
        totals_only = superuser.execute(
            "SELECT count(*) FROM dashboard_totals t WHERE org = %s AND NOT EXISTS"
            " (SELECT 1 FROM audit_entries e WHERE e.org = t.org AND e.target_id = t.dashboard_id)",
            (org,),
        ).fetchone()
    written = {dashboard: counts for dashboard, *counts in rows}
    # Whole: one entry, counted once in the totals, the day and the viewer's row.
    assert all(counts == [1, 1, 1, 1] for counts in written.values()), written
    assert totals_only == (0,)  # nothing counted without its entry
    for dashboard, status, _ in outcomes:
        if status == 200:
            assert dashboard in written
    # A 503 may still have committed (the answer to COMMIT lost): then it is whole, as above.
    app.extensions[ENGINE_KEY].dispose()
    embedded.stop_embedded_server(data_dir)
