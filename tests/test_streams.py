"""Push streams: the API, delivery to local receivers, and the rules on destinations."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY

from insights_audit import create_app, worker
from insights_audit.config import Settings
from insights_audit.db.engine import engine
from insights_audit.errors import VALIDATION_FAILED
from insights_audit.streams import delivery, destinations
from tests.conftest import (
    BASE,
    TEST_SIGNING_KEY,
    TokenFactory,
    bearer,
    entry_held_open,
    new_id,
    record_view,
    run_sql,
    running_gunicorn,
)

ADMIN = ("Administrator",)


@dataclasses.dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """A local HTTP receiver answering each POST by the next step of its script: a status
    (with headers), or ``("sleep", seconds)`` before a 200; 200 once the script is done."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    step = receiver.script.pop(0) if receiver.script else 200
                status, headers = (step, {}) if isinstance(step, int) else (200, {})
                pause = 0.0
                if isinstance(step, tuple) and step[0] == "sleep":
                    pause, status = step[1], 0  # answered after the client gave up
                elif isinstance(step, tuple):
                    status, headers = step
                with receiver.lock:
                    receiver.received.append(Received(dict(self.headers), body, status))
                time.sleep(pause)
                self.send_response(status or 200)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[Received]:
        with self.lock:
            return [item for item in self.received if item.status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made: list[Receiver] = []

    def make(*script: Any) -> Receiver:
        made.append(Receiver(*script))
        return made[-1]

    yield make  # type: ignore[misc]
    for item in made:
        item.close()


@pytest.fixture(scope="module")
def open_app(database_url: str) -> Flask:
    """The app with http and private destinations allowed: receivers on this host."""
    return create_app(
        Settings(
            database_url=database_url,
            token_cache_seconds=0,
            audit_signing_key=TEST_SIGNING_KEY,
            audit_seal_interval_seconds=0,
            stream_allow_http=True,
            stream_allow_private=True,
        )
    )


@pytest.fixture
def open_client(open_app: Flask) -> FlaskClient:
    return open_app.test_client()


def create_stream(client: FlaskClient, admin: str, **body: Any) -> dict[str, Any]:
    """A new stream; from ``now`` unless told, so its first entry is its own creation."""
    body = {"name": "siem", "kind": "webhook", **body}
    response = client.post(f"{BASE}/streams", json=body, headers=bearer(admin))
    assert response.status_code == 201, response.json
    assert response.json["message"] == "Successfully created stream"
    data: dict[str, Any] = response.json["data"]
    return data


def deliver(app: Flask, stream: dict[str, Any], org: str, **policy: Any) -> int:
    with app.app_context():
        bind = engine()
    chosen = dataclasses.replace(worker.delivery_policy(app), **policy)
    return delivery.deliver_stream(bind, chosen, org, uuid.UUID(stream["id"]))


def due_now(app: Flask, stream: dict[str, Any]) -> float:
    """Seconds until the stream's next try was due; make it due now."""
    ((wait,),) = run_sql(
        app,
        "SELECT extract(epoch FROM next_attempt_at - now()) FROM push_streams WHERE id = :id",
        id=stream["id"],
    )
    run_sql(app, "UPDATE push_streams SET next_attempt_at = now() WHERE id = :id", id=stream["id"])
    return float(wait)


def chain(app: Flask, org: str) -> list[str]:
    rows = run_sql(app, "SELECT id FROM audit_entries WHERE org = :org ORDER BY txid, id", org=org)
    return [entry_id for (entry_id,) in rows]


def openssl_signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 of ``"<t>." + body`` by an implementation other than the service's."""
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", secret],
        input=f"{timestamp}.".encode() + body,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return out.strip().rsplit(" ", 1)[-1]


def check_signature(item: Received, secret: str) -> None:
    parts = dict(part.split("=", 1) for part in item.headers["Insights-Audit-Signature"].split(","))
    assert parts["v1"] == openssl_signature(secret, parts["t"], item.body)
    assert abs(int(parts["t"]) - time.time()) < 60


def test_every_entry_arrives_in_order_through_failures_each_delivery_signed(
    open_app: Flask,
    open_client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    receiver: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(delivery, "TIMEOUT_SECONDS", 1)
    admin = make_token(roles=ADMIN)
    for _ in range(7):
        record_view(open_client, admin, new_id())
    hook = receiver(500, (429, {"Retry-After": "120"}), ("sleep", 2), (302, {"Location": "/x"}))
    stream = create_stream(open_client, admin, url=hook.url, startAt="beginning")
    secret = stream["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.urlsafe_b64decode(secret[6:] + "==")) >= 32
    waits = []
    for _ in range(12):
        deliver(open_app, stream, org, batch_size=3)
        waits.append(due_now(open_app, stream))
        if len(hook.accepted()) == 3:
            break
    # 1 s after the first failure; the receiver's Retry-After after the 429.
    assert 0.5 < waits[0] <= 1.5 and 115 < waits[1] <= 120
    # The views, then the stream's own creation.
    created = chain(open_app, org)
    assert len(created) == 8
    got = [json.loads(item.body) for item in hook.accepted()]
    assert [entry["id"] for body in got for entry in body["entries"]] == created
    assert all(body["streamId"] == stream["id"] for body in got)
    # The first batch was tried five times: the same entries each time, new delivery ids.
    assert [json.loads(item.body)["entries"] for item in hook.received[:5]] == [
        got[0]["entries"]
    ] * 5
    delivery_ids = [item.headers["Insights-Audit-Delivery"] for item in hook.received]
    assert len(set(delivery_ids)) == len(delivery_ids) == 7
    failures = [record.getMessage() for record in caplog.records if "failed" in record.getMessage()]
    assert [failure.split("s: ", 1)[1] for failure in failures] == [
        "HTTP 500",
        "HTTP 429",
        "no answer within 1 s",
        "HTTP 302 (redirects are not followed)",
    ]
    for item in hook.received:
        check_signature(item, secret)
        assert item.headers["Content-Type"] == "application/json"
    shown = open_client.get(f"{BASE}/streams/{stream['id']}", headers=bearer(admin)).json["data"]
    assert shown["delivered"] == 8 and shown["consecutiveFailures"] == 0
    assert shown["lastError"] is None and shown["lagSeconds"] == 0
    assert shown["position"] == got[-1]["position"]
    assert "secret" not in shown
    # The position a batch carries continues the feed after it.
    page = open_client.get(f"{BASE}/feed?after={got[0]['position']}", headers=bearer(admin)).json
    assert [entry["id"] for entry in page["data"]] == created[3:]


def test_failures_are_recorded_and_a_redirect_is_not_followed(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    target = receiver()
    hook = receiver((307, {"Location": target.url}))
    stream = create_stream(open_client, admin, url=hook.url, startAt="beginning")
    record_view(open_client, admin, new_id())
    assert deliver(open_app, stream, org) == 0
    shown = open_client.get(f"{BASE}/streams/{stream['id']}", headers=bearer(admin)).json["data"]
    assert shown["consecutiveFailures"] == 1 and shown["delivered"] == 0
    assert shown["lastError"] == "HTTP 307 (redirects are not followed)"
    assert shown["lagSeconds"] > 0
    assert target.received == []


def test_splunk_hec_bodies_are_one_event_object_per_entry(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    hec = receiver()
    stream = create_stream(
        open_client, admin, kind="splunk-hec", url=hec.url, token="hec-secret-token"
    )
    assert stream["secret"] is None
    written = [record_view(open_client, admin, new_id())["auditLogId"] for _ in range(3)]
    assert deliver(open_app, stream, org) == 4
    (item,) = hec.received
    assert item.headers["Authorization"] == "Splunk hec-secret-token"
    decoder = json.JSONDecoder()
    text, events, at = item.body.decode(), [], 0
    while at < len(text):
        event, at = decoder.raw_decode(text, at)
        events.append(event)
    assert [event["event"]["id"] for event in events] == chain(open_app, org)[-4:]
    assert [event["event"]["id"] for event in events][1:] == written
    assert events[0]["event"]["type"] == "stream" and events[0]["event"]["action"] == "create"
    for event in events:
        assert event["sourcetype"] == "insights:audit" and event["source"] == "insights-audit"
        assert isinstance(event["time"], float)
        assert abs(event["time"] - time.time()) < 60


def test_a_late_commit_is_delivered_after_it_commits_never_skipped(
    open_app: Flask,
    open_client: FlaskClient,
    database_url: str,
    make_token: TokenFactory,
    org: str,
    receiver: Any,
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver()
    stream = create_stream(open_client, admin, url=hook.url)
    assert deliver(open_app, stream, org) == 1  # its creation
    with entry_held_open(database_url, org):
        record_view(open_client, admin, new_id())  # commits first
        assert deliver(open_app, stream, org) == 0
    assert deliver(open_app, stream, org) == 2
    body: dict[str, Any] = json.loads(hook.received[1].body)
    ids = [entry["id"] for entry in body["entries"]]
    assert ids == [entry for entry in chain(open_app, org) if entry in ids]
    assert body["entries"][0]["action"] == "slow"


def test_filters_choose_what_a_stream_delivers(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver()
    stream = create_stream(
        open_client, admin, url=hook.url, filters={"type": ["kpi"], "action": ["settings.*"]}
    )
    record_view(open_client, admin, new_id())
    for action in ("settings.update", "delete", "settings.reset"):
        body: dict[str, Any] = {"type": "kpi", "action": action, "targetId": new_id()}
        body["details"] = {}
        assert open_client.post(BASE, json=body, headers=bearer(admin)).status_code == 201
    assert deliver(open_app, stream, org) == 2
    (item,) = hook.received
    assert [entry["action"] for entry in json.loads(item.body)["entries"]] == [
        "settings.update",
        "settings.reset",
    ]


def test_one_deliverer_per_stream(
    open_app: Flask,
    open_client: FlaskClient,
    database_url: str,
    make_token: TokenFactory,
    org: str,
    receiver: Any,
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver()
    stream = create_stream(open_client, admin, url=hook.url)
    record_view(open_client, admin, new_id())
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute(
            "SELECT pg_advisory_lock(%s, hashtext(%s))", (delivery.STREAM_LOCK_CLASS, stream["id"])
        )
        assert deliver(open_app, stream, org) == 0
        assert hook.received == []
    assert deliver(open_app, stream, org) == 2  # its creation and the view


def test_a_stream_failing_for_too_long_is_suspended_until_resumed(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver(500)
    stream = create_stream(open_client, admin, url=hook.url)
    record_view(open_client, admin, new_id())
    run_sql(
        open_app,
        "UPDATE push_streams SET failing_since = now() - interval '25 hours',"
        " consecutive_failures = 40 WHERE id = :id",
        id=stream["id"],
    )
    deliver(open_app, stream, org)
    url = f"{BASE}/streams/{stream['id']}"
    shown = open_client.get(url, headers=bearer(admin)).json["data"]
    assert shown["status"] == "suspended" and shown["consecutiveFailures"] == 41
    trail = open_client.get(f"{BASE}?type=stream&targetId={stream['id']}", headers=bearer(admin))
    suspended = trail.json["data"][0]
    assert suspended["action"] == "suspend" and suspended["userId"] == "insights-audit"
    due_now(open_app, stream)
    assert deliver(open_app, stream, org) == 0  # suspended: nothing is sent
    response = open_client.patch(url, json={"status": "active"}, headers=bearer(admin))
    assert response.status_code == 200
    assert response.json["data"]["status"] == "active"
    assert response.json["data"]["consecutiveFailures"] == 0
    assert deliver(open_app, stream, org) == 4  # creation, view, suspension, resumption
    sent = [entry["action"] for entry in json.loads(hook.received[-1].body)["entries"]]
    assert sent == ["create", "view", "suspend", "resume"]


def test_every_change_to_a_stream_is_audited_and_secrets_never_show(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN, user="admin-7")
    hook = receiver()
    stream = create_stream(open_client, admin, url=hook.url)
    url = f"{BASE}/streams/{stream['id']}"
    changes = [{"name": "renamed"}, {"status": "paused"}, {"status": "active"}]
    for change in changes:
        response = open_client.patch(url, json=change, headers=bearer(admin))
        assert response.status_code == 200, response.json
        assert response.json["message"] == "Successfully updated stream"
    rotated = open_client.post(f"{url}/rotate-secret", headers=bearer(admin))
    assert rotated.status_code == 200
    new_secret = rotated.json["data"]["secret"]
    assert new_secret.startswith("whsec_") and new_secret != stream["secret"]
    listed = open_client.get(f"{BASE}/streams", headers=bearer(admin)).json["data"]
    assert [item["name"] for item in listed] == ["renamed"]
    # The next delivery is signed with the new secret.
    record_view(open_client, admin, new_id())
    assert deliver(open_app, stream, org) == 6  # its five changes so far and the view
    check_signature(hook.received[0], new_secret)
    assert open_client.delete(url, headers=bearer(admin)).status_code == 204
    assert open_client.get(url, headers=bearer(admin)).status_code == 404
    trail = open_client.get(f"{BASE}?type=stream&targetId={stream['id']}", headers=bearer(admin))
    entries = trail.json["data"]
    assert [entry["action"] for entry in entries] == [
        "delete",
        "rotate-secret",
        "resume",
        "pause",
        "update",
        "create",
    ]
    assert {entry["userId"] for entry in entries} == {"admin-7"}
    assert entries[4]["details"]["changed"] == ["name"]
    assert entries[5]["details"]["url"] == hook.url
    everything = json.dumps(entries) + json.dumps(listed)
    assert stream["secret"] not in everything and new_secret not in everything


def test_secrets_are_encrypted_at_rest(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver()
    stream = create_stream(open_client, admin, url=hook.url)
    hec = create_stream(open_client, admin, kind="splunk-hec", url=hook.url, token="tok-123456")
    rows = run_sql(
        open_app,
        "SELECT secret FROM push_streams WHERE id IN (:a, :b)",
        a=stream["id"],
        b=hec["id"],
    )
    stored = b"".join(bytes(secret) for (secret,) in rows)
    assert stream["secret"].encode() not in stored and b"tok-123456" not in stored
    assert stream["secret"][6:].encode() not in stored
    # A token change is audited without the token.
    url = f"{BASE}/streams/{hec['id']}"
    response = open_client.patch(url, json={"token": "tok-654321"}, headers=bearer(admin))
    assert response.status_code == 200
    trail = open_client.get(f"{BASE}?type=stream&targetId={hec['id']}", headers=bearer(admin))
    assert trail.json["data"][0]["details"]["changed"] == ["token"]
    assert "tok-654321" not in trail.get_data(as_text=True)


@pytest.mark.parametrize(
    ("roles", "scopes", "method", "status"),
    [
        (("Users",), ("api",), "get", 403),
        (("Auditor",), ("api",), "get", 403),
        (("Power User",), ("api",), "post", 403),
        (("Administrator",), ("api-readonly",), "get", 200),
        (("Administrator",), ("api-readonly",), "post", 403),
        (("Opsera Administrator",), ("api",), "get", 200),
    ],
)
def test_streams_are_for_org_administrators(
    client: FlaskClient,
    make_token: TokenFactory,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    method: str,
    status: int,
) -> None:
    token = make_token(roles=roles, scopes=scopes)
    body = {"name": "x", "kind": "webhook", "url": "https://93.184.215.14/"}
    response = client.open(
        f"{BASE}/streams",
        method=method.upper(),
        json=body if method == "post" else None,
        headers=bearer(token),
    )
    assert response.status_code == status, response.json


def test_another_orgs_stream_is_a_404(
    open_client: FlaskClient, make_token: TokenFactory, receiver: Any
) -> None:
    hook = receiver()
    stream = create_stream(open_client, make_token(roles=ADMIN), url=hook.url)
    other = make_token(roles=ADMIN, token_org=f"org-{uuid.uuid4().hex[:10]}")
    url = f"{BASE}/streams/{stream['id']}"
    assert open_client.get(url, headers=bearer(other)).status_code == 404
    assert open_client.delete(url, headers=bearer(other)).status_code == 404
    assert open_client.get(f"{BASE}/streams", headers=bearer(other)).json["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "webhook", "url": "https://93.184.215.14/"}, "name"),
        ({"name": "x", "kind": "email", "url": "https://93.184.215.14/"}, "kind"),
        ({"name": "x", "kind": "webhook"}, "url"),
        ({"name": "x", "kind": "webhook", "url": "https://93.184.215.14/", "token": "t"}, "token"),
        ({"name": "x", "kind": "splunk-hec", "url": "https://93.184.215.14/"}, "token"),
        ({"name": "x", "kind": "webhook", "url": "https://93.184.215.14/", "x": 1}, "x"),
        (
            {"name": "x", "kind": "webhook", "url": "https://93.184.215.14/", "startAt": "later"},
            "startAt",
        ),
        (
            {
                "name": "x",
                "kind": "webhook",
                "url": "https://93.184.215.14/",
                "filters": {"type": ["y"]},
            },
            "filters",
        ),
        ({"name": "x" * 201, "kind": "webhook", "url": "https://93.184.215.14/"}, "name"),
    ],
)
def test_bad_streams_are_400(
    client: FlaskClient, make_token: TokenFactory, body: dict[str, Any], field: str
) -> None:
    response = client.post(f"{BASE}/streams", json=body, headers=bearer(make_token(roles=ADMIN)))
    assert response.status_code == 400, response.json
    assert response.json["message"] == VALIDATION_FAILED
    assert field in response.json["errors"]["json"]


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hook",
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.5.4/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",
        "https://[::1]/hook",
        "https://[fd00:ec2::254]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://0.0.0.0/hook",
        "https://user:password@93.184.215.14/hook",
        "https://no-such-host.invalid/hook",
        "ftp://93.184.215.14/hook",
        "not a url",
    ],
)
def test_destinations_inside_the_network_are_refused_at_creation(
    client: FlaskClient, make_token: TokenFactory, url: str
) -> None:
    body = {"name": "x", "kind": "webhook", "url": url}
    response = client.post(f"{BASE}/streams", json=body, headers=bearer(make_token(roles=ADMIN)))
    assert response.status_code == 400, response.json
    assert "url" in response.json["errors"]["json"]


def test_a_name_that_resolves_to_loopback_at_delivery_is_refused(
    app: Flask,
    client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Any,
) -> None:
    hook = receiver()
    port = hook.url.split(":")[2].split("/")[0]
    answers = {"hooks.example.com": ["93.184.215.14"]}
    monkeypatch.setattr(destinations, "resolve", lambda host, port: answers[host])
    admin = make_token(roles=ADMIN)
    stream = create_stream(client, admin, url=f"https://hooks.example.com:{port}/hook")
    record_view(client, admin, new_id())
    answers["hooks.example.com"] = ["127.0.0.1"]  # the name now points inside
    assert deliver(app, stream, org) == 0
    shown = client.get(f"{BASE}/streams/{stream['id']}", headers=bearer(admin)).json["data"]
    assert shown["lastError"].startswith("refused destination:")
    assert "127.0.0.1" in shown["lastError"]
    assert hook.received == []


def test_backoff_doubles_from_one_second_to_five_minutes_with_jitter() -> None:
    assert delivery.backoff_seconds(1, None) == 1
    for failures, ceiling in [(2, 2), (3, 4), (6, 32), (9, 256), (10, 300), (30, 300)]:
        waits = [delivery.backoff_seconds(failures, None) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert len(set(waits)) > 100
    assert delivery.backoff_seconds(3, 42.0) == 42.0
    assert delivery.backoff_seconds(3, 0.0) == 1
    assert delivery.backoff_seconds(3, 10**9) == delivery.RETRY_AFTER_MAX_SECONDS


def test_a_worker_killed_mid_delivery_loses_nothing(
    app_role_url: str,
    open_client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    receiver: Any,
) -> None:
    admin = make_token(roles=ADMIN)
    written = [record_view(open_client, admin, new_id())["auditLogId"] for _ in range(5)]
    hook = receiver(("sleep", 3))  # the first batch hangs: the worker is killed meanwhile
    create_stream(open_client, admin, url=hook.url, startAt="beginning")
    written = chain(open_client.application, org)  # the views and the stream's creation
    env = {"STREAM_ALLOW_HTTP": "1", "STREAM_ALLOW_PRIVATE": "1", "STREAM_BATCH_SIZE": "2"}
    with running_gunicorn(app_role_url, **env) as url:
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        # The batch is at the receiver: kill every worker (SIGKILL: no cleanup at all).
        port = url.rsplit(":", 1)[1]
        workers = gunicorn_workers(port)
        assert workers
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            got = [
                entry["id"]
                for item in hook.accepted()
                for entry in json.loads(item.body)["entries"]
            ]
            if set(written) <= set(got):
                break
            time.sleep(0.2)
    first_batch = written[:2]
    assert set(got) == set(written)
    assert [entry for entry in got if got.count(entry) > 1] in ([], first_batch, first_batch * 2)
    assert sorted(set(got), key=got.index) == written


def gunicorn_workers(port: str) -> list[int]:
    """The pids of the gunicorn workers serving ``port`` (children of its master)."""
    masters = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"gunicorn" in b" ".join(command) and f"BIND=127.0.0.1:{port}".encode() in environ:
            masters.append(int(pid))
    master = min(masters)
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_metrics_show_each_streams_delivery(
    open_app: Flask, open_client: FlaskClient, make_token: TokenFactory, org: str, receiver: Any
) -> None:
    admin = make_token(roles=ADMIN)
    hook = receiver(500)
    stream = create_stream(open_client, admin, url=hook.url)
    record_view(open_client, admin, new_id())
    deliver(open_app, stream, org)
    due_now(open_app, stream)
    assert deliver(open_app, stream, org) == 2
    # This process's samples (the ones /metrics adds up across gunicorn's workers).
    label = {"stream": stream["id"]}
    assert REGISTRY.get_sample_value("insights_audit_stream_delivered_entries_total", label) == 2
    assert REGISTRY.get_sample_value("insights_audit_stream_delivery_failures_total", label) == 1
    assert REGISTRY.get_sample_value("insights_audit_stream_lag_seconds", label) is not None
