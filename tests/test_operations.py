"""Operating the service through a real gunicorn: Prometheus metrics and the request log."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import event
from sqlalchemy.engine import make_url

from insights_audit.db.engine import engine
from insights_audit.health.metrics import exposition
from tests.conftest import BASE, TEST_SIGNING_KEY, TokenFactory, new_id, running_gunicorn
from tests.test_cli import cli

QUIET = {"AUDIT_SEAL_INTERVAL_SECONDS": "0"}  # no background sealing: the test seals


def call(url: str, token: str | None = None, method: str = "GET", **headers: str) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Connection", "close")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric: label set (as written) -> value."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{.*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


def scrape(url: str) -> str:
    status, headers, body = call(f"{url}/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    return str(body.decode())


def test_metrics_add_up_every_workers_requests_by_route_template(
    database_url: str, make_token: TokenFactory, org: str, tmp_path: Path
) -> None:
    token = make_token()
    board = new_id()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**QUIET, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with running_gunicorn(database_url, **env) as url:
        for _ in range(30):
            status, _, _ = call(f"{url}{BASE}/dashboard/{board}/stats", token)
            assert status == 200
        for _ in range(5):
            assert call(f"{url}{BASE}/dashboard/{board}/view", token, "POST")[0] == 200
        text = scrape(url)
        # Both workers served and wrote their own samples.
        assert len({path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}) >= 2
    requests = samples(text, "insights_audit_http_requests_total")
    stats = f"{BASE}/dashboard/<dashboardId>/stats"
    assert requests[f'{{method="GET",route="{stats}",status="200"}}'] == 30
    view = f"{BASE}/dashboard/<dashboardId>/view"
    assert requests[f'{{method="POST",route="{view}",status="200"}}'] == 5
    durations = samples(text, "insights_audit_http_request_duration_seconds_count")
    assert durations[f'{{route="{stats}"}}'] == 30
    assert samples(text, "insights_audit_entries_written_total")['{type="dashboard"}'] == 5
    assert "insights_audit_db_pool_connections_in_use" in text
    assert "insights_audit_db_pool_connections_waiting" in text
    for secret in (token, org, board):
        assert secret not in text


def test_sealing_gauges_follow_views_and_seals(
    database_url: str, make_token: TokenFactory, org: str
) -> None:
    """The gauges are what the last sealing pass measured (here the CLI's; in the service
    the background job's): a scrape never counts across orgs itself."""
    token = make_token()

    def seal() -> None:
        sealed = cli(
            database_url, "audit", "checkpoint", env={"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY}
        )
        assert sealed.returncode == 0, sealed.stderr

    with running_gunicorn(database_url, **QUIET) as url:
        seal()
        assert samples(scrape(url), "insights_audit_unsealed_entries")[""] == 0
        with psycopg.connect(database_url) as older:
            # An older transaction still open: the views below cannot be sealed yet.
            older.execute("SELECT pg_current_xact_id()")
            for _ in range(3):
                call(f"{url}{BASE}/dashboard/{new_id()}/view", token, "POST")
            assert samples(scrape(url), "insights_audit_unsealed_entries")[""] == 0
            seal()
            assert samples(scrape(url), "insights_audit_unsealed_entries")[""] == 3
        seal()
        text = scrape(url)
    assert samples(text, "insights_audit_unsealed_entries")[""] == 0
    assert 0 <= samples(text, "insights_audit_seconds_since_last_checkpoint")[""] < 30


def test_made_up_methods_and_paths_are_one_label_value_each(client: FlaskClient) -> None:
    """Second review, finding 6: 200 made-up methods made 200 series."""
    for n in range(20):
        client.open(f"/no-such-path-{n}", method=f"MADEUP{n}")
        client.open("/healthz", method=f"INVENTED{n}")
    labels = {
        (sample.labels["route"], sample.labels["method"])
        for metric in REGISTRY.collect()
        if metric.name == "insights_audit_http_requests"
        for sample in metric.samples
    }
    methods = {method for _, method in labels}
    assert not any(method.startswith(("MADEUP", "INVENTED")) for method in methods)
    assert ("unmatched", "other") in labels
    assert not any(route.startswith("/no-such-path") for route, _ in labels)


def test_a_scrape_runs_the_same_statements_however_many_orgs(
    app: Flask, make_token: TokenFactory
) -> None:
    """Second review, finding 6: a scrape queried every org (1.8-2.4 s at 1,000 orgs)."""
    with app.app_context():
        bind = engine()
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(bind, "before_cursor_execute", count)
    try:
        exposition(bind)
        few = list(statements)
        for n in range(20):
            make_token(token_org=f"org-many-{n}-{new_id()[:6]}")
        statements.clear()
        exposition(bind)
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert statements == few and len(few) <= 3


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_one_json_line_per_request_correlated_by_request_id(
    database_url: str, make_token: TokenFactory, org: str, tmp_path: Path
) -> None:
    token = make_token()
    log = tmp_path / "gunicorn.log"
    with running_gunicorn(database_url, log_path=str(log), **QUIET) as url:
        status, headers, _ = call(
            f"{url}{BASE}/dashboard/recently-viewed", token, **{"X-Request-ID": "trace-200"}
        )
        assert status == 200 and headers["X-Request-ID"] == "trace-200"
        wrong = token[:-4] + "xxxx"
        assert call(f"{url}{BASE}/dashboard/recently-viewed", wrong)[0] == 401
    lines = log_lines(log)
    assert lines, log.read_text()[:2000]
    # gunicorn's own lines share the format.
    assert any(line["logger"] == "gunicorn.error" for line in lines)
    ok = [line for line in lines if line.get("request_id") == "trace-200"]
    assert len(ok) == 1
    assert {key: ok[0][key] for key in ("level", "method", "route", "status")} == {
        "level": "INFO",
        "method": "GET",
        "route": f"{BASE}/dashboard/recently-viewed",
        "status": 200,
    }
    assert ok[0]["org"] == org and isinstance(ok[0]["token_id"], int)
    assert ok[0]["duration_ms"] >= 0 and ok[0]["time"]
    refused = [line for line in lines if line.get("status") == 401]
    assert len(refused) == 1 and refused[0]["org"] is None
    text = log.read_text()
    assert token not in text and wrong not in text and token[4:20] not in text


def test_a_503_is_logged_and_answered_in_the_envelope(
    server_url: str, client: FlaskClient, tmp_path: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    missing = make_url(server_url).set(database="no_such_database").render_as_string(False)
    with running_gunicorn(missing, log_path=str(log), **QUIET) as url:
        status, _, body = call(f"{url}/readyz", **{"X-Request-ID": "trace-503"})
    assert status == 503 and json.loads(body)["code"] == 503
    line = next(line for line in log_lines(log) if line.get("request_id") == "trace-503")
    assert (line["status"], line["route"]) == (503, "/readyz")


def test_text_logs_when_asked(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with running_gunicorn(database_url, log_path=str(log), LOG_FORMAT="text", **QUIET) as url:
        call(f"{url}/healthz", **{"X-Request-ID": "trace-text"})
    line = next(line for line in log.read_text().splitlines() if "trace-text" in line)
    assert re.search(r"INFO insights_audit.requests GET /healthz 200 [\d.]+ ms", line)


def test_the_integrity_endpoint_through_gunicorn_answers_from_its_verified_head(
    database_url: str, make_token: TokenFactory, org: str
) -> None:
    writer, auditor = make_token(), make_token(roles=("Auditor",))
    env = {"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY}
    with running_gunicorn(database_url, **QUIET) as url:
        for _ in range(3):
            call(f"{url}{BASE}/dashboard/{new_id()}/view", writer, "POST")
        assert cli(database_url, "audit", "checkpoint", "--org", org, env=env).returncode == 0
        first = json.loads(call(f"{url}{BASE}/integrity", auditor)[2])["data"]
        again = json.loads(call(f"{url}{BASE}/integrity", auditor)[2])["data"]
    assert (first["status"], first["checked"], first["unsealed"]) == ("verified", 3, 0)
    # Nothing sealed since: the second answer is the remembered verification, unchanged.
    assert again == first
