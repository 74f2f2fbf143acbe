"""Push streams: create, read, change, delete; each change an entry of type ``stream``.

A stream's entry records who changed it, what (name, kind, url, filters, status; which of
them changed) and never its secret or token, so the trail shows who redirected the org's
audit data and when.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from insights_audit.audit import chain_order
from insights_audit.audit.entries import ENTRY_INSERT, Actor, RequestMeta, entry_params
from insights_audit.db.unit_of_work import UnitOfWork
from insights_audit.errors import VALIDATION_FAILED, BadRequest, NotFound
from insights_audit.models import PushStream
from insights_audit.streams import destinations, secrets
from insights_audit.streams.schemas import TOKEN_ONLY_FOR_HEC
from insights_audit.trail import queries
from insights_audit.trail.cursors import decode_feed_position, encode_feed_position
from insights_audit.trail.queries import TrailFilter

STREAM_NOT_FOUND = "Stream not found"
STREAM_TYPE = "stream"
NOT_A_POSITION = "Must be now, beginning or a feed position."
# Columns a PATCH changes that its ``update`` entry names (a new token as "token").
CHANGEABLE_COLUMNS = ("name", "url", "filters", "secret")
NO_SECRET_FOR_HEC = "A splunk-hec stream has no signing secret; change its token with PATCH."


@dataclass(frozen=True)
class StreamPolicy:
    """What the settings allow of streams, and the keys they need."""

    allow_http: bool
    allow_private: bool
    secrets_key: bytes
    cursor_key: bytes


def check_url(url: str, policy: StreamPolicy) -> None:
    """A 400 naming the reason unless ``url`` is a destination streams may deliver to."""
    try:
        destination = destinations.parse(url, allow_http=policy.allow_http)
        destinations.addresses(destination, allow_private=policy.allow_private)
    except destinations.RefusedDestination as refused:
        raise BadRequest(VALIDATION_FAILED, errors={"json": {"url": [str(refused)]}}) from None


def stream_filter(filters: dict[str, Any]) -> TrailFilter:
    target = filters.get("targetId")
    return TrailFilter(
        types=tuple(filters.get("type", ())),
        actions=tuple(filters.get("action", ())),
        target_id=uuid.UUID(target) if target else None,
        user_ids=tuple(filters.get("userId", ())),
    )


def _stored_filters(filters: dict[str, Any]) -> dict[str, Any]:
    return {
        name: str(value) if name == "targetId" else value
        for name, value in filters.items()
        if value is not None
    }


def record_change(
    connection: Connection,
    actor: Actor,
    action: str,
    stream: Row[Any],
    meta: RequestMeta,
    **more: Any,
) -> None:
    """The stream's audit entry; ``more`` adds details or overrides one (a new status)."""
    details = {
        "name": stream.name,
        "kind": stream.kind,
        "url": stream.url,
        "filters": stream.filters,
        "status": stream.status,
        **more,
    }
    params = entry_params(actor, STREAM_TYPE, action, stream.id, details, meta)
    connection.execute(ENTRY_INSERT, params)


def _start_position(connection: Connection, org: str, start_at: str, key: bytes) -> tuple[str, str]:
    if start_at == "now":
        return queries.newest_position(connection, org)
    if start_at == "beginning":
        return chain_order.START
    try:
        return decode_feed_position(start_at, org, key)
    except ValueError:
        raise BadRequest(
            VALIDATION_FAILED, errors={"json": {"startAt": [NOT_A_POSITION]}}
        ) from None


def lag_seconds(connection: Connection, stream: Row[Any]) -> float:
    """How old the oldest entry the stream has yet to deliver is (0 when it has none)."""
    waiting = queries.feed_rows(
        connection,
        stream.org,
        (stream.position_txid, stream.position_id),
        1,
        stream_filter(stream.filters),
    )
    if not waiting:
        return 0.0
    return max(0.0, (datetime.now(UTC) - waiting[0].created_at).total_seconds())


def view(connection: Connection, stream: Row[Any], key: bytes) -> dict[str, Any]:
    """The stream as the API shows it."""
    position = (stream.position_txid, stream.position_id)
    return {
        "id": stream.id,
        "name": stream.name,
        "kind": stream.kind,
        "url": stream.url,
        "filters": stream.filters,
        "status": stream.status,
        "position": encode_feed_position(position, stream.org, key),
        "lastDeliveredAt": stream.last_delivered_at,
        "lagSeconds": round(lag_seconds(connection, stream), 3),
        "delivered": stream.delivered,
        "consecutiveFailures": stream.consecutive_failures,
        "lastError": stream.last_error,
        "createdAt": stream.created_at,
    }


