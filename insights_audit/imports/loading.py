"""Imported entries into the trail: each batch staged with ``COPY`` and inserted once.

A batch is one transaction on the org: its rows are copied into a temporary table, then
inserted into ``audit_entries`` except those whose id the org already holds in that second
(an earlier run, or earlier in the file), so running an import again adds nothing. The
batch's entries share its transaction id and are chained in id order after it, like any
transaction's; ``recordedBy`` says they were imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

from insights_audit.audit.entries import IMPORTED_BY
from insights_audit.db.unit_of_work import set_tenant
from insights_audit.imports.mapping import Row

STAGING = """
CREATE TEMPORARY TABLE IF NOT EXISTS import_staging (
    ordinal integer, second bigint, id text COLLATE "C", type text, action text,
    target_id text, user_id text, user_email text, details text, created_at text,
    request_id text, ip text, user_agent text, holder text
) ON COMMIT DELETE ROWS
"""
COPY_STAGING = (
    "COPY import_staging (ordinal, second, id, type, action, target_id, user_id, user_email,"
    " details, created_at, request_id, ip, user_agent) FROM STDIN"
)
# The org that holds entry ``s.id`` already, if any the transaction may see. Ids are unique to
# their second, which the id's first four bytes name, so the probe is one lookup in the
# primary key of the one partition that second falls in (pruned at run time). A subquery
# with LIMIT is never turned into a join: as an anti-join, the planner (whose statistics do
# not know the rows the import has just added) read the org's entries once per staged row,
# 1,600 documents/s. Naming the org drew it to the org's indexes, whose probes by id read the
# whole org: the org is compared after the lookup instead.
PROBE = text(
    """
    UPDATE import_staging AS s SET holder = (
        SELECT e.org FROM audit_entries AS e
        WHERE e.id = s.id
          AND e.created_at >= to_timestamp(s.second)
          AND e.created_at < to_timestamp(s.second + 1)
        LIMIT 1)
    WHERE s.holder IS NULL
    """
)
# The first of each id in the batch that nobody holds yet. ON CONFLICT: an entry of another
# org with the same id and time, which row-level security hid from the probe.
INSERT = text(
    """
    INSERT INTO audit_entries (id, org, type, action, target_id, user_id, user_email, details,
                               created_at, request_id, ip, user_agent, recorded_by)
    SELECT DISTINCT ON (s.id) s.id, :org, s.type, s.action, s.target_id::uuid, s.user_id,
           s.user_email, s.details::jsonb, s.created_at::timestamptz, s.request_id, s.ip,
           s.user_agent, :imported_by
    FROM import_staging AS s
    WHERE s.holder IS NULL
    ORDER BY s.id, s.ordinal
    ON CONFLICT DO NOTHING
    """
)
FRESH = text("SELECT count(DISTINCT id) FROM import_staging WHERE holder IS NULL")
# Rows another org holds; ``:unheld`` stands for the rows nobody held at the last probe.
TAKEN_ELSEWHERE = text(
    "SELECT ordinal FROM import_staging WHERE coalesce(holder, :unheld) <> :org ORDER BY ordinal"
)
MONTHS = text("SELECT audit_ensure_partitions(:first, :last)")
BATCH_SETTINGS = (
    # An operator's command, as the other batch work: no statement timeout.
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL work_mem = '64MB'",
)


@dataclass(frozen=True)
class BatchResult:
    """What became of a batch's rows: inserted, already held (skipped), and the ordinals of
    rows whose id another org holds (rejected)."""

    inserted: int
    skipped: int
    taken_elsewhere: tuple[int, ...] = ()


def ensure_months(connection: Connection, rows: Sequence[Row]) -> None:
    """Month partitions for every month the rows fall in (past months included), in the
    caller's transaction, which is then on every org (the definer function's doing)."""
    first = min(row.created_at for row in rows)[:10]
    last = max(row.created_at for row in rows)[:10]
    connection.execute(MONTHS, {"first": first, "last": last})


def load_batch(
    connection: Connection, org: str, rows: Sequence[Row], seconds: Sequence[int], dry_run: bool
) -> BatchResult:
    """Stage and insert ``rows`` (``seconds``: each one's Unix second) in one committed
    transaction on ``org``, their month partitions already made (``ensure_months``); with
    ``dry_run`` only count, and roll back."""
    with connection.begin() as transaction:
        set_tenant(connection, org)
        for setting in BATCH_SETTINGS:
            connection.exec_driver_sql(setting)
        connection.exec_driver_sql(STAGING)
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(COPY_STAGING) as copy:
            for ordinal, (row, second) in enumerate(zip(rows, seconds, strict=True)):
                copy.write_row((ordinal, second, *row))
        connection.execute(PROBE)
        fresh: int = connection.execute(FRESH).scalar_one()
        if dry_run:
            # Nobody holds them: they would be inserted.
            taken = _taken(connection, org, unheld=org)
            transaction.rollback()
            return BatchResult(fresh, len(rows) - fresh - len(taken), taken)
        inserted = connection.execute(INSERT, {"org": org, "imported_by": IMPORTED_BY}).rowcount
        if inserted == fresh:
            taken = _taken(connection, org, unheld=org)
        else:
            # Some conflicted with entries the probe could not see: those still unheld now.
            connection.execute(PROBE)
            taken = _taken(connection, org, unheld="")
    return BatchResult(inserted, len(rows) - inserted - len(taken), taken)


def _taken(connection: Connection, org: str, unheld: str) -> tuple[int, ...]:
    return tuple(connection.execute(TAKEN_ELSEWHERE, {"org": org, "unheld": unheld}).scalars())
