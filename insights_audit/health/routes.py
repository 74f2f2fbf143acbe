"""Liveness, readiness and the offline Swagger UI assets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flask_swagger_ui
from alembic.runtime.migration import MigrationContext
from flask import Flask, Response, redirect, send_from_directory
from flask.views import MethodView
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response as WerkzeugResponse

from insights_audit.db.engine import engine
from insights_audit.db.schema_migrations import head_revision
from insights_audit.errors import DomainError
from insights_audit.health.metrics import exposition
from insights_audit.web.api import Blueprint

SWAGGER_ASSETS_URL = "/docs/assets/"
NOT_READY = "Not ready - the database is unreachable or not at the newest migration"

blp = Blueprint("health", __name__, description="Liveness and readiness probes (no auth).")


class NotReady(DomainError):
    status = 503


@blp.route("/healthz")
class Health(MethodView):
    @blp.response(200, example={"status": "ok"})
    @blp.doc(operationId="getHealth")
    def get(self) -> dict[str, Any]:
        """Liveness: the process answers (no database involved)"""
        return {"status": "ok"}


@blp.route("/readyz")
class Ready(MethodView):
    @blp.response(200, example={"status": "ready", "revision": head_revision()})
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    @blp.doc(operationId="getReadiness")
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


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(
        responses={
            "200": {
                "description": "Prometheus text exposition",
                "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            }
        }
    )
    @blp.doc(operationId="getMetrics")
    def get(self) -> Response:
        """Prometheus metrics of every worker (no auth: keep it off the public listener)"""
        return Response(exposition(engine()), content_type=CONTENT_TYPE_LATEST)


# Swagger UI 5, as the maintained flask-swagger-ui package ships it (assets and licence).
SWAGGER_UI_DIST = Path(flask_swagger_ui.__file__).resolve().parent / "dist"


def register_swagger_assets(app: Flask) -> None:
    """Serve Swagger UI's files ourselves, so /docs needs no internet access; ``/docs/``
    and a browser's ``/favicon.ico`` lead there too."""

    def swagger_asset(filename: str) -> Response:
        return send_from_directory(SWAGGER_UI_DIST, filename, max_age=86400)

    def docs_with_slash() -> WerkzeugResponse:
        return redirect("/docs", code=308)

    def favicon() -> Response:
        return send_from_directory(SWAGGER_UI_DIST, "favicon-32x32.png", max_age=86400)

    app.add_url_rule(f"{SWAGGER_ASSETS_URL}<path:filename>", "swagger_asset", swagger_asset)
    app.add_url_rule("/docs/", "docs_with_slash", docs_with_slash)
    app.add_url_rule("/favicon.ico", "favicon", favicon)
