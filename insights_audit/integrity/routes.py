"""``GET {base}/integrity``: the caller's org's trail checked against its signed checkpoints."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView

from insights_audit.auth import READ, current_principal, requires
from insights_audit.extensions import Blueprint, connection
from insights_audit.integrity import chain
from insights_audit.integrity.schemas import INTEGRITY_MESSAGE, IntegrityEnvelope, NoQuery
from insights_audit.paths import BASE_PATH

INTEGRITY_ROLES = frozenset(
    {"Opsera Administrator", "Administrator", "Auditor", "Security Manager"}
)
INTEGRITY_ENVELOPE = IntegrityEnvelope()

blp = Blueprint(
    "integrity",
    __name__,
    url_prefix=BASE_PATH,
    description="Tamper evidence: the hash chain and signed checkpoints of the audit trail.",
)


@blp.route("/integrity")
class TrailIntegrity(MethodView):
    @requires(scopes=READ, roles=INTEGRITY_ROLES)
    @blp.arguments(NoQuery(), location="query")
    @blp.response(200, INTEGRITY_ENVELOPE)
    def get(self, _: dict[str, Any]) -> dict[str, Any]:
        """Verify every sealed entry of the caller's organisation.

        Entries are sealed in the background (``AUDIT_SEAL_INTERVAL_SECONDS``) or by
        ``insights-audit audit checkpoint``; newer ones are counted in ``unsealed``.
        """
        public_key = chain.app_signing_key(current_app).public_key()
        verdict = chain.verify(connection(), current_principal().org, public_key)
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
