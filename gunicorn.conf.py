"""Production settings for ``gunicorn wsgi:app`` (read from the working directory)."""

import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

# Set before the app is imported anywhere: every worker writes its metric samples as files in
# this folder, and /metrics adds them up. A folder of our own, emptied of an earlier run's.
_own_metrics_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="insights-audit-metrics-")
for _stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
    _stale.unlink()
os.environ.setdefault("LOG_FORMAT", "json")

from insights_audit.web import gunicorn_errors, logs  # noqa: E402  (after the environment)

bind = os.environ.get("BIND", "127.0.0.1:8000")
# Two processes per core: against one, /healthz served 32% more and most reads 5-12% more
# (`make bench-workers`, BENCHMARKS.md): each process's GIL holds back fewer requests. Four
# threads each did better still, but four slow clients could then hold a whole process.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count()))
# Threaded workers: a slow client holds one thread, not a whole worker, and the worker's
# heartbeat does not wait for a long streamed response (exports). See BENCHMARKS.md.
worker_class = "insights_audit.web.gunicorn_worker.TailingThreadWorker"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# Recycle workers now and then so a slow leak can never grow without bound.
max_requests = 50_000
max_requests_jitter = 5_000
# The app writes one line per request (insights_audit.web.logs); gunicorn's access log stays off
# unless asked for.
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
logconfig_dict = logs.logging_config(os.environ["LOG_FORMAT"])
# X-Forwarded-* are trusted only as far as TRUSTED_PROXIES says (the app's ProxyFix takes the
# client address and host from that many hops); with no proxy in front, from nobody.
forwarded_allow_ips = "*" if int(os.environ.get("TRUSTED_PROXIES") or 0) > 0 else ""


# gunicorn's own errors (bad request line, 414, 431) answer in the JSON error envelope too.
gunicorn_errors.install()


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Each worker runs the background jobs; advisory locks let one process run each at a
    time."""
    import gc

    from insights_audit import worker as background

    # What the worker holds after loading the app lives as long as it does: out of the
    # collector's sight, a full collection no longer walks it (shorter pauses, less CPU).
    gc.freeze()

    background.start(worker.wsgi)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    """A worker's live gauges leave with it."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # type: ignore[no-untyped-def]
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
