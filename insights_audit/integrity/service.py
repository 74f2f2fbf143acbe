"""The integrity endpoint's answer: incremental verification from the last verified head.

Each call checks only the checkpoints sealed since the org's last verified one (kept in
``integrity_verifications``) and moves that head forward when they hold, so the answer takes
milliseconds however long the trail is. A full re-verification of every entry is
``insights-audit audit verify``.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert

from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.integrity.verification import verify
from insights_audit.models import IntegrityVerification

_STATE = select(
    IntegrityVerification.block, IntegrityVerification.checked, IntegrityVerification.verified_at
)


def _advance(connection: Connection, org: str, block: int, checked: int) -> Any:
    """Record ``block`` as verified (never moving the head back); the stored state."""
    upsert = insert(IntegrityVerification).values(
        org=org, block=block, checked=checked, verified_at=func.now()
    )
    upsert = upsert.on_conflict_do_update(
        index_elements=[IntegrityVerification.org],
        set_={
            "block": upsert.excluded.block,
            "checked": upsert.excluded.checked,
            "verified_at": upsert.excluded.verified_at,
        },
        where=IntegrityVerification.block < upsert.excluded.block,
    )
    connection.execute(upsert)
    return connection.execute(_STATE.where(IntegrityVerification.org == org)).one()


def integrity_of(work: UnitOfWork, public_key: Ed25519PublicKey) -> dict[str, Any]:
    """The work's org's integrity: the checkpoints sealed since the last call verified, the
    head advanced, and the whole answer (``checked`` counts every entry verified so far)."""
    connection, org = work.connection, work.org
    state = connection.execute(_STATE.where(IntegrityVerification.org == org)).one_or_none()
    verdict = verify(connection, org, public_key, after_block=state.block if state else 0)
    verified_at = state.verified_at if state else None
    checked = (state.checked if state else 0) + verdict.checked
    status = verdict.status
    if status == "verified" and verdict.checkpoint is not None:
        state = _advance(connection, org, verdict.checkpoint["block"], checked)
        verified_at = state.verified_at
    elif status == "no_data" and state is not None:
        status = "verified"  # nothing sealed since the last verification
    return {
        "status": status,
        "checked": checked,
        "firstBadId": verdict.first_bad_id,
        "reason": verdict.reason if status != "verified" else None,
        "checkpoint": verdict.checkpoint,
        "unsealed": verdict.unsealed,
        "verifiedAt": verified_at,
        "retention": verdict.retention,
    }
