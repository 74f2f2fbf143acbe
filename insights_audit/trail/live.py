"""The live tail: the org's new entries as Server-Sent Events, in chain order, exactly once.

A tail reads the feed (``queries.feed_rows``: chain order, below the horizon), so it has the
feed's promise: from a position, every later entry once, never one skipped because its
transaction committed late. Each event's ``id`` is the entry's feed position, which a
reconnecting client sends back as ``Last-Event-ID``.

A tail first sends the entries between its start and now (its backlog, read with its filters
in SQL), on its request's thread; then, where the server allows it, hands its socket to the
process's hub (``web.tails``), which serves every open tail from one thread. Elsewhere the
request's thread keeps polling itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Engine

from insights_audit.audit.chain_order import position_key
from insights_audit.db.unit_of_work import transaction
from insights_audit.trail import queries
from insights_audit.trail.cursors import encode_feed_position
from insights_audit.trail.queries import TrailFilter
from insights_audit.web.tails import (
    HUB,
    POLL_SECONDS,
    Event,
    HandedOff,
    Position,
    Tail,
    can_hand_off,
)

# Entries read per query, by the backlog and by the hub.
BATCH = 500
# A reconnecting browser waits this long (milliseconds) before it tries again.
RECONNECT_MS = 2000
HEAD = b"retry: %d\n: connected\n\n" % RECONNECT_MS
PING = b": ping\n\n"

# An org's entries after a position (through ``wanted`` when given), as events, and whether
# more follow.
Reader = Callable[[str, Position, TrailFilter | None], tuple[list[Event], bool]]


def event_bytes(position_text: str, entry: str) -> bytes:
    """One entry as one event (its JSON holds no line break: PostgreSQL writes it on one
    line and escapes any in strings)."""
    return f"id: {position_text}\nevent: entry\ndata: {entry}\n\n".encode()


def reader(bind: Engine, key: bytes) -> Reader:
    """Reads of the feed as events, each in its own short transaction on ``bind``."""

    def read(org: str, position: Position, wanted: TrailFilter | None) -> tuple[list[Event], bool]:
        with transaction(org, bind) as connection:
            rows = queries.feed_rows(connection, org, position, BATCH + 1, wanted)
        events = [_event(org, row, key) for row in rows[:BATCH]]
        return events, len(rows) > BATCH

    return read


def _event(org: str, row: Any, key: bytes) -> Event:
    position = (row.txid, row.id)
    return Event(position, event_bytes(encode_feed_position(position, org, key), row.entry), row)


def start_position(bind: Engine, org: str) -> Position:
    """Where a tail without a position starts: after the org's newest entry."""
    with transaction(org, bind) as connection:
        return queries.newest_position(connection, org)


def backlog(
    bind: Engine, read: Reader, org: str, position: Position, wanted: TrailFilter
) -> Iterator[tuple[bytes, Position]]:
    """The events ``wanted`` keeps from ``position`` up to now, batch by batch, each with the
    position the tail has read up to after it. The last position is at least the org's
    newest entry at the time of the last read, so a tail with a rare filter does not read
    everything in between again."""
    while True:
        head = start_position(bind, org)
        events, more = read(org, position, wanted)
        if events:
            position = events[-1].position
        if not more:
            position = max(position, head, key=position_key)
        yield b"".join(event.payload for event in events), position
        if not more:
            return


def tail_body(
    *,
    bind: Engine,
    read: Reader,
    org: str,
    wanted: TrailFilter,
    position: Position,
    heartbeat_seconds: float,
    max_seconds: float,
    client: Any,
    chunked: bool,
    release: Callable[[], None],
) -> Iterator[bytes]:
    """The tail's response body. Its place among the process's tails (``release``) is given
    back when it ends, or by the hub."""
    handed_off = False
    ends_at = time.monotonic() + max_seconds
    try:
        yield HEAD
        for payload, read_up_to in backlog(bind, read, org, position, wanted):
            position = read_up_to
            if payload:
                yield payload
        if HUB.enabled and can_hand_off(client):

            def fetch(org: str, after: Position) -> tuple[Sequence[Event], bool]:
                return read(org, after, None)

            tail = Tail(
                org, position, wanted.keeps, fetch, heartbeat_seconds, ends_at, chunked=chunked
            )
            HUB.adopt(tail, client)
            handed_off = True
            raise HandedOff()
        yield from _poll_here(read, org, wanted, position, heartbeat_seconds, ends_at)
    finally:
        if not handed_off:
            release()


def _poll_here(
    read: Reader,
    org: str,
    wanted: TrailFilter,
    position: Position,
    heartbeat_seconds: float,
    ends_at: float,
) -> Iterator[bytes]:
    """The tail served by its own thread: where the server cannot hand it off."""
    last_sent = time.monotonic()
    while time.monotonic() < ends_at:
        events, more = read(org, position, None)
        if events:
            position = events[-1].position
            payload = b"".join(event.payload for event in events if wanted.keeps(event.fields))
            if payload:
                last_sent = time.monotonic()
                yield payload
        if more:
            continue
        if time.monotonic() - last_sent >= heartbeat_seconds:
            last_sent = time.monotonic()
            yield PING
        time.sleep(max(0.0, min(POLL_SECONDS, ends_at - time.monotonic())))
