"""Which orgs there are, for maintenance across orgs (rebuilds, sealing, verification)."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from insights_audit.db.unit_of_work import EVERY_ORG, set_tenant
from insights_audit.models import ApiToken, AuditCheckpoint


def chained_orgs(connection: Connection) -> list[str]:
    """The orgs to seal or verify.

    The tables' owner sees every org with entries or checkpoints. The app role (the
    background sealer in the service) may not look across orgs: it gets the orgs that have
    API tokens, which is every org the API writes for; entries loaded otherwise are sealed
    by ``insights-audit audit checkpoint`` as the owner.
    """
    orgs = set(connection.scalars(select(ApiToken.org).distinct()))
    set_tenant(connection, EVERY_ORG)
    if connection.scalar(select(func.insights_audit_every_org())):
        orgs.update(orgs_with_entries(connection))
        orgs.update(connection.scalars(select(AuditCheckpoint.org).distinct()))
    return sorted(orgs)


# Distinct orgs by skipping through an index led by org: one probe per org, not a scan.
ENTRY_ORGS = text("""
    WITH RECURSIVE orgs(org) AS (
        SELECT min(org) FROM audit_entries
        UNION ALL
        SELECT (SELECT min(org) FROM audit_entries WHERE org > orgs.org)
        FROM orgs WHERE orgs.org IS NOT NULL
    )
    SELECT org FROM orgs WHERE org IS NOT NULL
""")


def orgs_with_entries(connection: Connection) -> list[str]:
    """Every org with entries, in order (maintenance across orgs: the tables' owner only)."""
    set_tenant(connection, EVERY_ORG)
    return list(connection.scalars(ENTRY_ORGS))
