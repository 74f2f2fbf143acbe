"""Dashboard views: recently viewed, most viewed, usage stats, and recording a view."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Response
from flask.views import MethodView
from sqlalchemy import Connection

from insights_audit.audit.view_counts import record_view
from insights_audit.dashboards import service
from insights_audit.dashboards.engagement import shown
from insights_audit.dashboards.schemas import (
    MOST_VIEWED_MESSAGE,
    RECENT_MESSAGE,
    RECOMMENDED_MESSAGE,
    RELATED_MESSAGE,
    STATS_MESSAGE,
    TRENDING_MESSAGE,
    VIEW_MESSAGE,
    MostViewedEnvelope,
    MostViewedQuery,
    RecentEnvelope,
    RecentQuery,
    RecommendedEnvelope,
    RelatedEnvelope,
    RelatedQuery,
    StatsEnvelope,
    StatsQuery,
    TrendingEnvelope,
    TrendingQuery,
    ViewBody,
    ViewEnvelope,
)
from insights_audit.metrics import ENTRIES_WRITTEN
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import READ, SITE_ROLES, WRITE, current_principal, requires
from insights_audit.web.idempotency import IdempotencyHeaders, respond_once
from insights_audit.web.openapi_parameters import DASHBOARD_ID_PARAMETER
from insights_audit.web.request_context import request_meta
from insights_audit.web.schemas import json_envelope, parse_target_id
from insights_audit.web.work import read, request_work

# Schemas are instantiated once: per-request instances cost a deep copy of their fields.
VIEW_ENVELOPE = ViewEnvelope()

blp = Blueprint(
    "dashboards",
    __name__,
    url_prefix=f"{BASE_PATH}/dashboard",
    description="Who views which dashboards, and how often.",
)


@blp.route("/recently-viewed")
class RecentlyViewed(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(RecentQuery(), location="query", as_kwargs=True)
    @blp.response(200, RecentEnvelope)
    @blp.doc(operationId="listRecentlyViewedDashboards")
    def get(self, limit: int) -> Response:
        """Dashboards I viewed recently

        The caller's own dashboards, most recently viewed first (ties: `dashboardId`
        ascending), with the caller's own view count.
        """
        user_id = current_principal().user_id
        data = read(lambda work: service.recently_viewed(work, user_id, limit))
        return json_envelope(data, RECENT_MESSAGE)


@blp.route("/most-viewed")
class MostViewed(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(MostViewedQuery(), location="query", as_kwargs=True)
    @blp.response(200, MostViewedEnvelope)
    @blp.doc(operationId="listMostViewedDashboards")
    def get(self, limit: int, days: int | None = None) -> Response:
        """Most viewed dashboards of my organisation

        By view count across all users, highest first (ties: `lastViewedAt` descending, then
        `dashboardId`). With `days`, only views of the last `days` x 24 hours count.
        """
        data = read(lambda work: service.most_viewed(work, limit, days))
        return json_envelope(data, MOST_VIEWED_MESSAGE)


@blp.route("/trending")
class TrendingDashboards(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(TrendingQuery(), location="query", as_kwargs=True)
    @blp.response(200, TrendingEnvelope)
    @blp.doc(operationId="listTrendingDashboards")
    def get(self, days: int, limit: int) -> dict[str, Any]:
        """Dashboards rising in my organisation

        Views of the last `days` x 24 hours (`recentViews`) against the `days` x 24 hours
        before (`previousViews`). Only dashboards viewed more now than before are listed,
        by `score` = (recentViews - previousViews) / sqrt(previousViews + 1), highest first
        (ties: `recentViews` descending, then `dashboardId`): how far above its earlier rate
        a dashboard is, in standard deviations of a Poisson count, so a jump from 0 to 5
        outranks one from 1,000 to 1,010.
        """
        found = read(lambda work: service.trending(work, days, limit))
        return {"data": shown(found), "message": TRENDING_MESSAGE}


@blp.route("/recommended")
class RecommendedDashboards(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(RelatedQuery(), location="query", as_kwargs=True)
    @blp.response(200, RecommendedEnvelope)
    @blp.doc(operationId="listRecommendedDashboards")
    def get(self, days: int, limit: int) -> dict[str, Any]:
        """Dashboards I should look at next

        Dashboards I did not view in the last `days` x 24 hours, scored by the sum of their
        related scores to the dashboards I did view (`reason` `similar`, with the three
        contributing most in `because`), highest first (ties: `dashboardId`). When fewer
        than `limit` have a score, the organisation's most viewed dashboards of the window
        that I did not view follow (`reason` `popular`, `score` 0). The answer is exact as
        of a moment at most a minute before the request (answers are kept that long).
        """
        user_id = current_principal().user_id
        found = read(lambda work: service.recommended(work, user_id, days, limit))
        return {"data": shown(found), "message": RECOMMENDED_MESSAGE}


@blp.route("/<dashboardId>/related", parameters=[DASHBOARD_ID_PARAMETER])
class RelatedDashboards(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(RelatedQuery(), location="query", as_kwargs=True)
    @blp.response(200, RelatedEnvelope)
    @blp.doc(operationId="listRelatedDashboards")
    def get(self, dashboardId: str, days: int, limit: int) -> dict[str, Any]:
        """Viewers of this dashboard also viewed

        Every other dashboard viewed in the last `days` x 24 hours by someone who also
        viewed this one in that window, by `score` = sharedViewers / sqrt(viewers of this x
        viewers of that) (the cosine of the two viewer sets: 1 when the same people view
        both), highest first (ties: `sharedViewers` descending, then `dashboardId`). A
        dashboard nobody viewed in the window gives an empty list. The answer is exact as of
        a moment at most a minute before the request (answers are kept that long).
        """
        dashboard_id = parse_target_id(dashboardId, "dashboard")
        found = read(lambda work: service.related(work, dashboard_id, days, limit))
        return {"data": shown(found), "message": RELATED_MESSAGE}


@blp.route("/<dashboardId>/stats", parameters=[DASHBOARD_ID_PARAMETER])
class DashboardStats(MethodView):
    @requires(scopes=READ, roles=SITE_ROLES)
    @blp.arguments(StatsQuery(), location="query", as_kwargs=True)
    @blp.response(200, StatsEnvelope)
    @blp.doc(operationId="getDashboardStats")
    def get(self, dashboardId: str, days: int) -> Response:
        """Usage statistics of one dashboard

        All-time totals, a zero-filled series of the last `days` UTC days (today last),
        and the ten heaviest viewers of all time. A never-viewed dashboard gives zeros.
        """
        dashboard_id = parse_target_id(dashboardId, "dashboard")
        stats = read(lambda work: service.dashboard_stats(work, dashboard_id, days))
        return json_envelope(stats, STATS_MESSAGE)


@blp.route("/<dashboardId>/view", parameters=[DASHBOARD_ID_PARAMETER])
class DashboardView(MethodView):
    @requires(scopes=WRITE, roles=SITE_ROLES)
    @blp.arguments(IdempotencyHeaders(), location="headers", as_kwargs=True)
    @blp.arguments(ViewBody(), location="json", required=False)
    @blp.response(200, ViewEnvelope)
    @blp.alt_response(409, response="CONFLICT")
    @blp.alt_response(413, response=HTTPStatus(413).name)
    @blp.doc(operationId="recordDashboardView")
    def post(self, body: dict[str, Any], dashboardId: str, key: str | None = None) -> Response:
        """Record that I viewed a dashboard

        Adds one to the caller's count, updates the org-wide totals and appends a
        `dashboard`/`view` audit entry, all in one transaction. An optional `name` records
        the dashboard's current name. With an `Idempotency-Key`, a repeat within 24 hours
        replays the first response.
        """
        principal = current_principal()
        dashboard_id = parse_target_id(dashboardId, "dashboard")
        name = body.get("name")
        actor = principal.acting()
        meta = request_meta()

        def record(connection: Connection) -> dict[str, Any]:
            request_work().after_commit(ENTRIES_WRITTEN.labels("dashboard").inc)
            row = record_view(
                connection,
                actor,
                dashboard_id,
                name,
                {"name": name} if name is not None else {},
                meta,
            )
            data = {
                "dashboardId": dashboard_id,
                "userId": actor.user_id,
                "viewedAt": row.created_at,
                "viewCount": row.viewer_count,
                "totalViews": row.total_count,
                "auditLogId": row.id,
            }
            return VIEW_ENVELOPE.dump({"data": data, "message": VIEW_MESSAGE})

        path = f"dashboard/{dashboard_id}/view"
        return respond_once(principal.token_id, key, path, body, 200, record)
