"""The request's unit of work: one per request, on the caller's org, opened on first use
(after authorization, because the org is the token's). Readers and writers use the same
object. When the view returns, a normal response commits it (or rolls it back if the
response is an error); a streamed response keeps it open until the server closes the
response, after its body has been sent or aborted, so a generator reads inside the same
transaction and under the same org.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from flask import Flask, Response, g
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from insights_audit.db.engine import ENGINE_KEY, engine
from insights_audit.db.replicas import ROUTING_KEY, NeedsPrimary, read_routing
from insights_audit.db.unit_of_work import UnitOfWork, reset_autocommit_on_checkin
from insights_audit.errors import database_unavailable_response
from insights_audit.web.auth import current_principal

WORK_KEY = "_insights_audit_work"
T = TypeVar("T")


def request_work(
    *, snapshot: bool = False, unbounded: bool = False, read: bool = False
) -> UnitOfWork:
    """The current request's unit of work, on the caller's org (authorization ran first).

    ``snapshot`` and ``unbounded`` choose the kind of transaction, and ``read`` lets a
    replica serve it (when replicas are configured and one has the caller's writes), which
    only the first use can do.
    """
    work: UnitOfWork | None = g.get(WORK_KEY)
    if work is None:
        principal = current_principal()
        work = UnitOfWork(
            engine(),
            principal.org,
            snapshot=snapshot,
            unbounded=unbounded,
            routing=read_routing(),
            caller=principal.token_id,
            read=read,
        )
        setattr(g, WORK_KEY, work)
    return work


def read(answer: Callable[[UnitOfWork], T], *, snapshot: bool = False) -> T:
    """``answer`` of the request's reading work: on a replica when one may serve it, again on
    the primary if it found there that it must write (``NeedsPrimary``) or the replica failed
    it (lost connection)."""
    work = request_work(read=True, snapshot=snapshot)
    try:
        return answer(work)
    except NeedsPrimary:
        work.move_to_primary()
    except sa_exc.OperationalError:
        if not work.on_replica:
            raise
        work.move_to_primary(lost=True)
    return answer(work)


def streamed(work: UnitOfWork, body: Callable[[Connection], Iterator[bytes]]) -> Iterator[bytes]:
    """``body``'s chunks read inside ``work``, which begins when the first chunk is asked for
    and ends after the last one (or when the server closes the response, if sooner)."""
    try:
        yield from body(work.connection)
    finally:
        work.close()


def init_request_work(app: Flask) -> None:
    """Commit each request's work before its response leaves; close it at the end."""
    reset_autocommit_on_checkin(app.extensions[ENGINE_KEY])
    routing = app.extensions.get(ROUTING_KEY)
    for replica in routing.replicas if routing is not None else ():
        reset_autocommit_on_checkin(replica.engine)

    @app.after_request
    def _finish(response: Response) -> Response:
        work: UnitOfWork | None = g.get(WORK_KEY)
        if work is None:
            return response
        if response.is_streamed:
            # The body still reads: the work ends when the server closes the response, after
            # the last byte or on an abort (Flask tears the request down before that).
            g.pop(WORK_KEY)
            response.call_on_close(work.close)
            return response
        try:
            if response.status_code < 400:
                work.commit()
        except (sa_exc.OperationalError, sa_exc.TimeoutError):
            return database_unavailable_response()
        finally:
            work.close()
        return response

    @app.teardown_request
    def _close(_: BaseException | None) -> None:
        work: UnitOfWork | None = g.pop(WORK_KEY, None)
        if work is not None:
            work.close()
