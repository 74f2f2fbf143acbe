"""The least-privileged login role the service runs as: exactly the grants it needs."""

from __future__ import annotations

from sqlalchemy import Connection, text

# What the running service does, table by table; nothing more (no DELETE, no TRUNCATE, no DDL).
APP_ROLE_GRANTS = {
    "audit_entries": "SELECT, INSERT",
    "api_tokens": "SELECT",
    "view_logs": "SELECT, INSERT, UPDATE",
    "dashboard_totals": "SELECT, INSERT, UPDATE",
    "dashboard_daily_views": "SELECT, INSERT, UPDATE",
    "dashboard_day_totals": "SELECT, INSERT",
    "total_snapshots": "SELECT, INSERT",
    # DELETE: the daily job purges expired keys (they are not part of the trail).
    "idempotency_keys": "SELECT, INSERT, UPDATE, DELETE",
    "audit_checkpoints": "SELECT, INSERT",
    "integrity_verifications": "SELECT, INSERT, UPDATE",
    "audit_retention_records": "SELECT, INSERT",
    # Derived counts of most-viewed windows, recounted in place (migration 0010).
    "window_snapshots": "SELECT, INSERT, UPDATE",
    "window_counts": "SELECT, INSERT, UPDATE, DELETE",
    # Figures across orgs for /metrics, measured by the background job (migration 0011).
    "service_gauges": "SELECT, INSERT, UPDATE",
    # Engagement answers kept for a minute, dropped when no longer asked for (migration 0019).
    "engagement_answers": "SELECT, INSERT, UPDATE, DELETE",
    # Push streams, changed by org administrators and moved on by the deliverer (0012).
    "push_streams": "SELECT, INSERT, UPDATE, DELETE",
    # Each token's last writing transaction, for reads from replicas (migration 0016).
    "token_write_positions": "SELECT, INSERT, UPDATE",
    "alembic_version": "SELECT",
}


def grant_app_role(connection: Connection, role: str) -> None:
    """Grant ``role`` the service's privileges: run by the tables' owner after migrating."""
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    for table, privileges in APP_ROLE_GRANTS.items():
        connection.execute(text(f"GRANT {privileges} ON {table} TO {quoted}"))
    connection.execute(text(f"GRANT EXECUTE ON FUNCTION audit_object_id(timestamptz) TO {quoted}"))
    # Run as the owner: the background worker creates coming months and applies retention
    # (each function checks its caller's scope and preconditions, migration 0011).
    for function in (
        "audit_ensure_partitions(date, date)",
        "audit_partition_orgs(text)",
        "audit_drop_partition(text, timestamptz)",
        # Which orgs' streams are due: org and id only (migration 0012).
        "push_streams_due()",
        # Read-only viewer tokens of the transaction's org, within a day (migration 0013).
        "mint_viewer_token(text, text, text[], bytea, timestamptz, text)",
        # A search page's keys, with the trigram index usable (migration 0014).
        "audit_search_keys(text, text[], text[], text[], text[], uuid, text[], timestamptz,"
        " timestamptz, timestamptz, text, integer)",
    ):
        connection.execute(text(f"GRANT EXECUTE ON FUNCTION {function} TO {quoted}"))
