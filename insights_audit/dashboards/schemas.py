"""Request and response schemas of the dashboard endpoints."""

from __future__ import annotations

from marshmallow import fields, validate

from insights_audit.web.schemas import (
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


class TrendingQuery(StrictSchema):
    days = fields.Integer(
        load_default=7,
        validate=validate.Range(1, 90),
        metadata={"description": "Length of each of the two windows compared, in days of 24 h"},
    )
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 100))


class RelatedQuery(StrictSchema):
    days = fields.Integer(
        load_default=90,
        validate=validate.Range(1, 365),
        metadata={"description": "Only views of the last `days` x 24 hours count"},
    )
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 50))


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


SCORE_DESCRIPTION = "Rounded to 4 decimals; the order uses the unrounded score"


class TrendingDashboard(ResponseSchema):
    dashboardId = uuid_field(attribute="dashboard_id")
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    recentViews = fields.Integer(
        attribute="recent_views",
        metadata={"example": 42, "description": "Views in the last `days` x 24 hours"},
    )
    previousViews = fields.Integer(
        attribute="previous_views",
        metadata={"example": 9, "description": "Views in the `days` x 24 hours before those"},
    )
    score = fields.Float(
        metadata={
            "example": 11.0,
            "description": "(recentViews - previousViews) / sqrt(previousViews + 1). "
            + SCORE_DESCRIPTION,
        }
    )


class RelatedDashboard(ResponseSchema):
    dashboardId = uuid_field(attribute="dashboard_id")
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    sharedViewers = fields.Integer(
        attribute="shared_viewers",
        metadata={"example": 7, "description": "Users who viewed both in the window"},
    )
    score = fields.Float(
        metadata={
            "example": 0.4583,
            "description": "sharedViewers / sqrt(viewers of this x viewers of that). "
            + SCORE_DESCRIPTION,
        }
    )


class RecommendedDashboard(ResponseSchema):
    dashboardId = uuid_field(attribute="dashboard_id")
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    score = fields.Float(
        metadata={
            "example": 0.9166,
            "description": "Sum of the related scores over the dashboards I viewed (0 for"
            " popular ones). " + SCORE_DESCRIPTION,
        }
    )
    reason = fields.String(
        validate=validate.OneOf(("similar", "popular")), metadata={"example": "similar"}
    )
    because = fields.List(
        fields.UUID(),
        metadata={
            "description": "Up to 3 dashboards I viewed that contribute most to the score",
            "example": ["123e4567-e89b-12d3-a456-426614174000"],
        },
    )


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
TRENDING_MESSAGE = "Successfully retrieved trending dashboards"
RELATED_MESSAGE = "Successfully retrieved related dashboards"
RECOMMENDED_MESSAGE = "Successfully retrieved recommended dashboards"

RecentEnvelope = envelope("RecentDashboards", RecentDashboard, many=True, message=RECENT_MESSAGE)
MostViewedEnvelope = envelope(
    "MostViewedDashboards", PopularDashboard, many=True, message=MOST_VIEWED_MESSAGE
)
StatsEnvelope = envelope("DashboardStatsResponse", DashboardStats, message=STATS_MESSAGE)
ViewEnvelope = envelope("RecordedViewResponse", RecordedView, message=VIEW_MESSAGE)
TrendingEnvelope = envelope(
    "TrendingDashboards", TrendingDashboard, many=True, message=TRENDING_MESSAGE
)
RelatedEnvelope = envelope(
    "RelatedDashboards", RelatedDashboard, many=True, message=RELATED_MESSAGE
)
RecommendedEnvelope = envelope(
    "RecommendedDashboards", RecommendedDashboard, many=True, message=RECOMMENDED_MESSAGE
)
