"""Delivery of push streams: every matching entry at least once, in feed order.

One deliverer per stream at a time across every worker and host: a pass over a stream runs
under a session advisory lock on its id. A pass reads the next batch after the stream's
stored position (the feed's order, below its horizon: nothing is skipped when a transaction
commits late), sends it, and stores the batch's last position only after a 2xx answer. A
worker that dies mid-batch leaves the position where it was: the next pass sends that batch
again (with a new delivery id), so receivers see duplicates only around a crash.

A failed batch is tried again after an exponential backoff with jitter (1 s doubling to
5 min), or after the receiver's ``Retry-After``; a stream that has failed for
``STREAM_SUSPEND_AFTER_HOURS`` is suspended until an administrator sets it active. Redirects
are not followed, each request has 10 s, and the connection goes to an address checked to be
public (``destinations``) unless private addresses are allowed.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import urllib3
from sqlalchemy import Engine, func, select, text, update

from insights_audit.audit.chain_order import position_key
from insights_audit.audit.entries import RequestMeta, service_actor
from insights_audit.db.unit_of_work import transaction
from insights_audit.metrics import STREAM_DELIVERED, STREAM_FAILURES, STREAM_LAG
from insights_audit.models import PushStream
from insights_audit.streams import destinations, secrets, service
from insights_audit.trail import queries
from insights_audit.trail.cursors import encode_feed_position

log = logging.getLogger(__name__)

# Two-key advisory locks: "strm" in ASCII, then the stream.
STREAM_LOCK_CLASS = 0x7374726D
TIMEOUT_SECONDS = 10
BACKOFF_FIRST_SECONDS = 1
BACKOFF_MAX_SECONDS = 300
# Longest Retry-After honoured: a receiver cannot park a stream for longer.
RETRY_AFTER_MAX_SECONDS = 3600
# How long one pass may keep delivering one stream before the others get their turn.
PASS_SECONDS = 5.0
ERROR_LIMIT = 500
USER_AGENT = "insights-audit-streams/1"


@dataclass(frozen=True)
class DeliveryPolicy:
    allow_http: bool
    allow_private: bool
    secrets_key: bytes
    cursor_key: bytes
    batch_size: int
    suspend_after: timedelta


@dataclass(frozen=True)
class Outcome:
    """What the receiver said: accepted, or why not and when to try again (seconds, if it
    said)."""

    ok: bool
    error: str | None = None
    retry_after: float | None = None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def webhook_body(stream_id: uuid.UUID, entries: Sequence[str], position: str) -> bytes:
    """``{"streamId", "entries": [...], "position"}``, the entries' JSON as PostgreSQL wrote
    it."""
    head = json.dumps({"streamId": str(stream_id)})[:-1]
    tail = json.dumps({"position": position})[1:]
    return f'{head}, "entries": [{", ".join(entries)}], {tail}'.encode()


def hec_body(rows: Sequence[Any]) -> bytes:
    """One HEC event object per entry, concatenated (the collector's batch format)."""
    return "".join(
        f'{{"time": {row.created_at.timestamp():.3f}, "sourcetype": "insights:audit",'
        f' "source": "insights-audit", "event": {row.entry}}}'
        for row in rows
    ).encode()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def send(url: str, body: bytes, headers: dict[str, str], policy: DeliveryPolicy) -> Outcome:
    """POST ``body`` to ``url`` over a connection to a checked address; never a redirect."""
    try:
        destination = destinations.parse(url, allow_http=policy.allow_http)
        address = destinations.addresses(destination, allow_private=policy.allow_private)[0]
    except destinations.RefusedDestination as refused:
        return Outcome(False, f"refused destination: {refused}")
    timeout = urllib3.Timeout(connect=TIMEOUT_SECONDS, read=TIMEOUT_SECONDS)
    host_header = destination.host if ":" not in destination.host else f"[{destination.host}]"
    if destination.port != destinations.DEFAULT_PORTS[destination.scheme]:
        host_header += f":{destination.port}"
    pool: urllib3.HTTPConnectionPool
    if destination.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            destination.port,
            timeout=timeout,
            retries=False,
            server_hostname=destination.host,
            assert_hostname=destination.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, destination.port, timeout=timeout, retries=False)
    try:
        response = pool.urlopen(
            "POST",
            destination.target,
            body=body,
            headers={"Host": host_header, "User-Agent": USER_AGENT, **headers},
            redirect=False,
            retries=False,
            assert_same_host=False,
            preload_content=True,
        )
    except urllib3.exceptions.TimeoutError:
        return Outcome(False, f"no answer within {TIMEOUT_SECONDS} s")
    except urllib3.exceptions.NewConnectionError as error:
        return Outcome(
            False, f"could not connect to {address}: {error.__cause__ or error}"[:ERROR_LIMIT]
        )
    except urllib3.exceptions.HTTPError as error:
        return Outcome(False, f"{type(error).__name__}: {error}"[:ERROR_LIMIT])
    finally:
        pool.close()
    if 200 <= response.status < 300:
        return Outcome(True)
    reason = f"HTTP {response.status}"
    if 300 <= response.status < 400:
        reason += " (redirects are not followed)"
    return Outcome(False, reason, _retry_after(response.headers.get("Retry-After")))


