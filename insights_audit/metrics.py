"""Prometheus metrics, one view across every gunicorn worker.

Under gunicorn, ``PROMETHEUS_MULTIPROC_DIR`` (set up by ``gunicorn.conf.py`` before workers
fork) makes every worker write its samples to files that ``GET /metrics`` aggregates with
``prometheus_client``'s multiprocess collector. Without it (tests, one process) the default
registry is used. Labels never carry tokens or orgs: routes are URL templates; the one id is
a push stream's, whose delivery each stream's administrators follow (few per org).

The scrape itself (``GET /metrics``, with the sealing gauges read from the database) is
``health.metrics``.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    values,
)
from sqlalchemy import Engine, event

# In multiprocess mode every write asks which process it is in (to notice a fork): by default
# ``os.getpid()``, a system call, was 5% of a short read's CPU under gunicorn (py-spy). The
# process id is kept here instead and renewed in the child of every fork.
_pid = os.getpid()


def _renew_pid() -> None:
    global _pid
    _pid = os.getpid()


def _process_id() -> int:
    return _pid


os.register_at_fork(after_in_child=_renew_pid)
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)

REQUESTS = Counter(
    "insights_audit_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "insights_audit_http_request_duration_seconds",
    "Time to produce a response (a streamed body's transfer not included), by route template",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POOL_IN_USE = Gauge(
    "insights_audit_db_pool_connections_in_use",
    "Database connections checked out of the workers' pools",
    multiprocess_mode="livesum",
)
POOL_WAITING = Gauge(
    "insights_audit_db_pool_connections_waiting",
    "Requests waiting for a database connection",
    multiprocess_mode="livesum",
)
ENTRIES_WRITTEN = Counter(
    "insights_audit_entries_written_total", "Audit entries committed, by type", ["type"]
)
EXPORTS = Counter("insights_audit_exports_total", "Exports started, by format", ["format"])
EXPORTED_ENTRIES = Counter("insights_audit_exported_entries_total", "Entries sent in exports")
FEED_REQUESTS = Counter("insights_audit_feed_requests_total", "Feed pages answered")
FEED_ENTRIES = Counter("insights_audit_feed_entries_total", "Entries served by the feed")
OPEN_TAILS = Gauge(
    "insights_audit_live_tails_open",
    "Live tails (GET {base}/stream) open, per worker process",
    multiprocess_mode="liveall",
)
STREAM_DELIVERED = Counter(
    "insights_audit_stream_delivered_entries_total",
    "Entries a push stream's receiver accepted, by stream",
    ["stream"],
)
STREAM_FAILURES = Counter(
    "insights_audit_stream_delivery_failures_total",
    "Batches a push stream's receiver did not accept, by stream",
    ["stream"],
)
STREAM_LAG = Gauge(
    "insights_audit_stream_lag_seconds",
    "Age of the oldest entry a push stream has yet to deliver, by stream (at its last pass)",
    ["stream"],
    multiprocess_mode="mostrecent",
)

# Reads from replicas (``db.replicas``; only with DATABASE_REPLICA_URLS set). Replicas are
# named by host, port and database.
READS = Counter(
    "insights_audit_reads_total",
    "Reads that could go to a replica, by where they went (primary or a replica)",
    ["destination"],
)
REPLICA_FALLBACKS = Counter(
    "insights_audit_replica_fallbacks_total",
    "Reads sent to the primary although replicas are configured, by reason (down, lagging,"
    " behind_caller: no replica had replayed the caller's last write, writes_on_read)",
    ["reason"],
)
REPLICA_LAG = Gauge(
    "insights_audit_replica_lag_seconds",
    "How far behind the primary a replica was at its last probe, by replica",
    ["replica"],
    multiprocess_mode="mostrecent",
)
REPLICA_USABLE = Gauge(
    "insights_audit_replica_usable",
    "1 when a replica may serve reads (answering, within REPLICA_MAX_LAG_SECONDS), by replica",
    ["replica"],
    multiprocess_mode="mostrecent",
)

# Label values come from closed sets: a method outside this one is counted as OTHER_METHOD.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"


# Each (route, method, status)'s children of the two request metrics, looked up once.
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(route: str, method: str, status: int, seconds: float | None) -> None:
    """Count one request by its route template, method and status, and time it."""
    key = (route, method, status)
    children = _request_children.get(key)
    if children is None:
        label = method if method in KNOWN_METHODS else OTHER_METHOD
        children = (REQUESTS.labels(route, label, str(status)), DURATION.labels(route))
        # Bounded: routes, methods and statuses are closed sets.
        _request_children[key] = children
    children[0].inc()
    if seconds is not None:
        children[1].observe(seconds)


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges current from the pool's own events."""
    event.listen(engine, "checkout", lambda *_: POOL_IN_USE.inc())
    event.listen(engine, "checkin", lambda *_: POOL_IN_USE.dec())
