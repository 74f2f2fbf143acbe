"""``make run``'s first start: a demo dataset in the development org, and a kept token."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from insights_audit.dev import devserver
from tests.conftest import BASE, bearer, run_sql


def test_first_start_seeds_a_demo_the_development_user_has_viewed(
    app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devserver, "DATA_DIR", tmp_path)
    devserver.seed_demo_once(app)
    devserver.seed_demo_once(app)  # later starts add nothing
    (entries,) = run_sql(
        app, "SELECT count(*) FROM audit_entries WHERE org = :org", org=devserver.DEV_ORG
    )
    assert entries == (5_025,)
    token = devserver.development_token(app, "postgresql://test-only")
    client = app.test_client()
    recent = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(token)).json["data"]
    assert len(recent) == 10 and all(item["name"] for item in recent)
    again = devserver.development_token(app, "postgresql://test-only")
    assert again == token
