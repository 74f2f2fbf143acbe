"""The background sealer: every ``AUDIT_SEAL_INTERVAL_SECONDS`` one gunicorn worker seals the
entries written since the last checkpoint, for every org, creates the trail's partitions for
the coming months and, once a day with ``AUDIT_RETENTION_DAYS``, applies retention.

Writers never wait for it: they only insert (see ``sealing``). Workers take turns through a
PostgreSQL advisory lock, so one seals while the others skip that round.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import func, select, text

from insights_audit import retention
from insights_audit.extensions import engine
from insights_audit.integrity.files import export
from insights_audit.integrity.sealing import seal
from insights_audit.keys import app_signing_key
from insights_audit.orgs import chained_orgs
from insights_audit.unit_of_work import transaction
from insights_audit.window_counts import keep_window, windows_to_keep

log = logging.getLogger(__name__)

ENSURE_COMING_MONTHS = (
    "SELECT audit_ensure_partitions(current_date, (current_date + interval '3 months')::date)"
)
# pg_try_advisory_lock key of the sealer (any constant; "seal" in ASCII).
SEALER_LOCK = 0x7365616C


def seal_everything(app: Flask) -> int:
    """Seal every org's ready entries unless another process is at it; returns entries sealed.

    With ``AUDIT_EXPORT_DIR`` set, new checkpoints are also exported there as files.
    """
    key = app_signing_key(app)
    export_dir = app.config["SETTINGS"].audit_export_dir
    with app.app_context(), engine().connect() as guard:
        if not guard.scalar(select(func.pg_try_advisory_lock(SEALER_LOCK))):
            guard.rollback()
            return 0
        try:
            with transaction() as connection:
                orgs = chained_orgs(connection)
            sealed = 0
            for org in orgs:
                checkpoints = seal(transaction, org, key)
                sealed += sum(done.seq_to - done.seq_from + 1 for done in checkpoints)
                if checkpoints and export_dir:
                    with transaction(org) as connection:
                        export(connection, org, Path(export_dir))
            keep_the_trail_tidy(app, key)
            for org in orgs:
                keep_windows_counted(org)
            return sealed
        finally:
            guard.scalar(select(func.pg_advisory_unlock(SEALER_LOCK)))
            guard.commit()


RETENTION_EVERY = timedelta(days=1)
LAST_RETENTION = "insights_audit.last_retention"


def keep_windows_counted(org: str) -> None:
    """Count again the org's most-viewed windows that clients asked for in the last hour, so
    that a request corrects counts at most a minute or so old."""
    with transaction(org) as connection:
        windows = windows_to_keep(connection, org)
    for days in windows:
        with transaction(org) as connection:
            keep_window(connection, org, days)


def keep_the_trail_tidy(app: Flask, key: Ed25519PrivateKey) -> None:
    """Partitions for the next months, and once a day retention (with AUDIT_RETENTION_DAYS)."""
    with transaction() as connection:
        connection.execute(text(ENSURE_COMING_MONTHS))
        now: datetime = connection.execute(select(func.now())).scalar_one()
    days = app.config["SETTINGS"].audit_retention_days
    last = app.extensions.get(LAST_RETENTION)
    if days is None or (last is not None and now - last < RETENTION_EVERY):
        return
    app.extensions[LAST_RETENTION] = now
    for line in retention.apply(transaction, key, now - timedelta(days=days)):
        log.info("retention: %s", line)


def start(app: Flask) -> threading.Event | None:
    """Run ``seal_everything`` every interval in a daemon thread until the returned event is
    set (no thread if the interval is 0)."""
    if not isinstance(app, Flask):  # a WSGI middleware around the app: nothing to seal with
        log.warning("audit sealer not started: the WSGI application is not the Flask app")
        return None
    interval = app.config["SETTINGS"].audit_seal_interval_seconds
    if interval <= 0:
        return None
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval):
            try:
                sealed = seal_everything(app)
            except Exception:  # the next round tries again; the trail itself is unaffected
                log.exception("sealing the audit trail failed")
            else:
                if sealed:
                    log.info("sealed %d audit entries", sealed)

    threading.Thread(target=run, name="audit-sealer", daemon=True).start()
    return stop
