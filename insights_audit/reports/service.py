"""Usage reports: one snapshot of an org's views in a period, as the API's JSON or CSV bytes
(the CLI writes the same)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta

from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.errors import VALIDATION_FAILED, BadRequest
from insights_audit.reports import queries
from insights_audit.reports.schemas import (
    DEFAULT_REPORT_DAYS,
    MAX_REPORT_DAYS,
    PERIOD_TOO_LONG,
    USAGE_MESSAGE,
    UsageEnvelope,
)

USAGE_ENVELOPE = UsageEnvelope()
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv; charset=utf-8"}


def usage_report(
    work: UnitOfWork,
    since: datetime | None,
    until: datetime | None,
    starting: Callable[[str], None] = lambda _: None,
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
    return queries.usage_report(connection, work.org, since, until, starting)


def report_bytes(report: queries.UsageReport, fmt: str) -> bytes:
    """The report as the API sends it: the JSON envelope, or the dashboards table as CSV."""
    if fmt == "csv":
        lines = [queries.CSV_HEADER, *report.csv_lines]
        return "".join(line + "\r\n" for line in lines).encode()
    body = USAGE_ENVELOPE.dump({"data": report, "message": USAGE_MESSAGE})
    return (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
