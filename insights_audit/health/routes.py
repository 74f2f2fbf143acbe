"""Liveness, readiness and the offline Swagger UI assets."""

from __future__ import annotations

from typing import Any

from alembic.runtime.migration import MigrationContext
from flask import Flask, Response, send_from_directory
from flask.views import MethodView
from swagger_ui_bundle import swagger_ui_path

from insights_audit.errors import DomainError
from insights_audit.extensions import Blueprint, engine
from insights_audit.schema_migrations import head_revision

SWAGGER_ASSETS_URL = "/docs/assets/"
NOT_READY = "Not ready - the database is unreachable or not at the newest migration"

blp = Blueprint("health", __name__, description="Liveness and readiness probes (no auth).")


class NotReady(DomainError):
    status = 503


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, example={"status": "ok"})
    def get(self) -> dict[str, Any]:
        """Liveness: the process answers (no database involved)"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200, example={"status": "ready", "revision": head_revision()})
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self) -> dict[str, Any]:
        """Readiness: the database answers and its schema is at the newest migration"""
        try:
            with engine().connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except Exception as exc:
            raise NotReady(NOT_READY, headers={"Retry-After": "5"}) from exc
        if current != head_revision():
            raise NotReady(NOT_READY, headers={"Retry-After": "5"})
        return {"status": "ready", "revision": current}


def register_swagger_assets(app: Flask) -> None:
    """Serve Swagger UI's files ourselves, so /docs needs no internet access."""

    def swagger_asset(filename: str) -> Response:
        return send_from_directory(str(swagger_ui_path), filename, max_age=86400)

    app.add_url_rule(f"{SWAGGER_ASSETS_URL}<path:filename>", "swagger_asset", swagger_asset)
