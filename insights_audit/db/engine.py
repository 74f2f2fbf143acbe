"""The database engine of the app: created in ``create_app``, found through the app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, current_app
from sqlalchemy import Engine, create_engine

from insights_audit.config import Settings, sqlalchemy_url
from insights_audit.metrics import POOL_WAITING

ENGINE_KEY = "insights_audit.engine"


def init_engine(app: Flask, settings: Settings) -> Engine:
    engine = create_engine(
        sqlalchemy_url(settings.database_url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_recycle=3600,
        connect_args={
            "connect_timeout": max(1, settings.pool_timeout_s),
            "options": f"-c statement_timeout={settings.statement_timeout_ms} -c timezone=UTC",
            "application_name": "insights-audit",
        },
        json_serializer=lambda value: json.dumps(value, separators=(",", ":"), ensure_ascii=False),
        # Errors and logs never carry request data (emails, details) in SQL parameters.
        hide_parameters=True,
    )
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
