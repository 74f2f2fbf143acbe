"""Response bodies are dumped by a compiled fast path that must equal marshmallow's dump."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import marshmallow as ma
import pytest

from insights_audit.dashboards.schemas import (
    MostViewedEnvelope,
    RecentEnvelope,
    StatsEnvelope,
    ViewEnvelope,
)
from insights_audit.trail.schemas import TRAIL_ENVELOPES, EntryEnvelope

WHEN = datetime(2026, 11, 27, 2, 18, 13, 123456, tzinfo=UTC)
OFFSET = datetime(2026, 11, 27, 3, 18, 13, 999999, tzinfo=timezone(timedelta(hours=1)))
ID = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")


def row(**values: Any) -> SimpleNamespace:
    return SimpleNamespace(**values)


ENTRY = row(
    id="507f1f77bcf86cd799439011",
    type="kpi",
    action="update",
    target_id=ID,
    user_id="u",
    user_email=None,
    details={"a": [1, {"b": None}]},
    created_at=OFFSET,
    request_id=None,
    ip="10.0.0.1",
    user_agent="ua",
    recorded_by="u",
)

CASES = [
    (
        RecentEnvelope,
        {
            "data": [
                row(
                    dashboard_id=ID,
                    name=None,
                    view_count=3,
                    first_viewed_at=WHEN,
                    last_viewed_at=OFFSET,
                )
            ],
            "message": "m",
        },
    ),
    (
        MostViewedEnvelope,
        {
            "data": [
                row(
                    dashboard_id=ID,
                    name="n",
                    view_count=Decimal(7),
                    unique_viewers=2,
                    last_viewed_at=WHEN,
                )
            ],
            "message": "m",
        },
    ),
    (MostViewedEnvelope, {"data": [], "message": "m"}),
    (EntryEnvelope, {"data": ENTRY, "message": "m"}),
    (
        TRAIL_ENVELOPES["kpi"],
        {"data": [ENTRY, ENTRY], "message": "m", "pagination": {"limit": 2, "nextCursor": None}},
    ),
    (
        ViewEnvelope,
        {
            "data": {
                "dashboardId": ID,
                "userId": "u",
                "viewedAt": WHEN,
                "viewCount": 1,
                "totalViews": 2,
                "auditLogId": "x",
            },
            "message": "m",
        },
    ),
    (
        StatsEnvelope,
        {
            "data": {
                "dashboardId": ID,
                "name": None,
                "totalViews": 0,
                "uniqueViewers": 0,
                "firstViewedAt": None,
                "lastViewedAt": None,
                "period": {
                    "days": 1,
                    "from": WHEN,
                    "to": OFFSET,
                    "views": Decimal(0),
                    "uniqueViewers": 0,
                },
                "dailyViews": [{"date": date(2026, 11, 27), "views": 0, "uniqueViewers": 0}],
                "topViewers": [
                    row(user_id="u", user_email="e@x.io", view_count=4, last_viewed_at=WHEN)
                ],
            },
            "message": "m",
        },
    ),
]


@pytest.mark.parametrize(("schema", "body"), CASES)
def test_fast_dump_equals_marshmallow(schema: type[ma.Schema], body: dict[str, Any]) -> None:
    fast = schema().dump(body)
    reference = ma.Schema.dump(schema(), body)
    assert fast == reference
    assert type(fast["message"]) is str