def backoff_seconds(failures: int, retry_after: float | None) -> float:
    """The wait before the next try: the receiver's ``Retry-After`` if it gave one,
    otherwise 1 s doubling with each failure up to 5 min, with jitter."""
    if retry_after is not None:
        return min(max(retry_after, BACKOFF_FIRST_SECONDS), RETRY_AFTER_MAX_SECONDS)
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, failures - 1))
    return max(BACKOFF_FIRST_SECONDS, random.uniform(ceiling / 2, ceiling))


def deliver_due(bind: Engine, policy: DeliveryPolicy, stopping: Callable[[], bool]) -> int:
    """One pass over every stream that is due, each under its lock; entries delivered."""
    with transaction(bind=bind) as connection:
        due = connection.execute(text("SELECT org, id FROM push_streams_due()")).all()
    delivered = 0
    for row in due:
        org: str = row.org
        stream_id: uuid.UUID = row.id
        if stopping():
            break
        delivered += deliver_stream(bind, policy, org, stream_id, stopping)
    return delivered


def deliver_stream(
    bind: Engine,
    policy: DeliveryPolicy,
    org: str,
    stream_id: uuid.UUID,
    stopping: Callable[[], bool] = lambda: False,
) -> int:
    """Deliver ``stream_id``'s waiting entries batch by batch, unless another process holds
    the stream; entries delivered."""
    with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as guard:
        lock = func.pg_try_advisory_lock(STREAM_LOCK_CLASS, func.hashtext(str(stream_id)))
        if not guard.scalar(select(lock)):
            return 0
        try:
            delivered = 0
            deadline = time.monotonic() + PASS_SECONDS
            while not stopping() and time.monotonic() < deadline:
                sent, more = _one_batch(bind, policy, org, stream_id)
                delivered += sent
                if not more:
                    break
            return delivered
        finally:
            unlock = func.pg_advisory_unlock(STREAM_LOCK_CLASS, func.hashtext(str(stream_id)))
            guard.scalar(select(unlock))


