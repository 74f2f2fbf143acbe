"""Every setting of the service, read from the environment, with its default."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be an integer, got {raw!r}") from exc


def _names(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip().lower() for part in raw.split(",") if part.strip())


def _urls(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name) or ""
    urls = tuple(part.strip() for part in raw.split(",") if part.strip())
    for url in urls:
        sqlalchemy_url(url)  # a postgresql:// URL, or the error says which setting is wrong
    return urls


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise RuntimeError(f"{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise RuntimeError(f"{name} must be greater than 0, got {raw!r}")
    return value


def _flag(name: str) -> bool:
    return (os.environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")


def _retention_days() -> int | None:
    if not (os.environ.get("AUDIT_RETENTION_DAYS") or "").strip():
        return None
    days = _int("AUDIT_RETENTION_DAYS", 0)
    if days < 30:
        raise RuntimeError(f"AUDIT_RETENTION_DAYS must be at least 30, got {days}")
    return days


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/insights_audit"


@dataclass(frozen=True)
class Settings:
    """Settings documented in the README's configuration table."""

    database_url: str = DEFAULT_DATABASE_URL
    pool_size: int = 5
    max_overflow: int = 5
    pool_timeout_s: int = 5
    # Streaming replicas that may serve reads, and how far behind one may be.
    database_replica_urls: tuple[str, ...] = ()
    replica_max_lag_seconds: float = 5
    statement_timeout_ms: int = 5000
    trusted_proxies: int = 0
    # Links the service builds start with this (``https://audit.example.com``) when set;
    # otherwise with the request's host, which must be one of ``trusted_hosts``.
    public_base_url: str | None = None
    trusted_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    max_body_bytes: int = 64 * 1024
    token_cache_seconds: int = 2
    audit_signing_key: str | None = None
    audit_signing_key_file: str = ".data/audit-signing.key"
    audit_seal_interval_seconds: int = 30
    audit_export_dir: str | None = None
    # Count requests, durations and pool use for /metrics (off: only the sealing gauges).
    metrics_enabled: bool = True
    # Remove entries older than this many days (None: keep everything; at least 30).
    audit_retention_days: int | None = None
    # Bounds of an export: its whole run, how long its client may read nothing, and how many
    # run at once in one org (across every worker and host).
    export_max_seconds: int = 3600
    export_stall_seconds: int = 60
    export_concurrency: int = 2
    # Searches with words one org runs at once on a database server (across every worker
    # and host); more wait.
    search_concurrency: int = 1
    # Threads of a gunicorn worker: streamed responses may take at most half of them.
    worker_threads: int = 8
    # Live tails: a comment line at least this often, and how many one worker process holds.
    stream_heartbeat_seconds: int = 15
    stream_max_tails: int = 1000
    # A tail ends after this long (clients reconnect with Last-Event-ID: connections spread
    # again over workers and hosts).
    stream_max_seconds: float = 3600
    # Push streams: the key of their secrets (None: derived from the signing key), whether
    # http and private destinations are allowed, a batch's size, and how long a failing
    # stream keeps trying before it is suspended.
    stream_secret_key: str | None = None
    stream_allow_http: bool = False
    stream_allow_private: bool = False
    stream_batch_size: int = 500
    stream_suspend_after_hours: int = 24
    # Who may show the viewer in a frame (CSP frame-ancestors): 'none', 'self' or origins.
    ui_frame_ancestors: str = "'none'"

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            pool_size=_int("DB_POOL_SIZE", cls.pool_size),
            max_overflow=_int("DB_MAX_OVERFLOW", cls.max_overflow),
            pool_timeout_s=_int("DB_POOL_TIMEOUT", cls.pool_timeout_s),
            database_replica_urls=_urls("DATABASE_REPLICA_URLS"),
            replica_max_lag_seconds=_number("REPLICA_MAX_LAG_SECONDS", cls.replica_max_lag_seconds),
            statement_timeout_ms=_int("DB_STATEMENT_TIMEOUT_MS", cls.statement_timeout_ms),
            trusted_proxies=_int("TRUSTED_PROXIES", cls.trusted_proxies),
            public_base_url=(os.environ.get("PUBLIC_BASE_URL") or "").rstrip("/") or None,
            trusted_hosts=_names("TRUSTED_HOSTS", cls.trusted_hosts),
            max_body_bytes=_int("MAX_BODY_BYTES", cls.max_body_bytes),
            token_cache_seconds=_int("TOKEN_CACHE_SECONDS", cls.token_cache_seconds),
            audit_signing_key=os.environ.get("AUDIT_SIGNING_KEY") or None,
            audit_signing_key_file=os.environ.get("AUDIT_SIGNING_KEY_FILE")
            or cls.audit_signing_key_file,
            audit_seal_interval_seconds=_int(
                "AUDIT_SEAL_INTERVAL_SECONDS", cls.audit_seal_interval_seconds
            ),
            audit_export_dir=os.environ.get("AUDIT_EXPORT_DIR") or None,
            audit_retention_days=_retention_days(),
            export_max_seconds=_int("EXPORT_MAX_SECONDS", cls.export_max_seconds),
            export_stall_seconds=_int("EXPORT_STALL_SECONDS", cls.export_stall_seconds),
            export_concurrency=max(1, _int("EXPORT_CONCURRENCY", cls.export_concurrency)),
            search_concurrency=max(1, _int("SEARCH_CONCURRENCY", cls.search_concurrency)),
            worker_threads=max(1, _int("GUNICORN_THREADS", cls.worker_threads)),
            stream_heartbeat_seconds=max(
                1, _int("STREAM_HEARTBEAT_SECONDS", cls.stream_heartbeat_seconds)
            ),
            stream_max_tails=max(1, _int("STREAM_MAX_TAILS", cls.stream_max_tails)),
            stream_max_seconds=max(1, _int("STREAM_MAX_SECONDS", int(cls.stream_max_seconds))),
            stream_secret_key=os.environ.get("STREAM_SECRET_KEY") or None,
            ui_frame_ancestors=(os.environ.get("UI_FRAME_ANCESTORS") or "").strip()
            or cls.ui_frame_ancestors,
            stream_allow_http=_flag("STREAM_ALLOW_HTTP"),
            stream_allow_private=_flag("STREAM_ALLOW_PRIVATE"),
            stream_batch_size=min(1000, max(1, _int("STREAM_BATCH_SIZE", cls.stream_batch_size))),
            stream_suspend_after_hours=max(
                1, _int("STREAM_SUSPEND_AFTER_HOURS", cls.stream_suspend_after_hours)
            ),
            metrics_enabled=(os.environ.get("METRICS_ENABLED") or "on").lower()
            not in ("off", "0", "false", "no"),
        )


def sqlalchemy_url(url: str) -> str:
    """Point a plain ``postgresql://`` URL at the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise RuntimeError(
        f"DATABASE_URL and DATABASE_REPLICA_URLS take postgresql:// URLs,"
        f" got {url.split(':', 1)[0]}://"
    )
