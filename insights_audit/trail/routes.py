"""The audit trail: entries of a dashboard, KPI or mapping, one entry, recording an entry,
and the whole org's trail searched, exported and followed as a feed."""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from flask import Response, current_app, request, stream_with_context
from flask.views import MethodView
from sqlalchemy import Connection
from werkzeug.exceptions import MethodNotAllowed

from insights_audit.audit import chain_order
from insights_audit.audit.keys import cursor_key
from insights_audit.db.engine import engine
from insights_audit.errors import VALIDATION_FAILED, BadRequest, TooManyRequests
from insights_audit.metrics import (
    ENTRIES_WRITTEN,
    EXPORTED_ENTRIES,
    EXPORTS,
    FEED_ENTRIES,
    FEED_REQUESTS,
)
from insights_audit.trail import live, service
from insights_audit.trail.cursors import (
    decode_feed_position,
    encode_feed_position,
    next_page,
)
from insights_audit.trail.export import CSV_HEADER, FORMATS, export_bytes, export_filename, gzipped
from insights_audit.trail.schemas import (
    ENTRY_MESSAGE,
    FEED_MESSAGE,
    RECORDED_MESSAGE,
    SEARCH_MESSAGE,
    TRAIL_ENVELOPES,
    TRAIL_MESSAGES,
    EntryEnvelope,
    ExportQuery,
    FeedEnvelope,
    FeedQuery,
    NewEntry,
    RecordedEnvelope,
    SearchEnvelope,
    SearchQuery,
    TailQuery,
    TrailQuery,
)
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import (
    ON_BEHALF_ROLES,
    OVERSIGHT_ROLES,
    READ,
    SITE_ROLES,
    WRITE,
    current_principal,
    on_behalf_requires,
    requires,
)
from insights_audit.web.idempotency import IdempotencyHeaders, respond_once
from insights_audit.web.openapi_parameters import (
    AUDIT_LOG_ID_PARAMETER,
    DASHBOARD_ID_PARAMETER,
    KPI_ID_PARAMETER,
    MAPPING_ID_PARAMETER,
)
from insights_audit.web.request_context import request_meta
from insights_audit.web.schemas import json_envelope, parse_audit_id, parse_target_id
from insights_audit.web.streaming import WATCHER, new_stream, watched
from insights_audit.web.tails import HUB
from insights_audit.web.work import read, request_work, streamed

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


def _trail_page(type_: str, raw_id: str, query: dict[str, Any]) -> Response:
    """One page of the trail of the ``type_`` whose id is ``raw_id``."""
    target_id = parse_target_id(raw_id, type_)
    limit = query["limit"]
    data, after = read(
        lambda work: service.trail_page(
            work,
            type_,
            target_id,
            limit,
            query.get("cursor"),
            since=query.get("since"),
            until=query.get("until"),
            action=query.get("action"),
            user_id=query.get("userId"),
        )
    )
    pagination, headers = next_page(after, limit)
    return json_envelope(data, TRAIL_MESSAGES[type_], pagination, headers)


