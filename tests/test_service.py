"""Health, readiness, the OpenAPI document, Swagger UI and the error envelope."""

from __future__ import annotations

import re
import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db.engine import ENGINE_KEY
from insights_audit.dev import embedded
from tests.conftest import BASE

CONTRACT_PATHS = {
    f"{BASE}/dashboard/recently-viewed": {"get"},
    f"{BASE}/stream": {"get"},
    f"{BASE}/viewer-links": {"post"},
    f"{BASE}/me": {"get"},
    f"{BASE}/streams": {"get", "post"},
    f"{BASE}/streams/{{streamId}}": {"get", "patch", "delete"},
    f"{BASE}/streams/{{streamId}}/rotate-secret": {"post"},
    f"{BASE}/dashboard/most-viewed": {"get"},
    f"{BASE}/dashboard/{{dashboardId}}/stats": {"get"},
    f"{BASE}/dashboard/{{dashboardId}}/view": {"post"},
    f"{BASE}/dashboard/{{dashboardId}}": {"get"},
    f"{BASE}/mapping/{{mappingId}}": {"get"},
    f"{BASE}/kpi/{{kpiId}}": {"get"},
    f"{BASE}/{{id}}": {"get"},
    BASE: {"get", "post"},
    f"{BASE}/export": {"get"},
    f"{BASE}/feed": {"get"},
    f"{BASE}/integrity": {"get"},
    f"{BASE}/dashboard/trending": {"get"},
    f"{BASE}/dashboard/recommended": {"get"},
    f"{BASE}/dashboard/{{dashboardId}}/related": {"get"},
    f"{BASE}/reports/usage": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


def test_healthz_needs_neither_token_nor_database(client: FlaskClient) -> None:
    offline = create_app(Settings(database_url="postgresql://nobody@127.0.0.1:1/none"))
    for c in (client, offline.test_client()):
        response = c.get("/healthz")
        assert response.status_code == 200 and response.json == {"status": "ok"}


def test_readyz_is_200_on_a_migrated_database(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json["status"] == "ready"


def test_readyz_is_503_without_database_or_schema(server_url: str) -> None:
    unreachable = create_app(
        Settings(database_url="postgresql://nobody@127.0.0.1:1/none", pool_timeout_s=1)
    )
    name = f"insights_audit_empty_{uuid.uuid4().hex[:8]}"
    unmigrated_url = embedded.ensure_database(server_url, name)
    try:
        unmigrated = create_app(Settings(database_url=unmigrated_url))
        for app in (unreachable, unmigrated):
            response = app.test_client().get("/readyz")
            assert response.status_code == 503
            assert response.json["code"] == 503 and response.json["status"] == "Service Unavailable"
            assert response.json["message"].startswith("Not ready")
        unmigrated.extensions[ENGINE_KEY].dispose()
    finally:
        embedded.drop_database(server_url, name)


def test_database_outage_is_503_in_the_envelope_with_retry_after() -> None:
    offline = create_app(
        Settings(database_url="postgresql://nobody@127.0.0.1:1/none", pool_timeout_s=1)
    )
    response = offline.test_client().get(
        f"{BASE}/dashboard/recently-viewed", headers={"Authorization": "Bearer iat_whatever"}
    )
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert set(response.json or {}) == {"message", "code", "status"}


def test_openapi_lists_every_path_with_bearer_auth_and_error_responses(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = {path: set(ops) - {"parameters"} for path, ops in spec["paths"].items()}
    assert paths == CONTRACT_PATHS
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token of insights-audit",
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method == "parameters" or not path.startswith(BASE):
                continue
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert {"200", "201", "204"} & set(operation["responses"]), (path, method)
            assert {"400", "401", "403", "503"} <= set(operation["responses"]), (path, method)
            if method == "post":
                assert "413" in operation["responses"], (path, method)
            parameters = {parameter["name"] for parameter in operation.get("parameters", [])}
            if "Idempotency-Key" in parameters:
                assert "409" in operation["responses"], (path, method)
            assert operation["summary"], (path, method)


def test_openapi_documents_examples_and_id_formats(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    stats = spec["paths"][f"{BASE}/dashboard/{{dashboardId}}/stats"]
    (param,) = [p for p in stats.get("parameters", []) if p["name"] == "dashboardId"]
    assert param["schema"]["format"] == "uuid" and param["example"]
    recorded = spec["components"]["schemas"]["RecordedView"]["properties"]
    assert recorded["auditLogId"]["example"] == "507f1f77bcf86cd799439011"
    assert recorded["viewedAt"]["example"].endswith("Z")
    assert "404" in spec["paths"][f"{BASE}/{{id}}"]["get"]["responses"]


def test_swagger_ui_is_served_offline(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    external = [url for url in re.findall(r"""(?:src|href)=["']([^"']+)""", html) if "//" in url]
    assert external == []
    assets = re.findall(r"""(?:src|href)=["'](/docs/assets/[^"']+)""", html)
    assert len(assets) >= 3
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and len(response.data) > 1000, asset
        response.close()
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").get_data(as_text=True)
    assert "unpkg.com" not in html and "cdn.jsdelivr" not in html and len(bundle) > 100_000


def test_unexpected_errors_are_500_in_the_envelope_without_traceback(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    failing = create_app(app.config["SETTINGS"])

    @failing.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals")

    response = failing.test_client().get("/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    logged = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert len(logged) == 1 and "\n" not in logged[0]
    assert "request_id=req-boom RuntimeError" in logged[0] and "secret" not in logged[0]
    assert response.json == {
        "message": "Internal server error",
        "code": 500,
        "status": "Internal Server Error",
    }
    assert "secret" not in response.get_data(as_text=True)
