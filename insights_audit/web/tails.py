"""Live tails that hold no request thread and no pooled connection while they wait.

A Server-Sent Events response stays open for hours and sends a few bytes a minute. Served
the usual way it would hold one of a worker's threads for all that time, so a handful of
open tails would stop the API. Instead, once a tail has sent its head and its backlog, the
request hands its socket to the process's hub and returns its thread:

- the hub is one thread per worker process. It reads the org's new entries for all of the
  org's tails at once (one short query per org every ``POLL_SECONDS``, on a pooled connection
  held only for that query), gives each tail the entries its filters keep, and sends each
  tail's bytes without blocking, as the socket takes them;
- it sends a comment line to a tail that has had nothing for ``heartbeat`` seconds (proxies
  keep the connection, clients notice a dead one);
- a tail whose client has closed the connection is closed at once (its socket is readable
  with nothing to read); a tail whose client reads too slowly to keep up
  (``MAX_UNSENT_BYTES`` waiting) is cut, and its client resumes with ``Last-Event-ID``.

A hand-off needs the server's help: the worker class ``insights_audit.web.gunicorn_worker``
takes back its connection without closing it. Under another server (the Flask test client,
a plain gthread worker), ``HUB.enabled`` is false and a tail is served by its request thread.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from insights_audit.audit.chain_order import position_key
from insights_audit.metrics import OPEN_TAILS

log = logging.getLogger(__name__)

# How often the hub looks for new entries: an entry reaches its tails within this (plus the
# time its transaction takes to pass the feed's horizon).
POLL_SECONDS = 0.5
# A tail is cut when this much is waiting for its client.
MAX_UNSENT_BYTES = 1 << 20

Position = tuple[str, str]


@dataclass(frozen=True)
class Event:
    """One entry as a tail sends it: its place in the chain, the bytes of its event, and what
    a tail's filter looks at."""

    position: Position
    payload: bytes
    fields: Any


# The entries of an org after a position, oldest first, at most a batch, and whether more
# follow: what the hub reads for each org with open tails.
Fetch = Callable[[str, Position], tuple[Sequence[Event], bool]]


@dataclass(eq=False)
class Tail:
    """One open tail: the org it reads, how far it has read, and which entries it wants."""

    org: str
    position: Position
    wants: Callable[[Any], bool]
    fetch: Fetch
    heartbeat_seconds: float
    # When the tail ends (``time.monotonic()``); its client reconnects with Last-Event-ID.
    ends_at: float = float("inf")
    sock: socket.socket | None = None
    # Whether the response's body is sent in chunks (HTTP/1.1) or runs until the close.
    chunked: bool = True
    unsent: bytearray = field(default_factory=bytearray)
    framed: bytes = b""
    last_sent: float = field(default_factory=time.monotonic)

    def take(self, events: Iterable[Event]) -> int:
        """Queue the events after this tail's position that it wants; how many."""
        taken = 0
        mine = position_key(self.position)
        for event in events:
            if position_key(event.position) > mine and self.wants(event.fields):
                self.unsent += event.payload
                taken += 1
        return taken

    def frame(self) -> None:
        """Move what waits into the bytes to send, framed as one chunk when chunked."""
        if self.framed or not self.unsent:
            return
        body = bytes(self.unsent)
        self.unsent.clear()
        self.framed = b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body

    @property
    def waiting(self) -> int:
        return len(self.unsent) + len(self.framed)


def can_hand_off(client: Any) -> bool:
    """Whether the hub can take ``client`` over: a plain TCP or Unix socket (TLS needs its
    own state machine, so a TLS tail stays on its thread)."""
    return isinstance(client, socket.socket) and not isinstance(client, ssl.SSLSocket)


