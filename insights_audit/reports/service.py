"""Usage reports: one snapshot of an org's views in a period, as the API's JSON or CSV bytes
(the CLI writes the same)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.errors import VALIDATION_FAILED, BadRequest
from insights_audit.reports import queries
from insights_audit.reports.schemas import (
    DEFAULT_REPORT_DAYS,
    MAX_REPORT_DAYS,
    PERIOD_TOO_LONG,
    USAGE_MESSAGE,
)
from insights_audit.web.schemas import format_timestamp

CONTENT_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


def usage_report(
    work: UnitOfWork,
    since: datetime | None,
    until: datetime | None,
) -> queries.UsageReport:
    """The report of ``work``'s org for [since, until): by default the 30 days before now,
    or before ``until``, or from ``since`` to now. ``work`` should be a snapshot."""
    connection = work.connection
    until = until or queries.now(connection)
    since = since or until - timedelta(days=DEFAULT_REPORT_DAYS)
    if since >= until:
        raise BadRequest(VALIDATION_FAILED, errors={"query": {"since": ["Must be before now."]}})
    if until - since > timedelta(days=MAX_REPORT_DAYS):
        raise BadRequest(VALIDATION_FAILED, errors={"query": {"since": [PERIOD_TOO_LONG]}})
    return queries.usage_report(connection, work.org, since, until)


def report_bytes(report: queries.UsageReport, fmt: str) -> bytes:
    """The report as the API sends it: the JSON envelope, or the dashboards table as CSV."""
    if fmt == "csv":
        return (queries.CSV_HEADER + "\r\n" + report.csv_lines).encode()
    head = {
        "since": format_timestamp(report.since),
        "until": format_timestamp(report.until),
        "views": report.views,
        "uniqueViewers": report.unique_viewers,
        "activeDashboards": report.active_dashboards,
    }
    lists = {
        "dailyViews": report.daily_views,
        "dashboards": report.dashboards,
        "users": report.users,
        "staleDashboards": report.stale_dashboards,
    }
    data = json.dumps(head, separators=(",", ":"))[:-1]
    data += "".join(f',"{name}":{items}' for name, items in lists.items()) + "}"
    return f'{{"data":{data},"message":{json.dumps(USAGE_MESSAGE)}}}\n'.encode()
