"""Reports on how an organisation uses its dashboards."""

from __future__ import annotations

from datetime import datetime

from flask import Response
from flask.views import MethodView

from insights_audit.reports import queries, service
from insights_audit.reports.schemas import UsageEnvelope, UsageQuery
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import OVERSIGHT_ROLES, READ, requires
from insights_audit.web.work import read

blp = Blueprint(
    "reports",
    __name__,
    url_prefix=f"{BASE_PATH}/reports",
    description="Usage of the organisation's dashboards over a period.",
)

CSV_EXAMPLE = {
    "schema": {"type": "string", "description": "RFC 4180, header row first, every cell quoted"},
    "example": queries.CSV_HEADER + "\r\n",
}


@blp.route("/usage")
class UsageReport(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(UsageQuery(), location="query", as_kwargs=True)
    @blp.response(200, UsageEnvelope)
    @blp.doc(
        responses={
            "200": {
                "description": "The report: JSON, or with `format=csv` the dashboards table",
                "content": {
                    service.CONTENT_TYPES["json"]: {"schema": UsageEnvelope},
                    service.CONTENT_TYPES["csv"]: CSV_EXAMPLE,
                },
            }
        }
    )
    @blp.doc(operationId="getUsageReport")
    def get(
        self, format: str, since: datetime | None = None, until: datetime | None = None
    ) -> Response:
        """Usage report of a period

        Views in [`since`, `until`) (default: the last 30 days; at most 366 days): totals,
        views and unique viewers of every UTC day the period touches, every dashboard viewed
        (views descending) and every viewer (views descending), and the known dashboards
        nobody viewed (least recently viewed first). `format=csv` gives the dashboards table
        as CSV. For auditors and administrators.
        """
        report = read(lambda work: service.usage_report(work, since, until), snapshot=True)
        return Response(
            service.report_bytes(report, format), content_type=service.CONTENT_TYPES[format]
        )