class Hub:
    """The process's tails and the thread that serves them."""

    def __init__(self) -> None:
        # Set by the worker class that can take a connection back without closing it.
        self.enabled = False
        self._lock = threading.Lock()
        self._arriving: list[Tail] = []
        self._tails: set[Tail] = set()
        self._handed_off: set[int] = set()
        self._count = 0
        self._thread: threading.Thread | None = None
        self._wake_read, self._wake_write = -1, -1
        self._selector: selectors.BaseSelector | None = None

    def open_tails(self) -> int:
        with self._lock:
            return self._count

    def reserve(self, limit: int) -> bool:
        """Count one more tail in this process, unless ``limit`` are open."""
        with self._lock:
            if self._count >= limit:
                return False
            self._count += 1
            OPEN_TAILS.set(self._count)
            return True

    def release(self) -> None:
        with self._lock:
            self._count -= 1
            OPEN_TAILS.set(self._count)

    def adopt(self, tail: Tail, client: socket.socket) -> None:
        """Take ``tail`` over, with its client's socket (already reserved)."""
        tail.sock = client
        with self._lock:
            self._handed_off.add(id(client))
            self._arriving.append(tail)
            self._start()
        self._wake()

    def taken(self, client: Any) -> bool:
        """Whether the request on ``client`` handed its connection to the hub (asked once, by
        the server, when the request's thread is done with it)."""
        with self._lock:
            if id(client) in self._handed_off:
                self._handed_off.discard(id(client))
                return True
            return False

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        # Started on first use, in the process that serves (after gunicorn's fork).
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="tail-hub", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe wakes the hub just as well
            os.write(self._wake_write, b"\0")

    def _run(self) -> None:
        next_poll = 0.0
        while True:
            try:
                timeout = max(0.0, next_poll - time.monotonic())
                self._serve_sockets(timeout)
                self._welcome()
                now = time.monotonic()
                if now >= next_poll:
                    self._poll()
                    next_poll = now + POLL_SECONDS
                self._keep_alive(now)
                self._send_all()
            except Exception:  # the hub must outlive any one failure
                log.exception("live tail hub pass failed")
                time.sleep(POLL_SECONDS)

    def _welcome(self) -> None:
        with self._lock:
            arriving, self._arriving = self._arriving, []
        for tail in arriving:
            assert tail.sock is not None and self._selector is not None
            tail.sock.setblocking(False)
            self._tails.add(tail)
            self._selector.register(tail.sock, selectors.EVENT_READ, tail)
            self._send(tail)

    def _serve_sockets(self, timeout: float) -> None:
        assert self._selector is not None
        for key, mask in self._selector.select(timeout):
            tail = key.data
            if tail is None:
                with contextlib.suppress(OSError):
                    os.read(self._wake_read, 4096)
                continue
            if mask & selectors.EVENT_READ and _client_left(tail.sock):
                self._close(tail, "the client went away")
                continue
            if mask & selectors.EVENT_WRITE:
                self._send(tail)

    def _poll(self) -> None:
        """Give every tail the entries of its org that arrived after its position."""
        by_org: dict[str, list[Tail]] = {}
        for tail in self._tails:
            by_org.setdefault(tail.org, []).append(tail)
        for org, tails in by_org.items():
            fetch = tails[0].fetch
            position = min((tail.position for tail in tails), key=position_key)
            more = True
            while more:
                try:
                    events, more = fetch(org, position)
                except Exception:
                    log.exception("live tail read failed org=%s", org)
                    break
                if not events:
                    break
                for tail in tails:
                    tail.take(events)
                    if position_key(events[-1].position) > position_key(tail.position):
                        tail.position = events[-1].position
                position = events[-1].position
                for tail in tails:
                    self._send(tail)

    def _keep_alive(self, now: float) -> None:
        for tail in list(self._tails):
            if now >= tail.ends_at:
                self._end(tail)
            elif not tail.waiting and now - tail.last_sent >= tail.heartbeat_seconds:
                tail.unsent += b": ping\n\n"

    def _end(self, tail: Tail) -> None:
        """End a tail that has run its time: what waits, the body's end, then the close."""
        assert tail.sock is not None
        tail.frame()
        ending = tail.framed + (b"0\r\n\r\n" if tail.chunked else b"")
        with contextlib.suppress(OSError):
            tail.sock.setblocking(True)
            tail.sock.settimeout(1)
            tail.sock.sendall(ending)
        self._close(tail, "it ran its time")

    def _send_all(self) -> None:
        for tail in list(self._tails):
            if tail.waiting:
                self._send(tail)

    def _send(self, tail: Tail) -> None:
        """Send what the socket takes now; wait for it to take more, or cut a tail whose
        client has fallen too far behind."""
        assert tail.sock is not None and self._selector is not None
        if tail not in self._tails:
            return
        if tail.waiting > MAX_UNSENT_BYTES:
            self._close(tail, "the client read too slowly", reset=True)
            return
        tail.frame()
        while tail.framed:
            try:
                sent = tail.sock.send(tail.framed)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(tail, "the client went away")
                return
            tail.framed = tail.framed[sent:]
            tail.last_sent = time.monotonic()
            if not tail.framed:
                tail.frame()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if tail.framed else 0)
        self._selector.modify(tail.sock, events, tail)

    def _close(self, tail: Tail, reason: str, *, reset: bool = False) -> None:
        assert tail.sock is not None and self._selector is not None
        self._tails.discard(tail)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(tail.sock)
        if reset:
            with contextlib.suppress(OSError):
                tail.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            tail.sock.close()
        tail.unsent.clear()
        tail.framed = b""
        self.release()
        log.info("live tail closed org=%s: %s", tail.org, reason)


def _client_left(client: socket.socket | None) -> bool:
    """Read what a readable tail socket holds: whether its client has closed it. A tail's
    client has nothing to say; anything it sends is dropped."""
    if client is None:
        return True
    try:
        return client.recv(4096) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as error:
        return error.errno != errno.EAGAIN


HUB = Hub()


class HandedOff(BrokenPipeError):
    """Raised by a tail's body once the hub has its socket: the server stops writing the
    response and, with the worker class that allows it, leaves the connection open."""

    def __init__(self) -> None:
        super().__init__(errno.EPIPE, "handed to the live tail hub")
