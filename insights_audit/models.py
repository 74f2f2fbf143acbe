"""Tables of the service. The migrations in ``migrations/versions`` create exactly these."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    Double,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

# A view is an entry of type "dashboard" and action "view": the one place that says so.
VIEW_TYPE = "dashboard"
VIEW_ACTION = "view"


def is_view(alias: str | None = None) -> str:
    """The SQL condition that an entry (of table alias ``alias``, if given) is a view: the
    same text the partial indexes of views are defined with, so the planner can match it."""
    prefix = f"{alias}." if alias else ""
    return f"{prefix}type = '{VIEW_TYPE}' AND {prefix}action = '{VIEW_ACTION}'"


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TimestampTZ = TIMESTAMP(timezone=True)


class XID8(UserDefinedType[str]):
    """PostgreSQL's 64-bit transaction id; read as its decimal text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


class Snapshot(UserDefinedType[str]):
    """PostgreSQL's ``pg_snapshot``: which transactions a statement saw; read as text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "pg_snapshot"


# Keys compare bytewise (see migration 0001).
Key = Text(collation="C")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiToken(Base):
    """A bearer token. Only the SHA-256 of the secret is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    org: Mapped[str] = mapped_column(Key)
    user_id: Mapped[str] = mapped_column(Key)
    user_email: Mapped[str | None] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text))
    scopes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=text("now()"))
    expires_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    revoked_at: Mapped[datetime | None] = mapped_column(TimestampTZ)


class AuditEntry(Base):
    """One append-only audit event ("user activity")."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        CheckConstraint("id ~ '^[0-9a-f]{24}$'", name="id_is_object_id"),
        CheckConstraint(
            "type IN ('dashboard', 'kpi', 'mapping', 'stream', 'token', 'import')",
            name="known_type",
        ),
        # The trail of one target, newest first, is a keyset scan of this index.
        Index(
            "ix_audit_entries_trail",
            "org",
            "type",
            "target_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        # An org's hash chain in order: sealing reads the entries after the last checkpoint.
        Index("ix_audit_entries_chain", "org", "txid", "id"),
        # Search, export and the org's trail by time, by user, by action (migration 0007).
        Index("ix_audit_entries_time", "org", text("created_at DESC"), text("id DESC")),
        Index("ix_audit_entries_user", "org", "user_id", text("created_at DESC"), text("id DESC")),
        Index(
            "ix_audit_entries_action",
            "org",
            "action",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text(f"NOT ({is_view()})"),
        ),
        Index(
            "ix_audit_entries_text",
            text("audit_search_text(action, user_id, user_email, details) gin_trgm_ops"),
            postgresql_using="gin",
        ),
        # Windowed "most viewed" reads views of an org by time, without touching the heap.
        Index(
            "ix_audit_entries_views_by_time",
            "org",
            "created_at",
            postgresql_include=["target_id", "user_id"],
            postgresql_where=text(is_view()),
        ),
    )

    id: Mapped[str] = mapped_column(Key, primary_key=True)
    org: Mapped[str] = mapped_column(Key)
    type: Mapped[str] = mapped_column(Key)
    action: Mapped[str] = mapped_column(Key)
    target_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[str] = mapped_column(Key)
    user_email: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # In the primary key because the table is partitioned by it; the id's first 4 bytes are
    # its second, so a lookup by id reads one partition.
    created_at: Mapped[datetime] = mapped_column(
        TimestampTZ, primary_key=True, server_default=text("now()")
    )
    request_id: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    # The writing transaction (xid8): orders the org's hash chain (see integrity/canonical.py).
    txid: Mapped[str] = mapped_column(XID8, server_default=text("pg_current_xact_id()"))
    # Who wrote the entry: the token's user and id (NULL on entries older than this record:
    # written by ``user_id``). Differs from ``user_id`` on an administrator's on-behalf write.
    recorded_by: Mapped[str | None] = mapped_column(Key)
    recorded_by_token: Mapped[int | None] = mapped_column(BigInteger)


class ViewLog(Base):
    """One row per org, user and dashboard: how often and when that user viewed it."""

    __tablename__ = "view_logs"
    __table_args__ = (
        # "Recently viewed" of one user.
        Index(
            "ix_view_logs_recent",
            "org",
            "user_id",
            text("last_viewed_at DESC"),
            "dashboard_id",
        ),
        # Viewers of a dashboard since t: a user viewed it in [t, now] iff their last view >= t
        # (the user included, so that viewer sets are read from the index alone).
        Index(
            "ix_view_logs_dashboard_recency",
            "org",
            "dashboard_id",
            "last_viewed_at",
            postgresql_include=["user_id"],
        ),
        # "Top viewers" of one dashboard.
        Index(
            "ix_view_logs_top_viewers",
            "org",
            "dashboard_id",
            text("view_count DESC"),
            text("last_viewed_at DESC"),
            "user_id",
        ),
    )

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    user_id: Mapped[str] = mapped_column(Key, primary_key=True)
    dashboard_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    user_email: Mapped[str | None] = mapped_column(Text)
    view_count: Mapped[int] = mapped_column(BigInteger)
    first_viewed_at: Mapped[datetime] = mapped_column(TimestampTZ)
    last_viewed_at: Mapped[datetime] = mapped_column(TimestampTZ)
    # The view before the last one: tells whether the last view was the user's first that day.
    previous_viewed_at: Mapped[datetime | None] = mapped_column(TimestampTZ)


class DashboardDailyViews(Base):
    """Views and distinct viewers of one dashboard on one UTC day, and its running total."""

    __tablename__ = "dashboard_daily_views"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    dashboard_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    views: Mapped[int] = mapped_column(BigInteger)
    unique_viewers: Mapped[int] = mapped_column(BigInteger)
    # Viewers whose latest view of the dashboard is on this day: the viewers since any time
    # are the sum over the days after it (plus that day's own part).
    last_viewers: Mapped[int] = mapped_column(BigInteger)
    # All views of the dashboard up to the end of this day: windows subtract it from the total.
    total_views: Mapped[int] = mapped_column(BigInteger)


class TotalSnapshot(Base):
    """A past day whose running totals an org's ``dashboard_day_totals`` hold."""

    __tablename__ = "total_snapshots"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class DashboardDayTotal(Base):
    """Every dashboard's running total of views at the end of a past day (see TotalSnapshot)."""

    __tablename__ = "dashboard_day_totals"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    dashboard_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    total_views: Mapped[int] = mapped_column(BigInteger)