def create(
    work: UnitOfWork, actor: Actor, meta: RequestMeta, body: dict[str, Any], policy: StreamPolicy
) -> dict[str, Any]:
    """A new stream, with its webhook signing secret (shown this once)."""
    check_url(body["url"], policy)
    connection = work.connection
    position = _start_position(connection, work.org, body["startAt"], policy.cursor_key)
    stream_id = uuid.uuid4()
    secret = secrets.new_webhook_secret() if body["kind"] == "webhook" else body["token"]
    connection.execute(
        insert(PushStream).values(
            id=stream_id,
            org=work.org,
            name=body["name"],
            kind=body["kind"],
            url=body["url"],
            filters=_stored_filters(body["filters"]),
            secret=secrets.seal(policy.secrets_key, stream_id, secret),
            position_txid=position[0],
            position_id=position[1],
        )
    )
    stored = _load(connection, work.org, stream_id)
    record_change(connection, actor, "create", stored, meta)
    shown = view(connection, stored, policy.cursor_key)
    shown["secret"] = secret if body["kind"] == "webhook" else None
    return shown


def _load(
    connection: Connection, org: str, stream_id: uuid.UUID, *, lock: bool = False
) -> Row[Any]:
    """The org's stream (locked for the transaction's change if ``lock``); a 404 if none."""
    query = select(PushStream.__table__).where(PushStream.org == org, PushStream.id == stream_id)
    stream = connection.execute(query.with_for_update() if lock else query).one_or_none()
    if stream is None:
        raise NotFound(STREAM_NOT_FOUND)
    return stream


def one(work: UnitOfWork, stream_id: uuid.UUID, key: bytes) -> dict[str, Any]:
    connection = work.connection
    return view(connection, _load(connection, work.org, stream_id), key)


def every(work: UnitOfWork, key: bytes) -> list[dict[str, Any]]:
    connection = work.connection
    streams: Iterable[Row[Any]] = connection.execute(
        select(PushStream.__table__)
        .where(PushStream.org == work.org)
        .order_by(PushStream.created_at, PushStream.id)
    )
    return [view(connection, stream, key) for stream in streams]


def change(
    work: UnitOfWork,
    actor: Actor,
    meta: RequestMeta,
    stream_id: uuid.UUID,
    changes: dict[str, Any],
    policy: StreamPolicy,
) -> dict[str, Any]:
    """Apply ``changes``: an ``update`` entry for the fields, ``pause`` or ``resume`` for
    the status."""
    connection = work.connection
    stream = _load(connection, work.org, stream_id, lock=True)
    if "token" in changes and stream.kind != "splunk-hec":
        raise BadRequest(VALIDATION_FAILED, errors={"json": {"token": [TOKEN_ONLY_FOR_HEC]}})
    if "url" in changes:
        check_url(changes["url"], policy)
    values: dict[str, Any] = {}
    for field, column in (("name", "name"), ("url", "url")):
        if field in changes and changes[field] != getattr(stream, column):
            values[column] = changes[field]
    if "filters" in changes and _stored_filters(changes["filters"]) != stream.filters:
        values["filters"] = _stored_filters(changes["filters"])
    if "token" in changes:
        values["secret"] = secrets.seal(policy.secrets_key, stream.id, changes["token"])
    status = changes.get("status", stream.status)
    status_action = None
    if status != stream.status:
        values["status"] = status
        status_action = "pause" if status == "paused" else "resume"
        if status == "active":
            # Resumed: try at once, with a clean record of failures.
            values.update(consecutive_failures=0, failing_since=None, next_attempt_at=_now())
    if values:
        connection.execute(update(PushStream).where(PushStream.id == stream.id).values(**values))
    updated = _load(connection, work.org, stream_id)
    changed = sorted(
        {"secret": "token"}.get(name, name) for name in values if name in CHANGEABLE_COLUMNS
    )
    if changed:
        record_change(connection, actor, "update", updated, meta, changed=changed)
    if status_action is not None:
        record_change(connection, actor, status_action, updated, meta, previousStatus=stream.status)
    return view(connection, updated, policy.cursor_key)


def _now() -> datetime:
    return datetime.now(UTC)


def remove(work: UnitOfWork, actor: Actor, meta: RequestMeta, stream_id: uuid.UUID) -> None:
    connection = work.connection
    stream = _load(connection, work.org, stream_id, lock=True)
    record_change(connection, actor, "delete", stream, meta)
    connection.execute(delete(PushStream).where(PushStream.id == stream.id))


def rotate_secret(
    work: UnitOfWork, actor: Actor, meta: RequestMeta, stream_id: uuid.UUID, key: bytes
) -> dict[str, Any]:
    """A new signing secret for a webhook stream, in force for its next delivery."""
    connection = work.connection
    stream = _load(connection, work.org, stream_id, lock=True)
    if stream.kind != "webhook":
        raise BadRequest(NO_SECRET_FOR_HEC)
    secret = secrets.new_webhook_secret()
    connection.execute(
        update(PushStream)
        .where(PushStream.id == stream.id)
        .values(secret=secrets.seal(key, stream.id, secret))
    )
    record_change(connection, actor, "rotate-secret", stream, meta)
    return {"id": stream.id, "secret": secret}
