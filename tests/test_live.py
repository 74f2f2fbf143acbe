"""``GET {base}/stream``: the live tail, on the test client (served by its own thread) and
through gunicorn (handed to the worker's hub)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.request
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from insights_audit.errors import VALIDATION_FAILED
from tests.conftest import (
    BASE,
    TokenFactory,
    bearer,
    entry_held_open,
    new_id,
    record_view,
    running_gunicorn,
)

AUDITOR = ("Auditor",)


def parse_events(raw: bytes) -> tuple[list[dict[str, str]], bytes]:
    """The complete events in ``raw`` (comments as ``{"comment": ...}``) and the rest."""
    events = []
    *blocks, rest = raw.split(b"\n\n")
    for block in blocks:
        event: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(":")
            event[name or "comment"] = value.removeprefix(" ")
        events.append(event)
    return events, rest


def entries_from(chunks: Iterator[bytes], count: int, timeout: float = 10) -> list[dict[str, str]]:
    """Read events from ``chunks`` until ``count`` entries have come (comments skipped)."""
    deadline = time.monotonic() + timeout
    got: list[dict[str, str]] = []
    buffer = b""
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} entries arrived"
        buffer += next(chunks)
        events, buffer = parse_events(buffer)
        got += [event for event in events if event.get("event") == "entry"]
    return got


@contextmanager
def tail(client: FlaskClient, token: str, query: str = "", **headers: str) -> Iterator[Any]:
    response = client.get(
        f"{BASE}/stream{query}", headers={**bearer(token), **headers}, buffered=False
    )
    try:
        yield response
    finally:
        response.close()


def ids(events: Iterable[dict[str, str]]) -> list[str]:
    return [json.loads(event["data"])["id"] for event in events]


def test_a_tail_sends_new_entries_as_events_with_feed_positions(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    auditor = make_token(roles=AUDITOR, scopes=("api-readonly",))
    viewer = make_token()
    before = record_view(client, viewer, new_id())["auditLogId"]
    with tail(client, auditor) as response:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        written = [record_view(client, viewer, new_id())["auditLogId"] for _ in range(3)]
        events = entries_from(iter(response.response), 3)
    assert before not in ids(events)
    assert ids(events) == written
    entry = json.loads(events[0]["data"])
    assert entry["type"] == "dashboard" and entry["action"] == "view"
    # Each id is a feed position: the feed continues from it with the next entries.
    page = client.get(f"{BASE}/feed?after={events[0]['id']}", headers=bearer(auditor)).json
    assert [item["id"] for item in page["data"]] == written[1:]


def test_last_event_id_resumes_after_that_entry_exactly_once(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    auditor = make_token(roles=AUDITOR)
    viewer = make_token()
    with tail(client, auditor) as response:
        first = record_view(client, viewer, new_id())["auditLogId"]
        (event,) = entries_from(iter(response.response), 1)
    assert ids([event]) == [first]
    # Disconnected: three more arrive; the reconnect gets exactly those, then new ones.
    missed = [record_view(client, viewer, new_id())["auditLogId"] for _ in range(3)]
    with tail(client, auditor, **{"Last-Event-ID": event["id"]}) as response:
        chunks = iter(response.response)
        assert ids(entries_from(chunks, 3)) == missed
        after = record_view(client, viewer, new_id())["auditLogId"]
        assert ids(entries_from(chunks, 1)) == [after]
    # ``after`` in the query does the same.
    with tail(client, auditor, f"?after={event['id']}") as response:
        assert ids(entries_from(iter(response.response), 4)) == [*missed, after]


def test_a_tail_keeps_only_what_its_filters_keep(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    auditor = make_token(roles=AUDITOR)
    writer = make_token(roles=("Administrator",))
    target = new_id()
    with tail(client, auditor, f"?type=kpi&action=settings.*&targetId={target}") as response:
        record_view(client, writer, new_id())
        for type_, action, target_id in [
            ("kpi", "settings.update", new_id()),
            ("mapping", "settings.update", target),
            ("kpi", "delete", target),
            ("kpi", "settings.update", target),
        ]:
            body = {"type": type_, "action": action, "targetId": target_id, "details": {}}
            response_ = client.post(BASE, json=body, headers=bearer(writer))
            assert response_.status_code == 201, response_.json
        (event,) = entries_from(iter(response.response), 1)
    entry = json.loads(event["data"])
    assert (entry["type"], entry["action"], entry["targetId"]) == ("kpi", "settings.update", target)


def test_a_late_commit_reaches_the_tail_after_it_commits_never_skipped(
    client: FlaskClient, database_url: str, make_token: TokenFactory, org: str
) -> None:
    auditor = make_token(roles=AUDITOR)
    viewer = make_token()
    with tail(client, auditor) as response:
        chunks = iter(response.response)
        with entry_held_open(database_url, org) as held:
            later = record_view(client, viewer, new_id())["auditLogId"]  # commits first
            time.sleep(1.2)  # two polls: nothing may be sent while the older one is open
        # Committed: both arrive, the one that began first first.
        assert ids(entries_from(chunks, 2)) == [held, later]


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?after=forged", {}),
        ("", {"Last-Event-ID": "forged"}),
        ("?type=view", {}),
        ("?targetId=not-a-uuid", {}),
        ("?limit=5", {}),
    ],
)
def test_bad_tail_requests_are_400(
    client: FlaskClient, make_token: TokenFactory, query: str, headers: dict[str, str]
) -> None:
    response = client.get(
        f"{BASE}/stream{query}", headers={**bearer(make_token(roles=AUDITOR)), **headers}
    )
    assert response.status_code == 400
    assert response.json["message"] == VALIDATION_FAILED


def test_the_tail_is_for_auditors_and_administrators(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    response = client.get(f"{BASE}/stream", headers=bearer(make_token()))
    assert response.status_code == 403
    assert client.get(f"{BASE}/stream").status_code == 401


def test_service_written_types_are_filters(client: FlaskClient, make_token: TokenFactory) -> None:
    auditor = make_token(roles=AUDITOR)
    search = client.get(f"{BASE}?type=stream&type=token", headers=bearer(auditor))
    assert search.status_code == 200 and search.json["data"] == []
    body = {"type": "stream", "action": "create", "targetId": new_id(), "details": {}}
    posted = client.post(BASE, json=body, headers=bearer(make_token(roles=("Administrator",))))
    assert posted.status_code == 400


# Through gunicorn: tails handed to each worker's hub.


def sse_connect(url: str, token: str, query: str = "", **headers: str) -> socket.socket:
    """An open tail on a raw socket, its head read."""
    host, port = url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    connection.sendall(
        f"GET {BASE}/stream{query} HTTP/1.1\r\nHost: localhost\r\n"
        f"Authorization: Bearer {token}\r\n{extra}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += connection.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Transfer-Encoding: chunked" in head
    return connection


def chunks_of(connection: socket.socket) -> Generator[bytes, None, None]:
    """The decoded chunks of a chunked body."""
    with connection.makefile("rb") as reader:
        while True:
            size = int(reader.readline().strip(), 16)
            data = reader.read(size)
            reader.readline()
            if size == 0:
                return
            yield data


def post_views(url: str, token: str, count: int) -> list[str]:
    written = []
    for _ in range(count):
        request = urllib.request.Request(
            f"{url}{BASE}/dashboard/{new_id()}/view", method="POST", headers=bearer(token)
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            written.append(json.load(response)["data"]["auditLogId"])
    return written


def get(url: str, path: str, token: str) -> None:
    request = urllib.request.Request(f"{url}{path}", headers=bearer(token))
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        response.read()


def open_fds(pids: Iterable[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def served_connections(url: str) -> int:
    """Connections on the service's port that its side has not closed (ESTABLISHED or
    CLOSE_WAIT, as the server sees them)."""
    port = f":{int(url.rsplit(':', 1)[1]):04X}"
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    return sum(1 for row in rows if row[1].endswith(port) and row[3] in ("01", "08"))


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def gunicorn_master(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{int(port):04X}") and fields[3] == "0A":
            inode = fields[9]
            break
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if f"socket:[{inode}]" in links and "gunicorn" in Path(f"/proc/{pid}/cmdline").read_text():
            return int(pid)
    raise AssertionError("no gunicorn master")


def test_200_tails_through_gunicorn_leave_the_api_answering(
    app_role_url: str, make_token: TokenFactory
) -> None:
    auditor = make_token(roles=AUDITOR)
    viewer = make_token()
    with running_gunicorn(app_role_url, STREAM_HEARTBEAT_SECONDS="1") as url:
        master = gunicorn_master(url)
        workers = worker_pids(master)
        # Warm up what stays open anyway: pooled connections, each worker's hub.
        for _ in range(4):
            sse_connect(url, auditor).close()
            get(url, f"{BASE}/dashboard/recently-viewed", viewer)
        time.sleep(1)
        fds_before = open_fds(workers)
        tails = [sse_connect(url, auditor) for _ in range(200)]
        try:
            # Every thread of every worker is free: 40 reads answer (16 threads in all, so
            # tails held by threads would leave none). Their latency: make bench-realtime.
            for _ in range(40):
                get(url, f"{BASE}/dashboard/recently-viewed", viewer)
            written = post_views(url, viewer, 3)
            for connection in (tails[0], tails[77], tails[199]):
                assert ids(entries_from(chunks_of(connection), 3)) == written
            # With nothing to send, heartbeats keep coming.
            chunks = chunks_of(tails[5])
            deadline = time.monotonic() + 5
            seen = b""
            while b": ping" not in seen and time.monotonic() < deadline:
                seen += next(chunks)
            assert b": ping" in seen
            chunks.close()
        finally:
            for connection in tails:
                connection.close()
        # Closed by their clients: the hub closes every socket (none left established or
        # half-closed on the service's port), and the workers hold no more files than before
        # but for the pool's connections to PostgreSQL, which grew meanwhile.
        deadline = time.monotonic() + 5
        while served_connections(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served_connections(url) == 0
        assert open_fds(workers) <= fds_before + 2 * 5


def test_a_reconnect_through_gunicorn_loses_nothing(
    app_role_url: str, make_token: TokenFactory
) -> None:
    auditor = make_token(roles=AUDITOR)
    viewer = make_token()
    with running_gunicorn(app_role_url) as url:
        connection = sse_connect(url, auditor)
        first = post_views(url, viewer, 1)
        (event,) = entries_from(chunks_of(connection), 1)
        connection.close()
        assert ids([event]) == first
        missed = post_views(url, viewer, 5)
        connection = sse_connect(url, auditor, **{"Last-Event-ID": event["id"]})
        chunks = chunks_of(connection)
        assert ids(entries_from(chunks, 5)) == missed
        more = post_views(url, viewer, 2)
        assert ids(entries_from(chunks, 2)) == more
        connection.close()
        # The reads the workers serve meanwhile are unaffected.
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