class DashboardTotal(Base):
    """Org-wide totals and last known name of one dashboard."""

    __tablename__ = "dashboard_totals"
    __table_args__ = (
        # All-time "most viewed" of an org.
        Index(
            "ix_dashboard_totals_popular",
            "org",
            text("view_count DESC"),
            text("last_viewed_at DESC"),
            "dashboard_id",
            postgresql_where=text("view_count > 0"),
        ),
    )

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    dashboard_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    # When ``name`` was reported: a later report wins, whatever order transactions commit in.
    name_reported_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    view_count: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    unique_viewers: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    first_viewed_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    last_viewed_at: Mapped[datetime | None] = mapped_column(TimestampTZ)


class IdempotencyKey(Base):
    """The first successful response to a request carrying an ``Idempotency-Key``."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    token_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(Key, primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary)
    status_code: Mapped[int | None] = mapped_column(Integer)
    # json, not jsonb: a replay returns the fields in the order first sent.
    response: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=text("now()"))


class TokenWritePosition(Base):
    """The transaction of a token's last write, read before a replica may serve the token's
    reads (migration 0016; written only when replicas are configured)."""

    __tablename__ = "token_write_positions"
    token_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    xid: Mapped[str] = mapped_column(XID8)


class AuditCheckpoint(Base):
    """A signed checkpoint: one sealed batch of an org's hash chain (see integrity/canonical.py)."""

    __tablename__ = "audit_checkpoints"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq_from: Mapped[int] = mapped_column(BigInteger)
    seq_to: Mapped[int] = mapped_column(BigInteger)
    first_id: Mapped[str] = mapped_column(Key)
    last_id: Mapped[str] = mapped_column(Key)
    last_txid: Mapped[str] = mapped_column(Text)
    # 12 bytes per entry id and 32 per entry hash, in chain order.
    entry_ids: Mapped[bytes] = mapped_column(LargeBinary)
    entry_hashes: Mapped[bytes] = mapped_column(LargeBinary)
    head_hash: Mapped[bytes] = mapped_column(LargeBinary)
    previous_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    checkpoint_hash: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_at: Mapped[datetime] = mapped_column(TimestampTZ)
    key_id: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    # The canonical form of the entries' leaves (``integrity.canonical``).
    version: Mapped[int] = mapped_column(SmallInteger, server_default=text("1"))


class RetentionRecord(Base):
    """A signed record of entries of an org that retention removed (see ``retention``)."""

    __tablename__ = "audit_retention_records"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # Every entry created before this moment was removed (whole month partitions).
    removed_before: Mapped[datetime] = mapped_column(TimestampTZ)
    partitions: Mapped[list[str]] = mapped_column(ARRAY(Text))
    entries: Mapped[int] = mapped_column(BigInteger)
    first_id: Mapped[str | None] = mapped_column(Key)
    last_id: Mapped[str | None] = mapped_column(Key)
    first_created_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    last_created_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    first_block: Mapped[int | None] = mapped_column(BigInteger)
    last_block: Mapped[int | None] = mapped_column(BigInteger)
    # The chain hash after the last removed entry.
    head_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The org's previous record's hash: records form a chain too.
    previous_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    removed_at: Mapped[datetime] = mapped_column(TimestampTZ)
    key_id: Mapped[str] = mapped_column(Text)
    record_hash: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)


class IntegrityVerification(Base):
    """The last checkpoint of an org that the service verified, and when."""

    __tablename__ = "integrity_verifications"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    block: Mapped[int] = mapped_column(BigInteger)
    checked: Mapped[int] = mapped_column(BigInteger)
    verified_at: Mapped[datetime] = mapped_column(TimestampTZ)


