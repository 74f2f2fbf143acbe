"""The database engine of the app: created in ``create_app``, found through the app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine

from insights_audit.config import Settings, sqlalchemy_url
from insights_audit.metrics import POOL_WAITING

ENGINE_KEY = "insights_audit.engine"


def engine_options(settings: Settings) -> dict[str, Any]:
    """The pool and connection settings of every engine of the app (primary and replicas)."""
    return {
        "pool_size": settings.pool_size,
        "max_overflow": settings.max_overflow,
        "pool_timeout": settings.pool_timeout_s,
        "pool_recycle": 3600,
        "connect_args": {
            "connect_timeout": max(1, settings.pool_timeout_s),
            "options": f"-c statement_timeout={settings.statement_timeout_ms} -c timezone=UTC",
            "application_name": "insights-audit",
        },
    }


def create_database_engine(url: str, **options: Any) -> Engine:
    """An engine on ``url`` (a ``postgresql://`` URL) with ``options``."""
    return create_engine(
        sqlalchemy_url(url),
        json_serializer=lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        # Errors and logs never carry request data (emails, details) in SQL parameters.
        hide_parameters=True,
        **options,
    )


def init_engine(app: Flask, settings: Settings) -> Engine:
    engine = create_database_engine(settings.database_url, **engine_options(settings))
    app.extensions[ENGINE_KEY] = engine
    return engine


def engine() -> Engine:
    engine: Engine = current_app.extensions[ENGINE_KEY]
    return engine


@contextmanager
def waiting_for_connection() -> Iterator[None]:
    """Counts the caller among the requests waiting for a pooled connection."""
    POOL_WAITING.inc()
    try:
        yield
    finally:
        POOL_WAITING.dec()
