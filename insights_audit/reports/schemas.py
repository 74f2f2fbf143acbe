"""Request and response schemas of the usage report."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from insights_audit.web.schemas import ResponseSchema, StrictSchema, Timestamp, envelope, uuid_field

REPORT_FORMATS = ("json", "csv")
# The longest period a report covers, and the one it covers by default (ending now).
MAX_REPORT_DAYS = 366
DEFAULT_REPORT_DAYS = 30
PERIOD_TOO_LONG = f"At most {MAX_REPORT_DAYS} days after since."
USAGE_MESSAGE = "Successfully retrieved usage report"
EXAMPLE_NAME = "Release velocity"


class UsageQuery(StrictSchema):
    since = Timestamp(
        metadata={"description": "Start of the period (inclusive); default until - 30 days"}
    )
    until = Timestamp(metadata={"description": "End of the period (exclusive); default now"})
    format = fields.String(load_default="json", validate=validate.OneOf(REPORT_FORMATS))

    @ma.validates_schema
    def _period_is_ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "since" in data and "until" in data:
            if data["since"] >= data["until"]:
                raise ma.ValidationError("Must be later than since.", "until")
            if (data["until"] - data["since"]).total_seconds() > MAX_REPORT_DAYS * 86400:
                raise ma.ValidationError(PERIOD_TOO_LONG, "until")


class DayOfViews(ResponseSchema):
    date = fields.Date(metadata={"example": "2026-11-27"})
    views = fields.Integer(metadata={"example": 412})
    uniqueViewers = fields.Integer(metadata={"example": 57})


class ReportDashboard(ResponseSchema):
    dashboardId = uuid_field()
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    views = fields.Integer(metadata={"example": 120})
    uniqueViewers = fields.Integer(metadata={"example": 17})
    firstViewedAt = Timestamp()
    lastViewedAt = Timestamp()


class ReportUser(ResponseSchema):
    userId = fields.String(metadata={"example": "5f2b1c3d9e8a7b6c5d4e3f21"})
    userEmail = fields.String(
        allow_none=True,
        metadata={
            "example": "jane.doe@example.com",
            "description": "The email of the user's latest view in the period that had one",
        },
    )
    views = fields.Integer(metadata={"example": 31})
    dashboards = fields.Integer(
        metadata={"example": 6, "description": "Distinct dashboards viewed in the period"}
    )
    lastViewedAt = Timestamp()


class StaleDashboard(ResponseSchema):
    dashboardId = uuid_field()
    name = fields.String(allow_none=True, metadata={"example": EXAMPLE_NAME})
    lastViewedAt = Timestamp(
        allow_none=True,
        metadata={"description": "Its last view before the end of the period (null: none)"},
    )


class UsageReport(ResponseSchema):
    since = Timestamp()
    until = Timestamp()
    views = fields.Integer(metadata={"example": 10412})
    uniqueViewers = fields.Integer(attribute="unique_viewers", metadata={"example": 318})
    activeDashboards = fields.Integer(attribute="active_dashboards", metadata={"example": 92})
    dailyViews = fields.Nested(DayOfViews, many=True, attribute="daily_views")
    dashboards = fields.Nested(ReportDashboard, many=True)
    users = fields.Nested(ReportUser, many=True)
    staleDashboards = fields.Nested(StaleDashboard, many=True, attribute="stale_dashboards")


UsageEnvelope = envelope("UsageReportResponse", UsageReport, message=USAGE_MESSAGE)