def _one_batch(
    bind: Engine, policy: DeliveryPolicy, org: str, stream_id: uuid.UUID
) -> tuple[int, bool]:
    """Send the next batch; how many entries were accepted and whether to go on."""
    with transaction(org, bind) as connection:
        stream = connection.execute(
            select(PushStream.__table__).where(PushStream.org == org, PushStream.id == stream_id)
        ).one_or_none()
        if stream is None or stream.status != "active":
            return 0, False
        if stream.next_attempt_at > datetime.now(UTC):
            return 0, False
        position = (stream.position_txid, stream.position_id)
        head = queries.newest_position(connection, org)
        rows = queries.feed_rows(
            connection, org, position, policy.batch_size, service.stream_filter(stream.filters)
        )
        if not rows:
            STREAM_LAG.labels(str(stream_id)).set(0)
            # Nothing waits up to the org's newest entry: the next read starts there.
            if position_key(head) > position_key(position):
                _store(connection, stream_id, position, head)
            return 0, False
        secret = secrets.unseal(policy.secrets_key, stream_id, stream.secret)
        url, kind = stream.url, stream.kind
    last = (rows[-1].txid, rows[-1].id)
    STREAM_LAG.labels(str(stream_id)).set(
        max(0.0, (datetime.now(UTC) - rows[0].created_at).total_seconds())
    )
    delivery = str(uuid.uuid4())
    if kind == "webhook":
        body = webhook_body(
            stream_id,
            [row.entry for row in rows],
            encode_feed_position(last, org, policy.cursor_key),
        )
        headers = {
            "Content-Type": "application/json",
            "Insights-Audit-Delivery": delivery,
            "Insights-Audit-Signature": signature(secret, int(time.time()), body),
        }
    else:
        body = hec_body(rows)
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Splunk {secret}",
            "Insights-Audit-Delivery": delivery,
        }
    outcome = send(url, body, headers, policy)
    with transaction(org, bind) as connection:
        if outcome.ok:
            moved = connection.execute(
                update(PushStream)
                .where(
                    PushStream.id == stream_id,
                    PushStream.position_txid == position[0],
                    PushStream.position_id == position[1],
                )
                .values(
                    position_txid=last[0],
                    position_id=last[1],
                    delivered=PushStream.delivered + len(rows),
                    last_delivered_at=func.now(),
                    consecutive_failures=0,
                    failing_since=None,
                    last_error=None,
                    next_attempt_at=func.now(),
                )
            )
            STREAM_DELIVERED.labels(str(stream_id)).inc(len(rows))
            return len(rows), moved.rowcount == 1 and len(rows) == policy.batch_size
        _failed(connection, policy, stream_id, outcome)
        return 0, False


def _store(
    connection: Any, stream_id: uuid.UUID, seen: tuple[str, str], position: tuple[str, str]
) -> None:
    connection.execute(
        update(PushStream)
        .where(
            PushStream.id == stream_id,
            PushStream.position_txid == seen[0],
            PushStream.position_id == seen[1],
        )
        .values(position_txid=position[0], position_id=position[1])
    )


def _failed(
    connection: Any, policy: DeliveryPolicy, stream_id: uuid.UUID, outcome: Outcome
) -> None:
    """Record a failed batch: when to try again, or the stream's suspension."""
    STREAM_FAILURES.labels(str(stream_id)).inc()
    stream = connection.execute(
        select(PushStream.__table__).where(PushStream.id == stream_id).with_for_update()
    ).one()
    failures = stream.consecutive_failures + 1
    now = connection.scalar(select(func.now()))
    failing_since = stream.failing_since or now
    wait = backoff_seconds(failures, outcome.retry_after)
    values: dict[str, Any] = {
        "consecutive_failures": failures,
        "failing_since": failing_since,
        "last_error": (outcome.error or "failed")[:ERROR_LIMIT],
        "next_attempt_at": now + timedelta(seconds=wait),
    }
    suspend = now - failing_since >= policy.suspend_after and stream.status == "active"
    if suspend:
        values["status"] = "suspended"
    connection.execute(update(PushStream).where(PushStream.id == stream_id).values(**values))
    log.warning(
        "stream delivery failed stream=%s org=%s failures=%d retry_in=%.1fs: %s",
        stream_id,
        stream.org,
        failures,
        wait,
        values["last_error"],
    )
    if suspend:
        service.record_change(
            connection,
            service_actor(stream.org),
            "suspend",
            stream,
            RequestMeta(None, None, None),
            status="suspended",
            failingSince=failing_since.isoformat(),
            lastError=values["last_error"],
        )
        log.warning("stream suspended stream=%s org=%s", stream_id, stream.org)
