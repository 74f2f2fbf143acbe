"""A client generated from ``/openapi.json`` by openapi-python-client calls every operation
and gets typed answers, with no field left ``Unset`` that the service always sends."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import httpx
import pytest
from flask import Flask

from tests.conftest import TokenFactory

PACKAGE = "insights_audit_generated_client"


@pytest.fixture(scope="module")
def generated(app: Flask, tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    folder = tmp_path_factory.mktemp("client")
    spec = folder / "openapi.json"
    spec.write_text(json.dumps(app.test_client().get("/openapi.json").json))
    tool = Path(sys.executable).parent / "openapi-python-client"
    result = subprocess.run(
        [
            str(tool),
            "generate",
            "--path",
            str(spec),
            "--meta",
            "none",
            "--output-path",
            str(folder / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout, result.stdout
    sys.path.insert(0, str(folder))
    return importlib.import_module(PACKAGE)


def load(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def assert_whole(value: Any, path: str = "") -> None:
    """Every attribute of a generated model, nested ones too, holds a value (not Unset)."""
    unset = load("types").Unset
    assert not isinstance(value, unset), path
    if attrs.has(type(value)):
        for field in attrs.fields(type(value)):
            if field.name != "additional_properties":
                assert_whole(getattr(value, field.name), f"{path}.{field.name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_whole(item, f"{path}[{index}]")


def test_every_operation_through_a_generated_client(
    app: Flask, generated: ModuleType, make_token: TokenFactory
) -> None:
    token = make_token(user="admin", roles=("Administrator",))
    client = generated.AuthenticatedClient(
        base_url="http://localhost",
        token=token,
        httpx_args={"transport": httpx.WSGITransport(app=app)},
        raise_on_unexpected_status=True,
    )
    models = load("models")
    board, kpi, mapping = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def call(operation: str, **kwargs: Any) -> Any:
        module = next(
            importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")
            for tag in ("health", "dashboards", "audit_logs", "integrity")
            if (Path(str(generated.__file__)).parent / "api" / tag / f"{operation}.py").exists()
        )
        response = module.sync_detailed(client=client, **kwargs)
        assert response.status_code in (200, 201), (operation, response.content[:300])
        if response.parsed is not None:
            assert_whole(response.parsed, operation)
        return response

    viewed = call("record_dashboard_view", dashboard_id=board, body=models.ViewBody(name="Gen"))
    assert viewed.parsed.data.view_count == 1 and viewed.parsed.data.dashboard_id == board
    recent = call("list_recently_viewed_dashboards").parsed.data
    assert [item.dashboard_id for item in recent] == [board] and recent[0].name == "Gen"
    assert call("list_most_viewed_dashboards", days=30).parsed.data[0].view_count == 1
    stats = call("get_dashboard_stats", dashboard_id=board, days=7).parsed.data
    assert stats.total_views == 1 and len(stats.daily_views) == 7
    for target, kind in ((kpi, "KPI"), (mapping, "MAPPING")):
        body = models.NewEntry(
            type_=getattr(models.NewEntryType, kind),
            action="edit",
            target_id=target,
            details=models.NewEntryDetails.from_dict({"field": "threshold"}),
        )
        recorded = call("record_audit_log", body=body).parsed.data
        assert recorded.recorded_by == "admin"
    entry_id = recorded.id
    assert call("get_audit_log", id=entry_id).parsed.data.target_id == mapping
    assert len(call("list_dashboard_audit_logs", dashboard_id=board).parsed.data) == 1
    assert len(call("list_kpi_audit_logs", kpi_id=kpi).parsed.data) == 1
    assert len(call("list_mapping_audit_logs", mapping_id=mapping).parsed.data) == 1
    found = call("search_audit_logs", q="threshold").parsed
    assert len(found.data) == 2 and found.pagination.next_cursor is None
    feed = call("get_audit_log_feed").parsed
    assert len(feed.data) == 3 and feed.pagination.has_more is False
    exported = call("export_audit_logs")
    assert len(exported.content.splitlines()) == 3
    integrity = call("get_integrity").parsed.data
    assert integrity.checkpoint is None and integrity.unsealed == 3
    for operation in ("get_health", "get_readiness", "get_metrics"):
        call(operation)
