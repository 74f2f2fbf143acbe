"""Request and response schemas of the dashboard endpoints."""

from __future__ import annotations

from marshmallow import fields, validate

from insights_audit.schemas import (
    DASHBOARD_NAME_LIMIT,
    ResponseSchema,
    StrictSchema,
    Timestamp,
    envelope,
    uuid_field,
)

EXAMPLE_USER = "5f2b1c3d9e8a7b6c5d4e3f21"
EXAMPLE_EMAIL = "jane.doe@example.com"
EXAMPLE_NAME = "Release velocity"


class RecentQuery(StrictSchema):
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 100))


class MostViewedQuery(StrictSchema):
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 100))
    days = fields.Integer(validate=validate.Range(1, 3650))


class StatsQuery(StrictSchema):
    days = fields.Integer(load_default=30, validate=validate.Range(1, 365))


class ViewBody(StrictSchema):
    name = fields.String(
        validate=validate.Length(max=DASHBOARD_NAME_LIMIT),
        allow_none=True,
        metadata={"example": EXAMPLE_NAME},
    )


class RecentDashboard(ResponseSchema):
    dashboardId = uuid_field(attribute="dashboard_id")
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    viewCount = fields.Integer(attribute="view_count", metadata={"example": 12})
    firstViewedAt = Timestamp(attribute="first_viewed_at")
    lastViewedAt = Timestamp(attribute="last_viewed_at")


class PopularDashboard(ResponseSchema):
    dashboardId = uuid_field(attribute="dashboard_id")
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    viewCount = fields.Integer(attribute="view_count", metadata={"example": 340})
    uniqueViewers = fields.Integer(attribute="unique_viewers", metadata={"example": 41})
    lastViewedAt = Timestamp(attribute="last_viewed_at")


class StatsPeriod(ResponseSchema):
    days = fields.Integer(metadata={"example": 30})
    from_ = Timestamp(data_key="from", attribute="from")
    to = Timestamp()
    views = fields.Integer(metadata={"example": 120})
    uniqueViewers = fields.Integer(metadata={"example": 17})


class DailyViews(ResponseSchema):
    date = fields.Date(metadata={"example": "2026-11-27"})
    views = fields.Integer(metadata={"example": 4})
    uniqueViewers = fields.Integer(metadata={"example": 3})


class TopViewer(ResponseSchema):
    userId = fields.String(attribute="user_id", metadata={"example": EXAMPLE_USER})
    userEmail = fields.String(
        attribute="user_email", allow_none=True, metadata={"example": EXAMPLE_EMAIL}
    )
    viewCount = fields.Integer(attribute="view_count", metadata={"example": 25})
    lastViewedAt = Timestamp(attribute="last_viewed_at")


class DashboardStats(ResponseSchema):
    dashboardId = uuid_field()
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    totalViews = fields.Integer(metadata={"example": 340})
    uniqueViewers = fields.Integer(metadata={"example": 41})
    firstViewedAt = Timestamp(allow_none=True)
    lastViewedAt = Timestamp(allow_none=True)
    period = fields.Nested(StatsPeriod)
    dailyViews = fields.Nested(DailyViews, many=True)
    topViewers = fields.Nested(TopViewer, many=True)


class RecordedView(ResponseSchema):
    dashboardId = uuid_field()
    userId = fields.String(metadata={"example": EXAMPLE_USER})
    viewedAt = Timestamp()
    viewCount = fields.Integer(metadata={"example": 13})
    totalViews = fields.Integer(metadata={"example": 341})
    auditLogId = fields.String(metadata={"example": "507f1f77bcf86cd799439011"})


RECENT_MESSAGE = "Successfully retrieved recently viewed dashboards"
MOST_VIEWED_MESSAGE = "Successfully retrieved most viewed dashboards"
STATS_MESSAGE = "Successfully retrieved dashboard audit logs stats"
VIEW_MESSAGE = "Successfully recorded dashboard view"

RecentEnvelope = envelope("RecentDashboards", RecentDashboard, many=True, message=RECENT_MESSAGE)
MostViewedEnvelope = envelope(
    "MostViewedDashboards", PopularDashboard, many=True, message=MOST_VIEWED_MESSAGE
)
StatsEnvelope = envelope("DashboardStatsResponse", DashboardStats, message=STATS_MESSAGE)
ViewEnvelope = envelope("RecordedViewResponse", RecordedView, message=VIEW_MESSAGE)
