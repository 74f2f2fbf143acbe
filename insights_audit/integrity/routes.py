"""``GET {base}/integrity``: the caller's org's trail checked against its signed checkpoints."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from insights_audit.audit.keys import app_signing_key
from insights_audit.integrity.schemas import INTEGRITY_MESSAGE, IntegrityEnvelope
from insights_audit.integrity.service import integrity_of
from insights_audit.web.api import BASE_PATH, Blueprint
from insights_audit.web.auth import OVERSIGHT_ROLES, READ, requires
from insights_audit.web.schemas import NoQuery
from insights_audit.web.work import request_work

INTEGRITY_ENVELOPE = IntegrityEnvelope()

blp = Blueprint(
    "integrity",
    __name__,
    url_prefix=BASE_PATH,
    description="Tamper evidence: the hash chain and signed checkpoints of the audit trail.",
)


@blp.route("/integrity")
class TrailIntegrity(MethodView):
    @requires(scopes=READ, roles=OVERSIGHT_ROLES)
    @blp.arguments(NoQuery(), location="query")
    @blp.response(200, INTEGRITY_ENVELOPE)
    @blp.doc(operationId="getIntegrity")
    def get(self, _: dict[str, Any]) -> dict[str, Any]:
        """Tamper evidence of my organisation's trail

        Verifies the checkpoints sealed since the last verification (entries, hash chain,
        Ed25519 signatures) and answers for the whole trail verified so far, with the time
        of that verification (`verifiedAt`). Entries are sealed in the background
        (`AUDIT_SEAL_INTERVAL_SECONDS`) or by `insights-audit audit checkpoint`; newer ones
        are counted in `unsealed`. `insights-audit audit verify` re-verifies every entry.
        """
        public_key = app_signing_key(current_app).public_key()
        report = integrity_of(request_work(), public_key)
        return {
            "data": report,
            "message": INTEGRITY_MESSAGE,
        }