class WindowSnapshot(Base):
    """A ``most-viewed?days=`` window kept counted for an org (migration 0010): its counts in
    ``window_counts`` are those of every view visible in ``snapshot``, taken at ``as_of``."""

    __tablename__ = "window_snapshots"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True)
    as_of: Mapped[datetime] = mapped_column(TimestampTZ)
    snapshot: Mapped[str] = mapped_column(Snapshot)
    # When a request last asked for the window (kept to within 5 minutes): the background
    # worker recounts only windows asked for in the last hour.
    requested_at: Mapped[datetime] = mapped_column(TimestampTZ)


class WindowCount(Base):
    """Views of one dashboard in a kept window, and in the window as long before it, as of
    its ``WindowSnapshot``."""

    __tablename__ = "window_counts"
    __table_args__ = (
        # The window's top dashboards in order, for the ones no view has changed since.
        Index(
            "ix_window_counts_top",
            "org",
            "days",
            text("views DESC"),
            text("last_viewed_at DESC"),
            "dashboard_id",
        ),
        # The window's rising dashboards by trending score (migration 0020), for the ones
        # no view has changed since.
        Index(
            "ix_window_counts_rising",
            "org",
            "days",
            text(
                "((views - earlier_views)::double precision"
                " / sqrt((earlier_views + 1)::double precision)) DESC"
            ),
            text("views DESC"),
            "dashboard_id",
            postgresql_where=text("views > earlier_views"),
        ),
    )

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True)
    dashboard_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    views: Mapped[int] = mapped_column(BigInteger)
    # Its views in the window as long just before this one (trending's previous views).
    earlier_views: Mapped[int] = mapped_column(BigInteger)
    last_viewed_at: Mapped[datetime] = mapped_column(TimestampTZ)


class EngagementAnswer(Base):
    """An answer of "viewers also viewed" (``kind`` related, ``subject`` the dashboard) or of
    recommendations (``kind`` recommended, ``subject`` the user) for a window of ``days``,
    kept for a minute at most (migration 0019): its best items, exact at ``as_of``."""

    __tablename__ = "engagement_answers"

    org: Mapped[str] = mapped_column(Key, primary_key=True)
    kind: Mapped[str] = mapped_column(Key, primary_key=True)
    subject: Mapped[str] = mapped_column(Key, primary_key=True)
    days: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The ``limit`` it was computed for: it answers requests for at most that many items.
    items_limit: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[datetime] = mapped_column(TimestampTZ)
    # When a request last asked for it (kept to within 15 s): the background worker
    # computes again only answers asked for in the last minute.
    requested_at: Mapped[datetime] = mapped_column(TimestampTZ)
    # Requests that used it once kept (counted at most every 15 s): only answers asked for
    # again are computed again by the worker.
    asks: Mapped[int] = mapped_column(Integer)
    items: Mapped[list[Any]] = mapped_column(JSONB)


class ServiceGauge(Base):
    """A figure across orgs that ``/metrics`` shows, measured by the background job after
    each sealing pass (migration 0011), so that a scrape reads one small table."""

    __tablename__ = "service_gauges"

    name: Mapped[str] = mapped_column(Key, primary_key=True)
    value: Mapped[float] = mapped_column(Double)
    measured_at: Mapped[datetime] = mapped_column(TimestampTZ)


# The service gauges: entries newer than their org's last checkpoint, summed over orgs, and
# when the newest checkpoint of any org was sealed (Unix seconds).
UNSEALED_ENTRIES = "unsealed_entries"
NEWEST_CHECKPOINT = "newest_checkpoint_epoch"


# Tables whose rows belong to one org, under forced row-level security (migration 0005).
# ``api_tokens`` is not: a token is looked up by its hash before its org is known.
TENANT_TABLES = (
    "audit_entries",
    "audit_checkpoints",
    "view_logs",
    "dashboard_totals",
    "dashboard_daily_views",
    "dashboard_day_totals",
    "total_snapshots",
    "integrity_verifications",
    "audit_retention_records",
    "window_snapshots",
    "window_counts",
    "push_streams",
    "engagement_answers",
)


class PushStream(Base):
    """A push stream: the org's trail delivered to a webhook or a Splunk HEC endpoint, from
    a feed position that moves only after the receiver accepted a batch (migration 0012)."""

    __tablename__ = "push_streams"
    __table_args__ = (
        Index("ix_push_streams_org", "org", "created_at"),
        Index("ix_push_streams_due", "next_attempt_at", postgresql_where=text("status = 'active'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    org: Mapped[str] = mapped_column(Key)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'active'"))
    # The webhook's signing secret or the HEC token, encrypted (``streams.secrets``).
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    # The feed position ``(txid, id)`` of the last entry the receiver accepted.
    position_txid: Mapped[str] = mapped_column(Text, server_default=text("'0'"))
    position_id: Mapped[str] = mapped_column(Text, server_default=text("''"))
    delivered: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_delivered_at: Mapped[datetime | None] = mapped_column(TimestampTZ)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    failing_since: Mapped[datetime | None] = mapped_column(TimestampTZ)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=text("now()"))
    created_at: Mapped[datetime] = mapped_column(TimestampTZ, server_default=text("now()"))