@blp.route("/dashboard/<dashboardId>", parameters=[DASHBOARD_ID_PARAMETER])
class DashboardTrail(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(TrailQuery(), location="query")
    @blp.response(200, TRAIL_ENVELOPES["dashboard"], headers=TRAIL_LINK_HEADER)
    @blp.doc(operationId="listDashboardAuditLogs")
    def get(self, query: dict[str, Any], dashboardId: str) -> Response:
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
    @blp.doc(operationId="listMappingAuditLogs")
    def get(self, query: dict[str, Any], mappingId: str) -> Response:
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
    @blp.doc(operationId="listKpiAuditLogs")
    def get(self, query: dict[str, Any], kpiId: str) -> Response:
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
    @blp.doc(operationId="getAuditLog")
    def get(self, id: str) -> Response:
        """One audit log entry

        Every field of the entry. An id unknown to the caller's organisation is a 404.
        """
        try:
            entry_id = parse_audit_id(id)
        except BadRequest:
            # A fixed path beside the ids that takes other methods ({base}/viewer-links).
            fixed = [rule for rule in current_app.url_map.iter_rules() if rule.rule == request.path]
            if fixed:
                methods = sorted({method for rule in fixed for method in rule.methods or ()})
                raise MethodNotAllowed(methods) from None
            raise
        found = read(lambda work: service.entry(work, entry_id))
        return json_envelope(found, ENTRY_MESSAGE)


@blp.route("")
class AuditLogs(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(SearchQuery(), location="query")
    @blp.response(200, SearchEnvelope, headers=TRAIL_LINK_HEADER)
    @blp.doc(operationId="searchAuditLogs")
    def get(self, query: dict[str, Any]) -> Response:
        """Search my organisation's trail

        Every filter is optional and they combine with AND: `type`, `action` (exact, or a
        prefix ending in `*`) and `userId` may repeat; `targetId`; `since` (inclusive) and
        `until` (exclusive); `q`, words that must all occur in the action, user id, email or
        any string value inside `details`, in any case. Newest first, paged like the trails.
        For auditors and administrators.
        """
        limit = query["limit"]
        wanted = service.trail_filter(query)
        concurrency = current_app.config["SETTINGS"].search_concurrency
        data, after = read(
            lambda work: service.search_page(work, wanted, limit, query.get("cursor"), concurrency)
        )
        pagination, headers = next_page(after, limit)
        return json_envelope(data, SEARCH_MESSAGE, pagination, headers)

    @requires(scopes=WRITE, roles=SITE_ROLES)
    @blp.arguments(IdempotencyHeaders(), location="headers", as_kwargs=True)
    @blp.arguments(NewEntry(), location="json")
    @on_behalf_requires(roles=ON_BEHALF_ROLES)
    @blp.response(201, RecordedEnvelope)
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="recordAuditLog")
    def post(self, body: dict[str, Any], key: str | None = None) -> Response:
        """Record an audit event

        Appends one entry for the caller, or on behalf of `userId` (administrators only).
        Recording `dashboard`/`view` here counts the view exactly as the view endpoint does.
        """
        principal = current_principal()
        user_id = body.get("userId", principal.user_id)
        on_behalf = user_id != principal.user_id
        email = body.get("userEmail")
        if not on_behalf and email is not None and email != principal.user_email:
            raise BadRequest(VALIDATION_FAILED, errors={"json": {"userEmail": [OWN_EMAIL_ONLY]}})
        actor = principal.acting(user_id, email)
        meta = request_meta()

        def record(connection: Connection) -> dict[str, Any]:
            request_work().after_commit(ENTRIES_WRITTEN.labels(body["type"]).inc)
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


EXPORT_RESPONSE = {
    "description": "The matching entries, oldest first, as one file (gzip when accepted)",
    "headers": {
        "Content-Disposition": {
            "description": 'attachment; filename="audit-logs-<yyyymmddThhmmssZ>.<format>"',
            "schema": {"type": "string"},
        }
    },
    "content": {
        FORMATS["ndjson"]: {
            "schema": {"type": "string", "description": "One entry object per line"},
            "example": '{"id": "507f1f77bcf86cd799439011", "type": "kpi", ...}\n',
        },
        FORMATS["csv"]: {
            "schema": {"type": "string", "description": "RFC 4180, header row first"},
            "example": CSV_HEADER + "\r\n",
        },
    },
}


@blp.route("/export")
class TrailExport(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(ExportQuery(), location="query")
    @blp.doc(responses={"200": EXPORT_RESPONSE})
    @blp.alt_response(429, response=HTTPStatus(429).name)
    @blp.doc(operationId="exportAuditLogs")
    def get(self, query: dict[str, Any]) -> Response:
        """Export my organisation's trail

        The entries the search filters keep, oldest first, as NDJSON (one entry per line)
        or CSV (`format=csv`; cells that a spreadsheet would run as a formula start with
        `'`). Streamed: one consistent snapshot of what was committed when it began,
        however long it runs. Compressed with gzip when `Accept-Encoding` allows it.
        Bounded: an export ends after `EXPORT_MAX_SECONDS`, a client that reads nothing for
        `EXPORT_STALL_SECONDS` is dropped, and beyond `EXPORT_CONCURRENCY` exports of one
        organisation at once the answer is 429 with `Retry-After`.
        """
        fmt = query["format"]
        org = current_principal().org
        settings = current_app.config["SETTINGS"]
        # Streams may hold at most half of a worker's threads: the rest keep answering.
        release = WATCHER.reserve(max(1, settings.worker_threads // 2))
        if release is None:
            raise TooManyRequests(service.EXPORTS_BUSY, service.EXPORT_RETRY_AFTER_SECONDS)
        try:
            work = request_work(snapshot=True, unbounded=True)
            service.begin_export(work, settings.export_concurrency)
        except BaseException:
            release()
            raise
        EXPORTS.labels(fmt).inc()
        wanted = service.trail_filter(query)
        chunks = streamed(
            work,
            lambda connection: export_bytes(connection, org, wanted, fmt, EXPORTED_ENTRIES.inc),
        )
        headers = {
            "Content-Disposition": (
                f'attachment; filename="{export_filename(datetime.now(UTC), fmt)}"'
            ),
            "Vary": "Accept-Encoding",
        }
        if request.accept_encodings["gzip"]:
            chunks = gzipped(chunks)
            headers["Content-Encoding"] = "gzip"
        stream = new_stream(
            "export",
            org,
            max_seconds=settings.export_max_seconds,
            stall_seconds=settings.export_stall_seconds,
            cancel=work.cancel,
            release=release,
        )
        response = Response(
            stream_with_context(watched(stream, chunks)),
            content_type=FORMATS[fmt],
            headers=headers,
        )
        response.call_on_close(release)
        return response


@blp.route("/feed")
class TrailFeed(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(FeedQuery(), location="query")
    @blp.response(200, FeedEnvelope)
    @blp.doc(operationId="getAuditLogFeed")
    def get(self, query: dict[str, Any]) -> Response:
        """Follow my organisation's trail

        Entries in the order of the organisation's hash chain, from the first (no `after`)
        or after the position an earlier answer gave. Passing each answer's
        `pagination.nextCursor` as the next `after` receives every entry exactly once, with
        no gaps: an entry is served once no older transaction can still commit, so a long
        transaction delays the feed and never makes it skip. For SIEMs and archivers.
        """
        principal = current_principal()
        limit = query["limit"]
        data, position, has_more, count = service.feed_page(
            request_work(), query.get("after", chain_order.START), limit
        )
        next_cursor = encode_feed_position(position, principal.org, cursor_key(current_app))
        FEED_REQUESTS.inc()
        FEED_ENTRIES.inc(count)
        pagination = {"limit": limit, "nextCursor": next_cursor, "hasMore": has_more}
        return json_envelope(data, FEED_MESSAGE, pagination)


TAILS_BUSY = "Too many live tails are open - try again later"
TAIL_RETRY_AFTER_SECONDS = 5
TAIL_RESPONSE = {
    "description": "Server-Sent Events, one per entry: `id` (its feed position), `event:"
    " entry`, `data` (the entry as one line of JSON); `: ping` comments while nothing happens",
    "content": {
        "text/event-stream": {
            "schema": {"type": "string"},
            "example": 'id: AbC...\nevent: entry\ndata: {"id": "507f1f77bcf86cd799439011",'
            ' "type": "kpi", ...}\n\n',
        }
    },
}


@blp.route("/stream")
class TrailTail(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(TailQuery(), location="query")
    @blp.doc(responses={"200": TAIL_RESPONSE})
    @blp.alt_response(429, response=HTTPStatus(429).name)
    @blp.doc(operationId="tailAuditLogs")
    def get(self, query: dict[str, Any]) -> Response:
        """Follow my organisation's trail live

        Server-Sent Events (`curl -N`, or `EventSource` in a browser): each new entry as
        one event, in the order of the feed. Without `after` or `Last-Event-ID` it sends the
        entries that arrive from now on; with either, every entry after that position exactly
        once, then the new ones, so a reconnecting client loses nothing. A `: ping` comment
        at least every `STREAM_HEARTBEAT_SECONDS`; the stream ends after
        `STREAM_MAX_SECONDS`, and `EventSource` reconnects by itself. Filters as in the
        search.
        """
        org = current_principal().org
        settings = current_app.config["SETTINGS"]
        key = cursor_key(current_app)
        position = query.get("after")
        last_event_id = request.headers.get("Last-Event-ID", "").strip()
        if last_event_id:
            try:
                position = decode_feed_position(last_event_id, org, key)
            except ValueError:
                raise BadRequest(
                    VALIDATION_FAILED,
                    errors={"headers": {"Last-Event-ID": ["Not a valid feed position."]}},
                ) from None
        client = request.environ.get("gunicorn.socket")
        if HUB.enabled:
            release = HUB.release if HUB.reserve(settings.stream_max_tails) else None
        else:
            # Served by its own thread: at most half of a worker's threads, as exports.
            release = WATCHER.reserve(max(1, settings.worker_threads // 2))
        if release is None:
            raise TooManyRequests(TAILS_BUSY, TAIL_RETRY_AFTER_SECONDS)
        bind = engine()
        try:
            if position is None:
                position = live.start_position(bind, org)
        except BaseException:
            release()
            raise
        body = live.tail_body(
            bind=bind,
            read=live.reader(bind, key),
            org=org,
            wanted=service.trail_filter(query),
            position=position,
            heartbeat_seconds=settings.stream_heartbeat_seconds,
            max_seconds=settings.stream_max_seconds,
            client=client,
            chunked=request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1",
            release=release,
        )
        return Response(
            body,
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
