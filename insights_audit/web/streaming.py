"""Bounds on streamed responses: a deadline, a reader that keeps reading, database work that
stops when its client goes away, and a cap on how many run at once.

A streamed response holds a worker thread (an export also holds a pooled connection in a
snapshot transaction) for as long as it runs, so each one is watched. One watcher thread per
worker process looks at every open stream twice a second and ends it when:

- its deadline has passed (``EXPORT_MAX_SECONDS``);
- the server has been trying to send it a chunk for ``EXPORT_STALL_SECONDS`` (the client
  stopped reading): the client socket is shut down, so the blocked send fails at once;
- its client has closed the connection while the database is still working on the next
  chunk: that work is cancelled (without a send, the server would not notice until the
  query ended).

A stream ended this way, or by a database error, logs one line (request id, org, reason) and
aborts the transfer as a broken connection: the client sees a cut body, never a clean end.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flask import g, has_request_context, request

log = logging.getLogger(__name__)

WATCH_INTERVAL_SECONDS = 0.5


@dataclass(eq=False)
class Stream:
    """One open streamed response, as the watcher sees it."""

    kind: str
    org: str
    max_seconds: float
    stall_seconds: float
    # The client's socket, where the server exposes it (gunicorn does).
    client: socket.socket | None = None
    # Cancels the database statement the stream is waiting for, if any.
    cancel: Callable[[], None] = lambda: None
    # Gives back what the stream holds (its place in the worker), once it has ended.
    release: Callable[[], None] = lambda: None
    request_id: str | None = None
    started: float = field(default_factory=time.monotonic)
    # Whether the server is sending a chunk (the stream waits for the client) and since when
    # the stream last made progress.
    sending: bool = False
    progress_at: float = field(default_factory=time.monotonic)
    # Why the watcher ended the stream, once it has.
    ended: str | None = None

    def check(self, now: float) -> None:
        """End the stream if it has run too long, stalled, or lost its client."""
        if self.ended is not None:
            return
        if now - self.started > self.max_seconds:
            self._end(f"ran longer than {self.max_seconds:g} s")
        elif self.sending and now - self.progress_at > self.stall_seconds:
            self._end(f"the client read nothing for {self.stall_seconds:g} s")
        elif not self.sending and self.client is not None and _closed(self.client):
            self._end("the client went away")

    def _end(self, reason: str) -> None:
        self.ended = reason
        if self.sending:
            _shut_down(self.client)
        else:
            self.cancel()


def _closed(client: socket.socket) -> bool:
    """Whether the peer has closed ``client`` (an orderly close or a reset)."""
    try:
        readable, _, _ = select.select([client], [], [], 0)
        if not readable:
            return False
        return client.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except ValueError:  # TLS sockets take no flags: they cannot be peeked at
        return client.fileno() < 0
    except OSError:
        return True


def _shut_down(client: socket.socket | None) -> None:
    if client is None:
        return
    with contextlib.suppress(OSError):  # already gone
        # Linger 0: when the server closes the socket the client gets a reset at once, not
        # the megabytes still queued for it followed by a clean-looking end.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.shutdown(socket.SHUT_RDWR)


class Watcher:
    """The process's watcher thread and the streams it watches."""

    def __init__(self) -> None:
        self._streams: set[Stream] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._reserved = 0

    def reserve(self, limit: int) -> Callable[[], None] | None:
        """One of the process's ``limit`` places for a streamed response, if one is free, as
        the function that gives it back (once, however often it is called): streams never
        hold every thread of a worker."""
        with self._lock:
            if self._reserved >= limit:
                return None
            self._reserved += 1
        released = threading.Event()

        def release() -> None:
            with self._lock:
                if not released.is_set():
                    released.set()
                    self._reserved -= 1

        return release

    def watch(self, stream: Stream) -> None:
        with self._lock:
            self._streams.add(stream)
            if self._thread is None or not self._thread.is_alive():
                # Started on first use, in the process that serves (after gunicorn's fork).
                self._thread = threading.Thread(target=self._run, name="stream-watcher")
                self._thread.daemon = True
                self._thread.start()

    def forget(self, stream: Stream) -> None:
        with self._lock:
            self._streams.discard(stream)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL_SECONDS)
            with self._lock:
                streams = list(self._streams)
            now = time.monotonic()
            for stream in streams:
                try:
                    stream.check(now)
                except Exception:  # one broken stream must not stop the watching of others
                    log.exception("stream check failed")


WATCHER = Watcher()


def new_stream(
    kind: str,
    org: str,
    *,
    max_seconds: float,
    stall_seconds: float,
    cancel: Callable[[], None] = lambda: None,
    release: Callable[[], None] = lambda: None,
) -> Stream:
    """A stream of the current request, not yet watched; ``release`` runs when it ends."""
    client = request.environ.get("gunicorn.socket") if has_request_context() else None
    return Stream(
        kind,
        org,
        max_seconds,
        stall_seconds,
        client=client if isinstance(client, socket.socket) else None,
        cancel=cancel,
        release=release,
        request_id=g.get("request_id") if has_request_context() else None,
    )


def watched(stream: Stream, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` sent under the watcher: headers leave at once, and a stream the watcher
    ends, or whose chunks fail, is aborted with one log line."""
    WATCHER.watch(stream)
    try:
        stream.sending = True
        yield b""  # the server sends the headers now, before any database work
        stream.sending = False
        while True:
            if stream.ended is not None:
                _abort(stream, stream.ended)
            stream.progress_at = time.monotonic()
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            except Exception as error:
                _abort(stream, stream.ended or f"{type(error).__name__} while reading")
            stream.sending = True
            yield chunk
            stream.sending = False
    except GeneratorExit:
        # The server closed the response before its end: the send failed.
        _log_cut(stream, stream.ended or "the client went away")
        raise
    finally:
        WATCHER.forget(stream)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
        stream.release()


def _log_cut(stream: Stream, reason: str) -> None:
    log.warning(
        "%s cut short request_id=%s org=%s after=%.1fs: %s",
        stream.kind,
        stream.request_id,
        stream.org,
        time.monotonic() - stream.started,
        reason,
    )


def _abort(stream: Stream, reason: str) -> None:
    """Log why, then fail as a broken connection: servers abort the transfer and log it
    quietly (no traceback for a client-side cut)."""
    _log_cut(stream, reason)
    stream.ended = stream.ended or reason
    raise BrokenPipeError(errno.EPIPE, f"{stream.kind} aborted: {reason}")
