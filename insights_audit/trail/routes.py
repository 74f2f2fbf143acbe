"""The audit trail: entries of a dashboard, KPI or mapping, one entry, recording an entry."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Response
from flask.views import MethodView
from sqlalchemy import Connection

from insights_audit.auth import (
    ON_BEHALF_ROLES,
    READ,
    SITE_ROLES,
    WRITE,
    current_principal,
    requires,
)
from insights_audit.cursors import next_page
from insights_audit.errors import VALIDATION_FAILED, BadRequest, Forbidden
from insights_audit.extensions import BASE_PATH, Blueprint
from insights_audit.idempotency import IdempotencyHeaders, respond_once
from insights_audit.openapi_parameters import (
    AUDIT_LOG_ID_PARAMETER,
    DASHBOARD_ID_PARAMETER,
    KPI_ID_PARAMETER,
    MAPPING_ID_PARAMETER,
)
from insights_audit.request_context import request_meta
from insights_audit.schemas import parse_audit_id, parse_target_id
from insights_audit.trail import service
from insights_audit.trail.schemas import (
    ENTRY_MESSAGE,
    RECORDED_MESSAGE,
    TRAIL_ENVELOPES,
    TRAIL_MESSAGES,
    EntryEnvelope,
    NewEntry,
    RecordedEnvelope,
    TrailQuery,
)

OWN_EMAIL_ONLY = "Your own entries carry your token's email; only on-behalf writes may name one."

# Schemas are instantiated once: per-request instances cost a deep copy of their fields.
RECORDED_ENVELOPE = RecordedEnvelope()

blp = Blueprint(
    "audit-logs",
    __name__,
    url_prefix=BASE_PATH,
    description="The append-only audit trail of dashboards, KPIs and tool mappings.",
)


TRAIL_LINK_HEADER = {"Link": {"description": "Next page", "schema": {"type": "string"}}}


def _trail_page(type_: str, raw_id: str, query: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """One page of the trail of the ``type_`` whose id is ``raw_id``: body and headers."""
    target_id = parse_target_id(raw_id, type_)
    limit = query["limit"]
    rows, after = service.trail_page(
        current_principal(),
        type_,
        target_id,
        limit,
        query.get("cursor"),
        since=query.get("since"),
        until=query.get("until"),
        action=query.get("action"),
        user_id=query.get("userId"),
    )
    pagination, headers = next_page(after, limit)
    body = {"data": rows, "message": TRAIL_MESSAGES[type_], "pagination": pagination}
    return body, headers


@blp.route("/dashboard/<dashboardId>", parameters=[DASHBOARD_ID_PARAMETER])
class DashboardTrail(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(TrailQuery(), location="query")
    @blp.response(200, TRAIL_ENVELOPES["dashboard"], headers=TRAIL_LINK_HEADER)
    def get(self, query: dict[str, Any], dashboardId: str) -> tuple[dict[str, Any], Any]:
        """Audit trail of one dashboard

        Entries whose `type` is `dashboard` and whose `targetId` is `{dashboardId}`, newest
        first (`createdAt`, then `id`, descending), paged with a keyset cursor. Follow
        `pagination.nextCursor` (or the `Link` header) until it is null.
        """
        return _trail_page("dashboard", dashboardId, query)


@blp.route("/mapping/<mappingId>", parameters=[MAPPING_ID_PARAMETER])
class MappingTrail(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(TrailQuery(), location="query")
    @blp.response(200, TRAIL_ENVELOPES["mapping"], headers=TRAIL_LINK_HEADER)
    def get(self, query: dict[str, Any], mappingId: str) -> tuple[dict[str, Any], Any]:
        """Audit trail of one tool mapping

        Entries whose `type` is `mapping` and whose `targetId` is `{mappingId}`, newest first,
        paged like the dashboard trail.
        """
        return _trail_page("mapping", mappingId, query)


@blp.route("/kpi/<kpiId>", parameters=[KPI_ID_PARAMETER])
class KpiTrail(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(TrailQuery(), location="query")
    @blp.response(200, TRAIL_ENVELOPES["kpi"], headers=TRAIL_LINK_HEADER)
    def get(self, query: dict[str, Any], kpiId: str) -> tuple[dict[str, Any], Any]:
        """Audit trail of one KPI

        Entries whose `type` is `kpi` and whose `targetId` is `{kpiId}`, newest first, paged
        like the dashboard trail.
        """
        return _trail_page("kpi", kpiId, query)


@blp.route("/<id>", parameters=[AUDIT_LOG_ID_PARAMETER])
class AuditLogEntry(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.response(200, EntryEnvelope)
    @blp.alt_response(400, response="BAD_REQUEST")
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, id: str) -> dict[str, Any]:
        """One audit log entry

        Every field of the entry. An id unknown to the caller's organisation is a 404.
        """
        found = service.entry(current_principal(), parse_audit_id(id))
        return {"data": found, "message": ENTRY_MESSAGE}


@blp.route("")
class AuditLogs(MethodView):
    @requires(scopes=WRITE, roles=SITE_ROLES)
    @blp.arguments(IdempotencyHeaders(), location="headers", as_kwargs=True)
    @blp.arguments(NewEntry(), location="json")
    @blp.response(201, RecordedEnvelope)
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response=HTTPStatus(413).name)
    def post(self, body: dict[str, Any], key: str | None = None) -> Response:
        """Record an audit event

        Appends one entry for the caller, or on behalf of `userId` (administrators only).
        Recording `dashboard`/`view` here counts the view exactly as the view endpoint does.
        """
        principal = current_principal()
        user_id = body.get("userId", principal.user_id)
        on_behalf = user_id != principal.user_id
        if on_behalf and not principal.roles & ON_BEHALF_ROLES:
            raise Forbidden()
        email = body.get("userEmail")
        if not on_behalf and email is not None and email != principal.user_email:
            raise BadRequest(VALIDATION_FAILED, errors={"json": {"userEmail": [OWN_EMAIL_ONLY]}})
        actor = principal.acting(user_id, email)
        meta = request_meta()

        def record(connection: Connection) -> dict[str, Any]:
            entry = service.record_entry(
                connection,
                actor,
                body["type"],
                body["action"],
                body["targetId"],
                body["details"],
                meta,
            )
            return RECORDED_ENVELOPE.dump({"data": entry, "message": RECORDED_MESSAGE})

        return respond_once(principal.token_id, key, "", body, 201, record)
