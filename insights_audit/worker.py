"""Every background job of the service, in one place. Each gunicorn worker runs them in one
daemon thread (``start``), every ``AUDIT_SEAL_INTERVAL_SECONDS``; PostgreSQL advisory locks
let one process run each job at a time, across every worker and host:

- **sealing** (``seal_everything``, lock ``SEALER_LOCK``): the entries written since the
  last checkpoint of every org become signed checkpoints (exported as files with
  ``AUDIT_EXPORT_DIR``). Writers never wait for it: they only insert (``integrity.sealing``).
- **partitions** (``keep_the_trail_tidy``): the trail's month partitions for the coming
  three months.
- **retention** (``keep_the_trail_tidy``, once a day with ``AUDIT_RETENTION_DAYS``): whole
  months past the horizon dropped, each with its signed record (``integrity.retention``).
- **service gauges** (``measure_gauges``): what ``/metrics`` shows of sealing, across orgs.
- **window recounts** (``recount_windows``, lock ``RECOUNT_LOCK``, never under the sealing
  lock): the most-viewed windows clients asked for in the last hour, counted again, at most
  ``WINDOWS_KEPT_PER_ORG`` per org within ``RECOUNT_BUDGET_SECONDS`` a pass.
- **engagement answers** (``refresh_answers``, lock ``REFRESH_LOCK``): the "viewers also
  viewed" and recommendation answers asked for again in the last minute, computed again
  before they are a minute old (each under its own lock, shared with the requests), within
  ``REFRESH_BUDGET_SECONDS`` a pass; those not asked for in the last minute dropped.
- **push streams** (``streams.delivery``, a lock per stream): every active stream that is
  due, batch by batch, every ``STREAM_PASS_INTERVAL_SECONDS``, in a thread of its own so
  that a slow receiver never delays sealing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert

from insights_audit.audit import chain_order
from insights_audit.audit.keys import app_signing_key, cursor_key
from insights_audit.audit.window_counts import keep_window, windows_to_keep
from insights_audit.dashboards import answers, service
from insights_audit.db.engine import engine
from insights_audit.db.orgs import chained_orgs
from insights_audit.db.unit_of_work import transaction
from insights_audit.integrity import retention
from insights_audit.integrity.checkpoints import last_checkpoint, position_after
from insights_audit.integrity.files import export
from insights_audit.integrity.sealing import seal
from insights_audit.models import NEWEST_CHECKPOINT, UNSEALED_ENTRIES, AuditEntry, ServiceGauge
from insights_audit.streams import delivery
from insights_audit.streams.secrets import secrets_key

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
                done = seal(transaction, org, key)
                sealed += done.entries
                if done.checkpoints and export_dir:
                    with transaction(org) as connection:
                        export(connection, org, Path(export_dir))
            keep_the_trail_tidy(app, key)
            measure_gauges(orgs)
        finally:
            guard.scalar(select(func.pg_advisory_unlock(SEALER_LOCK)))
            guard.commit()
    # Recounts and answers take their own turn: they never hold sealing back.
    recount_windows(app, orgs)
    refresh_answers(app, orgs)
    return sealed


def measure_gauges(orgs: list[str]) -> None:
    """Measure what ``/metrics`` shows of sealing, across ``orgs``, and keep it in the
    database (``service_gauges``): scrapes then cost the same however many orgs there are."""
    unsealed = 0
    newest: datetime | None = None
    for org in orgs:
        with transaction(org) as connection:
            last = last_checkpoint(connection, org)
            unsealed += (
                connection.scalar(
                    select(func.count()).where(
                        AuditEntry.org == org, chain_order.after(position_after(last))
                    )
                )
                or 0
            )
        if last is not None and (newest is None or last.sealed_at > newest):
            newest = last.sealed_at
    measured = {UNSEALED_ENTRIES: float(unsealed)}
    if newest is not None:
        measured[NEWEST_CHECKPOINT] = newest.timestamp()
    gauges = insert(ServiceGauge).values(
        [
            {"name": name, "value": value, "measured_at": func.now()}
            for name, value in measured.items()
        ]
    )
    with transaction() as connection:
        connection.execute(
            gauges.on_conflict_do_update(
                index_elements=[ServiceGauge.name],
                set_={"value": gauges.excluded.value, "measured_at": gauges.excluded.measured_at},
            )
        )


RETENTION_EVERY = timedelta(days=1)
LAST_RETENTION = "insights_audit.last_retention"


# pg_try_advisory_lock key of the window recounts ("wind" in ASCII): one process at a time.
RECOUNT_LOCK = 0x77696E64
# Seconds of recounting per pass; windows left over are the stalest of the next pass.
RECOUNT_BUDGET_SECONDS = 10.0


def recount_windows(app: Flask, orgs: list[str]) -> int:
    """Count again the most-viewed windows that clients asked for in the last hour, stalest
    first across ``orgs``, for at most ``RECOUNT_BUDGET_SECONDS``, unless another process is
    at it; returns how many were counted."""
    with app.app_context(), engine().connect() as guard:
        if not guard.scalar(select(func.pg_try_advisory_lock(RECOUNT_LOCK))):
            guard.rollback()
            return 0
        try:
            due: list[tuple[datetime, str, int]] = []
            for org in orgs:
                with transaction(org) as connection:
                    due += [(as_of, org, days) for days, as_of in windows_to_keep(connection, org)]
            return _recount(sorted(due), time.monotonic() + RECOUNT_BUDGET_SECONDS)
        finally:
            guard.scalar(select(func.pg_advisory_unlock(RECOUNT_LOCK)))
            guard.commit()


def keep_windows_counted(org: str) -> int:
    """``recount_windows`` for one org, in the current app context."""
    with transaction(org) as connection:
        due = [(as_of, org, days) for days, as_of in windows_to_keep(connection, org)]
    return _recount(due, time.monotonic() + RECOUNT_BUDGET_SECONDS)


def _recount(due: list[tuple[datetime, str, int]], deadline: float) -> int:
    counted = 0
    for _, org, days in due:
        if time.monotonic() >= deadline:
            break
        with transaction(org) as connection:
            keep_window(connection, org, days)
        counted += 1
    return counted


# pg_try_advisory_lock key of the answers' refresh ("answ" + 1): one process at a time.
REFRESH_LOCK = 0x616E7378
# Seconds of computing kept engagement answers per pass; answers left over are the stalest of
# the next pass (a request that finds one older than a minute computes it itself).
REFRESH_BUDGET_SECONDS = 10.0
# How long before an answer is a minute old the worker computes it again: its next pass may
# come an interval later, and a computation takes a while.
REFRESH_MARGIN_SECONDS = 10.0


def refresh_answers(app: Flask, orgs: list[str]) -> int:
    """Compute again the engagement answers clients asked for again in the last minute, before
    they are a minute old, stalest first across ``orgs``, for at most
    ``REFRESH_BUDGET_SECONDS``, unless another process is at it; drop those nobody asked for
    in the last minute. Returns how many were computed."""
    interval = app.config["SETTINGS"].audit_seal_interval_seconds
    older_than = max(0.0, answers.FRESH_SECONDS - interval - REFRESH_MARGIN_SECONDS)
    with app.app_context(), engine().connect() as guard:
        if not guard.scalar(select(func.pg_try_advisory_lock(REFRESH_LOCK))):
            guard.rollback()
            return 0
        try:
            due = [item for org in orgs for item in _answers_due(org, older_than)]
            return _refresh(sorted(due, key=lambda item: item[0]))
        finally:
            guard.scalar(select(func.pg_advisory_unlock(REFRESH_LOCK)))
            guard.commit()


def keep_answers_fresh(org: str, older_than: float = 0.0) -> int:
    """``refresh_answers`` for one org, in the current app context: the answers older than
    ``older_than`` seconds computed again (the others nobody asks for dropped)."""
    return _refresh(_answers_due(org, older_than))


def _answers_due(org: str, older_than: float) -> list[tuple[datetime, str, answers.Question]]:
    with transaction(org) as connection:
        return [
            (as_of, org, q) for as_of, q in answers.answers_to_refresh(connection, org, older_than)
        ]


def _refresh(due: list[tuple[datetime, str, answers.Question]]) -> int:
    deadline = time.monotonic() + REFRESH_BUDGET_SECONDS
    computed = 0
    for _, org, question in due:
        if time.monotonic() >= deadline:
            break
        try:
            if service.compute_again(engine(), org, question):
                computed += 1
        except Exception:  # the next pass, or the next request, computes it
            log.exception("computing a kept %s answer failed", question.kind)
    return computed


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


# How often the deliverer looks for streams that are due: entries reach receivers within
# about this, plus the feed's horizon.
STREAM_PASS_INTERVAL_SECONDS = 0.5


def delivery_policy(app: Flask) -> delivery.DeliveryPolicy:
    settings = app.config["SETTINGS"]
    return delivery.DeliveryPolicy(
        allow_http=settings.stream_allow_http,
        allow_private=settings.stream_allow_private,
        secrets_key=secrets_key(app_signing_key(app), settings.stream_secret_key),
        cursor_key=cursor_key(app),
        batch_size=settings.stream_batch_size,
        suspend_after=timedelta(hours=settings.stream_suspend_after_hours),
    )


def deliver_streams(app: Flask, stopping: threading.Event) -> None:
    """Deliver push streams until ``stopping`` is set."""
    with app.app_context():
        bind = engine()
        policy = delivery_policy(app)
    while not stopping.wait(STREAM_PASS_INTERVAL_SECONDS):
        try:
            delivery.deliver_due(bind, policy, stopping.is_set)
        except Exception:  # the next pass tries again; positions move only after a 2xx
            log.exception("delivering push streams failed")


@dataclass
class BackgroundJobs:
    """The threads that run the jobs, and how to stop them."""

    thread: threading.Thread | None
    stopping: threading.Event
    deliverer: threading.Thread | None = None

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the passes under way, and wait for them (``timeout`` seconds at most
        each)."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.deliverer is not None:
            self.deliverer.join(timeout)


def start(app: Flask) -> BackgroundJobs | None:
    """Run ``seal_everything`` (and the jobs after it) every interval in a daemon thread, and
    the stream deliverer in another, until stopped (no sealing thread if the interval is 0:
    cron seals then; streams are delivered either way)."""
    if not isinstance(app, Flask):  # a WSGI middleware around the app: nothing to seal with
        log.warning("audit sealer not started: the WSGI application is not the Flask app")
        return None
    interval = app.config["SETTINGS"].audit_seal_interval_seconds
    stopping = threading.Event()

    def run() -> None:
        while not stopping.wait(interval):
            try:
                sealed = seal_everything(app)
            except Exception:  # the next round tries again; the trail itself is unaffected
                log.exception("sealing the audit trail failed")
            else:
                if sealed:
                    log.info("sealed %d audit entries", sealed)

    thread = None
    if interval > 0:
        thread = threading.Thread(target=run, name="audit-sealer", daemon=True)
        thread.start()
    deliverer = threading.Thread(
        target=deliver_streams, args=(app, stopping), name="stream-deliverer", daemon=True
    )
    deliverer.start()
    return BackgroundJobs(thread, stopping, deliverer)
