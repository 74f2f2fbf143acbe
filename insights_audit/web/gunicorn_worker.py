"""gunicorn's threaded worker, able to hand a connection over to the live tail hub.

``gthread`` closes a connection when its request is done (or keeps it for the next request).
A live tail's request ends once the hub has taken its socket (``web.tails``): this worker then
forgets the connection instead, so the thread serves other requests while the hub keeps the
tail open. Everything else is gthread's, unchanged.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from insights_audit.web.tails import HUB

_HANDED_OFF = object()


class TailingThreadWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        HUB.enabled = True
        super().init_process()

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        if HUB.taken(conn.sock):
            return _HANDED_OFF
        return result

    def finish_request(self, conn: Any, fs: Future[Any]) -> None:
        if not fs.cancelled() and fs.exception() is None and fs.result() is _HANDED_OFF:
            # The hub owns the socket now; it no longer counts against worker_connections.
            self.nr_conns -= 1
            return
        super().finish_request(conn, fs)
