"""``GET {base}/integrity``: the caller's org's trail checked against its signed checkpoints."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from insights_audit.auth import OVERSIGHT_ROLES, READ, current_principal, requires
from insights_audit.extensions import BASE_PATH, Blueprint
from insights_audit.integrity.schemas import INTEGRITY_MESSAGE, IntegrityEnvelope, NoQuery
from insights_audit.integrity.verification import verify
from insights_audit.keys import app_signing_key
from insights_audit.unit_of_work import request_work

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
    def get(self, _: dict[str, Any]) -> dict[str, Any]:
        """Verify every sealed entry of the caller's organisation.

        Entries are sealed in the background (``AUDIT_SEAL_INTERVAL_SECONDS``) or by
        ``insights-audit audit checkpoint``; newer ones are counted in ``unsealed``.
        """
        public_key = app_signing_key(current_app).public_key()
        verdict = verify(request_work().connection, current_principal().org, public_key)
        return {
            "data": {
                "status": verdict.status,
                "checked": verdict.checked,
                "firstBadId": verdict.first_bad_id,
                "reason": verdict.reason,
                "checkpoint": verdict.checkpoint,
                "unsealed": verdict.unsealed,
            },
            "message": INTEGRITY_MESSAGE,
        }
