"""The audit trail: entries of a dashboard, KPI or mapping, one entry, recording an entry."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request, url_for
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
from insights_audit.dashboards.schemas import IdempotencyHeaders
from insights_audit.errors import Forbidden
from insights_audit.extensions import Blueprint
from insights_audit.idempotency import respond_once
from insights_audit.integrity.chain import cursor_key
from insights_audit.paths import (
    AUDIT_LOG_ID_PARAMETER,
    BASE_PATH,
    DASHBOARD_ID_PARAMETER,
    KPI_ID_PARAMETER,
    MAPPING_ID_PARAMETER,
)
from insights_audit.request_context import request_meta
from insights_audit.schemas import parse_audit_id, parse_target_id
from insights_audit.trail import service
from insights_audit.trail.queries import Actor
from insights_audit.trail.schemas import (
    ENTRY_MESSAGE,
    RECORDED_MESSAGE,
    TRAIL_ENVELOPES,
    TRAIL_MESSAGES,
    EntryEnvelope,
    NewEntry,
    RecordedEnvelope,
    TrailQuery,
    encode_cursor,
)

# Schemas are instantiated once: per-request instances cost a deep copy of their fields.
RECORDED_ENVELOPE = RecordedEnvelope()

blp = Blueprint(
    "audit-logs",
    __name__,
    url_prefix=BASE_PATH,
    description="The append-only audit trail of dashboards, KPIs and tool mappings.",
)


def _trail_view(type_: str, id_name: str) -> type[MethodView]:
    """The one MethodView serving the trail of a target type; they differ only in names."""
    envelope = TRAIL_ENVELOPES[type_]
    message = TRAIL_MESSAGES[type_]

    class TargetTrail(MethodView):
        @requires(scopes=READ, roles=SITE_ROLES)
        @blp.arguments(TrailQuery(), location="query")
        @blp.response(
            200,
            envelope,
            headers={"Link": {"description": "Next page", "schema": {"type": "string"}}},
        )
        def get(self, query: dict[str, Any], **path: str) -> tuple[dict[str, Any], dict[str, str]]:
            target_id = parse_target_id(path[id_name], type_)
            limit = query.pop("limit")
            cursor = query.pop("cursor", None)
            filters = {
                "since": query.get("since"),
                "until": query.get("until"),
                "action": query.get("action"),
                "user_id": query.get("userId"),
            }
            rows, after = service.trail_page(
                current_principal(), type_, target_id, limit, cursor, **filters
            )
            org = current_principal().org
            next_cursor = encode_cursor(after, org, cursor_key(current_app)) if after else None
            headers = {}
            if next_cursor:
                args = {**request.args.to_dict(), "cursor": next_cursor}
                link = url_for(request.endpoint or "", **path, **args, _external=True)
                headers["Link"] = f'<{link}>; rel="next"'
            body = {
                "data": rows,
                "message": message,
                "pagination": {"limit": limit, "nextCursor": next_cursor},
            }
            return body, headers

    TargetTrail.get.__doc__ = (
        f"Audit trail of one {type_}\n\n"
        f"Entries whose `type` is `{type_}` and whose `targetId` is `{{{id_name}}}`, newest first "
        "(`createdAt`, then `id`, descending), paged with a keyset cursor. Follow "
        "`pagination.nextCursor` (or the `Link` header) until it is null."
    )
    TargetTrail.__name__ = f"{type_.capitalize()}Trail"
    return TargetTrail


for _type, _name, _parameter in (
    ("dashboard", "dashboardId", DASHBOARD_ID_PARAMETER),
    ("mapping", "mappingId", MAPPING_ID_PARAMETER),
    ("kpi", "kpiId", KPI_ID_PARAMETER),
):
    blp.route(f"/{_type}/<{_name}>", parameters=[_parameter])(_trail_view(_type, _name))


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
    @blp.alt_response(413, response="REQUEST_ENTITY_TOO_LARGE")
    def post(self, body: dict[str, Any], key: str | None = None) -> Response:
        """Record an audit event

        Appends one entry for the caller, or on behalf of `userId` (administrators only).
        Recording `dashboard`/`view` here counts the view exactly as the view endpoint does.
        """
        principal = current_principal()
        user_id = body.get("userId", principal.user_id)
        if user_id != principal.user_id and not principal.roles & ON_BEHALF_ROLES:
            raise Forbidden()
        email = body.get("userEmail") if "userId" in body else principal.user_email
        actor = Actor(principal.org, user_id, email)
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
