"""Log lines: one per request, and the logging set-up gunicorn applies (JSON or text).

``LOG_FORMAT=json`` (the default under gunicorn) writes one JSON object per line with
``time``, ``level``, ``logger`` and ``message``, plus, for request lines, ``request_id``,
``method``, ``route`` (the URL template), ``status``, ``duration_ms``, ``org`` and
``token_id``; ``LOG_FORMAT=text`` writes the same as readable text. A token never appears.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, g, request

REQUEST_LOG = logging.getLogger("insights_audit.requests")
LOG_FORMATS = ("json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
# The route of a request no URL rule matched (in log lines and metric labels).
UNMATCHED_ROUTE = "unmatched"


def logging_config(fmt: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of the service and gunicorn's error log, in ``fmt``;
    gunicorn's access log stays off (the request lines replace it)."""
    if fmt not in LOG_FORMATS:
        raise RuntimeError(f"LOG_FORMAT must be json or text, got {fmt!r}")
    formatters = {
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC with microseconds, under the key "time".
            "timestamp": "time",
        },
        "text": {"format": TEXT_FORMAT},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {fmt: formatters[fmt]},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": fmt,
            }
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
    }


RequestObserver = Callable[[str, str, int, float | None], None]


def init_request_log(app: Flask, observe: RequestObserver | None = None) -> None:
    """One line per request, written when its response is ready; ``observe`` (the request
    metrics) is told the same route, method, status and duration."""

    @app.before_request
    def _start_clock() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _log_request(response: Response) -> Response:
        # The request and its globals read once: each proxy lookup costs a context lookup.
        req = request._get_current_object()  # type: ignore[attr-defined]
        state = g._get_current_object()  # type: ignore[attr-defined]
        started = getattr(state, "request_started", None)
        seconds = time.perf_counter() - started if started else None
        route = req.url_rule.rule if req.url_rule is not None else UNMATCHED_ROUTE
        status = response.status_code
        if observe is not None:
            observe(route, req.method, status, seconds)
        principal = getattr(state, "principal", None)
        fields = {
            "request_id": getattr(state, "request_id", None),
            "method": req.method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2) if seconds is not None else None,
            "org": principal.org if principal is not None else None,
            "token_id": principal.token_id if principal is not None else None,
        }
        REQUEST_LOG.info(
            "%(method)s %(route)s %(status)s %(duration_ms)s ms request_id=%(request_id)s"
            " org=%(org)s token_id=%(token_id)s",
            fields,
            extra=fields,
        )
        return response
