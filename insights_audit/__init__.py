"""insights-audit: who viewed which dashboard, and the audit trail of dashboards, KPIs, mappings."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from insights_audit.cli import register_commands
from insights_audit.config import Settings
from insights_audit.dashboards.routes import blp as dashboards
from insights_audit.db.engine import init_engine
from insights_audit.db.replicas import init_read_routing
from insights_audit.health.routes import blp as health
from insights_audit.health.routes import register_swagger_assets
from insights_audit.integrity.routes import blp as integrity
from insights_audit.metrics import observe_request, watch_pool
from insights_audit.reports.routes import blp as reports
from insights_audit.streams.routes import blp as streams
from insights_audit.trail.routes import blp as trail
from insights_audit.viewer import ui
from insights_audit.viewer.routes import blp as viewer
from insights_audit.web.api import Api, App
from insights_audit.web.auth import init_token_cache
from insights_audit.web.logs import init_request_log
from insights_audit.web.request_context import (
    init_options_answers,
    init_request_ids,
    init_trusted_hosts,
)
from insights_audit.web.work import init_request_work

API_DESCRIPTION = """\
Records who viewed which analytics dashboard and every other audited action on dashboards,
KPIs and tool mappings. Every request needs `Authorization: Bearer <token>` (create one with
`insights-audit tokens create`); everything is confined to the token's organisation.
"""


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = App(__name__, static_folder=None)
    app.config.update(
        API_TITLE="Insights Audit Logs",
        API_VERSION="2.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs/assets/",
        # The token entered under Authorize survives a page reload.
        OPENAPI_SWAGGER_UI_CONFIG={"persistAuthorization": True, "displayRequestDuration": True},
        API_SPEC_OPTIONS={"info": {"description": API_DESCRIPTION}},
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        SETTINGS=settings,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app,
            x_for=settings.trusted_proxies,
            x_proto=settings.trusted_proxies,
            x_host=settings.trusted_proxies,
        )

    engine = init_engine(app, settings)
    init_read_routing(app, settings)
    if settings.metrics_enabled:
        watch_pool(engine)
    init_token_cache(app, settings.token_cache_seconds)
    # after_request hooks run in reverse order of registration: the unit of work commits
    # first, so the metrics and the request log see the final status.
    init_request_ids(app)
    init_request_log(app, observe_request if settings.metrics_enabled else None)
    init_options_answers(app)
    if not settings.public_base_url:
        init_trusted_hosts(app, settings.trusted_hosts)
    init_request_work(app)

    api = Api(app)
    api.spec.components.security_scheme(
        "bearerAuth",
        {"type": "http", "scheme": "bearer", "description": "An API token of insights-audit"},
    )

    api.register_blueprint(health)
    api.register_blueprint(dashboards)
    api.register_blueprint(trail)
    api.register_blueprint(integrity)
    api.register_blueprint(reports)
    api.register_blueprint(streams)
    api.register_blueprint(viewer)
    ui.register(app, settings)
    register_swagger_assets(app)
    register_commands(app)
    return app
