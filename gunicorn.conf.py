"""Production settings for ``gunicorn wsgi:app`` (read from the working directory)."""

import multiprocessing
import os

from insights_audit import gunicorn_errors

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
# Threaded workers: a slow client holds one thread, not a whole worker, and the worker's
# heartbeat does not wait for a long streamed response (exports). See BENCHMARKS.md.
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# Recycle workers now and then so a slow leak can never grow without bound.
max_requests = 50_000
max_requests_jitter = 5_000
accesslog = os.environ.get("ACCESS_LOG") or None
errorlog = "-"
# X-Forwarded-* are trusted only as far as TRUSTED_PROXIES says (the app's ProxyFix takes the
# client address and host from that many hops); with no proxy in front, from nobody.
forwarded_allow_ips = "*" if int(os.environ.get("TRUSTED_PROXIES") or 0) > 0 else ""


# gunicorn's own errors (bad request line, 414, 431) answer in the JSON error envelope too.
gunicorn_errors.install()


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """Each worker runs the background sealer; an advisory lock lets one seal at a time."""
    from insights_audit.integrity import sealer

    sealer.start(worker.wsgi)
