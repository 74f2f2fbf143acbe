"""Reads from a real streaming replica (``DATABASE_REPLICA_URLS``): a caller always reads its
own writes, other reads go to the replica, a replica that is down or too far behind is
skipped and comes back by itself.

The suite builds its own primary and replica from the embedded PostgreSQL's binaries
(``initdb``, ``pg_basebackup -R``), whatever server the rest of the suite runs on, and runs
the service as the least-privileged app role on both.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from flask import Flask
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import replicas, schema_migrations
from insights_audit.db.engine import ENGINE_KEY
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.web.tokens import create_token
from tests.conftest import BASE, TEST_SIGNING_KEY, bearer, new_id

DATABASE = "replicated"


@dataclass(frozen=True)
class Replication:
    primary_admin: str  # superuser URLs, to pause replay and inspect
    replica_admin: str
    primary: str  # the app role's URLs
    replica: str
    replica_dir: Path
    primary_dir: Path
    owner: Flask  # an app as the tables' owner, which creates tokens

    def settings(self, **changes: object) -> Settings:
        base = Settings(
            database_url=self.primary,
            database_replica_urls=(self.replica,),
            token_cache_seconds=0,
            pool_timeout_s=2,
            audit_signing_key=TEST_SIGNING_KEY,
        )
        return replace(base, **changes)  # type: ignore[arg-type]


def _on(server_url: str, database: str, user: str | None = None) -> str:
    url = make_url(server_url).set(database=database)
    if user is not None:
        url = url.set(username=user, password=None)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def replication() -> Iterator[Replication]:
    if not embedded.has_replication_tools():
        pytest.skip("the embedded PostgreSQL wheel with pg_basebackup is not installed")
    root = Path(tempfile.mkdtemp(prefix="insights-audit-replication-"))
    primary_server = embedded.start_embedded_server(root / "primary", delete_on_exit=True)
    primary_admin = embedded.ensure_database(primary_server, DATABASE)
    schema_migrations.upgrade(primary_admin)
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(primary_admin, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN")
    owner = create_app(Settings(database_url=primary_admin, audit_signing_key=TEST_SIGNING_KEY))
    assert owner.test_cli_runner().invoke(args=["db", "grant-app-role", role]).exit_code == 0

    replica_dir = root / "replica"
    replica_server = embedded.start_streaming_replica(
        root / "primary", replica_dir, delete_on_exit=True
    )
    replica_admin = _on(replica_server, DATABASE)
    with psycopg.connect(replica_admin) as connection:
        assert connection.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    yield Replication(
        primary_admin,
        replica_admin,
        _on(primary_server, DATABASE, role),
        _on(replica_server, DATABASE, role),
        replica_dir,
        root / "primary",
        owner,
    )
    # Both servers stop, and their folders go, when the test run ends.


@pytest.fixture
def replay_paused(replication: Replication) -> Iterator[None]:
    with psycopg.connect(replication.replica_admin, autocommit=True) as connection:
        connection.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with psycopg.connect(replication.replica_admin, autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_resume()")


def reads_to(destination: str) -> float:
    value = REGISTRY.get_sample_value("insights_audit_reads_total", {"destination": destination})
    return value or 0.0


def fallbacks(reason: str) -> float:
    value = REGISTRY.get_sample_value("insights_audit_replica_fallbacks_total", {"reason": reason})
    return value or 0.0


def replica_name(replication: Replication) -> str:
    return replicas.replica_name(replication.replica)


def new_org() -> str:
    """A fresh organisation: tenancy keeps the tests apart on the shared databases."""
    return f"org-{uuid.uuid4().hex[:8]}"


def new_token(
    replication: Replication, org: str, user: str = "user-1", roles: tuple[str, ...] = ("Users",)
) -> str:
    with replication.owner.app_context(), transaction() as connection:
        _, secret = create_token(
            connection,
            org=org,
            user_id=user,
            user_email=None,
            roles=list(roles),
            scopes=["api"],
            name=None,
            expires_in_days=None,
        )
    return secret


def caught_up(replication: Replication, timeout_s: float = 10) -> None:
    """Wait until the replica shows every transaction the primary has committed: a marker
    transaction committed after them all is visible in its snapshot."""
    with psycopg.connect(replication.primary_admin, autocommit=True) as primary:
        marker = primary.execute("SELECT pg_current_xact_id()::text").fetchone()
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(replication.replica_admin, autocommit=True) as replica:
        while time.monotonic() < deadline:
            shown = replica.execute(
                "SELECT pg_visible_in_snapshot(%s::xid8, pg_current_snapshot())",
                (marker[0] if marker else None,),
            ).fetchone()
            if shown == (True,):
                return
            time.sleep(0.05)
    raise AssertionError("the replica did not catch up")


def counted(measure: Callable[[], float], action: Callable[[], object]) -> float:
    before = measure()
    action()
    return measure() - before


@pytest.fixture
def workers(replication: Replication) -> tuple[Flask, Flask]:
    """Two apps on the same databases: two workers (or hosts) behind a load balancer, each
    having found the caught-up replica usable (as a running worker has)."""
    apps = create_app(replication.settings()), create_app(replication.settings())
    caught_up(replication)
    for app in apps:
        with app.app_context():
            routing = replicas.read_routing()
            assert routing is not None
            # A first probe that finds the replica a few WAL records behind cannot tell how
            # far behind in time (it has no earlier sample of the primary): the next can.
            deadline = time.monotonic() + 10
            while routing.usable() != (routing.replicas, None):
                assert time.monotonic() < deadline, "the caught-up replica was never usable"
                time.sleep(0.2)
    return apps


def test_a_view_is_read_back_at_once_through_another_worker_while_replay_is_paused(
    replication: Replication, workers: tuple[Flask, Flask], replay_paused: None
) -> None:
    writer, reader = workers
    org = new_org()
    secret = new_token(replication, org)
    dashboard = new_id()
    response = writer.test_client().post(
        f"{BASE}/dashboard/{dashboard}/view", headers=bearer(secret)
    )
    assert response.status_code == 200
    client = reader.test_client()
    before = reads_to("primary"), fallbacks("behind_caller")
    recent = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    stats = client.get(f"{BASE}/dashboard/{dashboard}/stats", headers=bearer(secret))
    assert [item["dashboardId"] for item in recent.json["data"]] == [dashboard]
    assert stats.json["data"]["totalViews"] == 1
    # Both went to the primary, because the replica had not replayed the caller's view.
    assert (reads_to("primary"), fallbacks("behind_caller")) == (before[0] + 2, before[1] + 2)
    # The replica indeed does not have it yet.
    with psycopg.connect(replication.replica_admin) as connection:
        rows = connection.execute(
            "SELECT count(*) FROM view_logs WHERE dashboard_id = %s", (dashboard,)
        ).fetchone()
    assert rows == (0,)


def test_reads_go_to_the_replica_once_it_has_the_callers_writes(
    replication: Replication, workers: tuple[Flask, Flask]
) -> None:
    writer, reader = workers
    org = new_org()
    secret, other = new_token(replication, org), new_token(replication, org, "user-2")
    dashboard = new_id()
    assert (
        writer.test_client()
        .post(f"{BASE}/dashboard/{dashboard}/view", headers=bearer(secret))
        .status_code
        == 200
    )
    caught_up(replication)
    client = reader.test_client()
    name = replica_name(replication)
    before = reads_to(name)
    mine = client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    theirs = client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(other))
    assert [item["dashboardId"] for item in mine.json["data"]] == [dashboard]
    assert [item["dashboardId"] for item in theirs.json["data"]] == [dashboard]
    assert reads_to(name) == before + 2
    # Row-level security holds on the replica: another org's token sees none of it.
    stranger = new_token(replication, new_org())
    caught_up(replication)
    nothing = client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(stranger))
    assert nothing.json["data"] == [] and reads_to(name) == before + 3


def test_every_read_a_replica_serves_answers_as_the_primary_does(
    replication: Replication, workers: tuple[Flask, Flask]
) -> None:
    writer, routed = workers
    primary_only = create_app(replication.settings(database_replica_urls=()))
    org = new_org()
    viewers = [new_token(replication, org, f"user-{n}") for n in range(3)]
    auditor = new_token(replication, org, "auditor", ("Auditor",))
    dashboards = [new_id() for _ in range(3)]
    client = writer.test_client()
    for n, secret in enumerate(viewers):
        for dashboard in dashboards[: n + 1]:
            body = {"name": f"Revenue {dashboard[:4]}"}
            client.post(f"{BASE}/dashboard/{dashboard}/view", headers=bearer(secret), json=body)
    entry = client.get(f"{BASE}?limit=1", headers=bearer(auditor)).json["data"][0]["id"]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    period = f"since=2026-01-01T00:00:00Z&until={tomorrow}"
    reads = [
        (viewers[0], f"{BASE}/dashboard/recently-viewed"),
        (viewers[0], f"{BASE}/dashboard/most-viewed"),
        (viewers[0], f"{BASE}/dashboard/most-viewed?days=7"),
        (viewers[0], f"{BASE}/dashboard/{dashboards[0]}/stats"),
        (viewers[0], f"{BASE}/dashboard/trending?days=7"),
        (viewers[0], f"{BASE}/dashboard/{dashboards[0]}/related"),
        (viewers[0], f"{BASE}/dashboard/recommended"),
        (viewers[2], f"{BASE}/dashboard/{dashboards[0]}"),
        (viewers[0], f"{BASE}/{entry}"),
        (auditor, f"{BASE}?q=revenue&type=dashboard"),
        (auditor, f"{BASE}/reports/usage?{period}"),
        (auditor, f"{BASE}/reports/usage?{period}&format=csv"),
        (auditor, f"{BASE}/me"),
    ]
    # Counted once on the primary first (most-viewed?days= keeps counts on first use).
    for secret, url in reads:
        assert primary_only.test_client().get(url, headers=bearer(secret)).status_code == 200
    caught_up(replication)
    name = replica_name(replication)
    for secret, url in reads:
        expected = primary_only.test_client().get(url, headers=bearer(secret))
        before = reads_to(name)
        answer = routed.test_client().get(url, headers=bearer(secret))
        assert answer.status_code == 200, url
        assert without_now(answer.get_data()) == without_now(expected.get_data()), url
        assert reads_to(name) == before + 1, url


def write_position(replication: Replication, secret: str) -> int | None:
    """The transaction of the token's last write, as the primary keeps it."""
    with psycopg.connect(replication.primary_admin) as connection:
        row = connection.execute(
            "SELECT t.xid::text FROM token_write_positions AS t"
            " JOIN api_tokens AS a ON a.id = t.token_id WHERE a.token_hash = sha256(%s)",
            (secret.encode(),),
        ).fetchone()
    return None if row is None else int(row[0])


def without_now(body: bytes) -> Any:
    """A response body without the one field that is the moment of the request (the end of
    a stats period)."""
    if not body.startswith(b"{"):
        return body
    document = json.loads(body)
    period = document["data"].get("period") if isinstance(document["data"], dict) else None
    if isinstance(period, dict):
        period.pop("to", None)
    return document


def test_a_read_that_must_write_goes_on_on_the_primary_then_returns_to_the_replica(
    replication: Replication, workers: tuple[Flask, Flask]
) -> None:
    writer, reader = workers
    org = new_org()
    secret, reader_token = new_token(replication, org), new_token(replication, org, "user-2")
    dashboard = new_id()
    writer.test_client().post(f"{BASE}/dashboard/{dashboard}/view", headers=bearer(secret))
    caught_up(replication)
    client = reader.test_client()
    url = f"{BASE}/dashboard/most-viewed?days=7"
    # No kept counts of this window yet: the first request counts them on the primary.
    first = counted(
        lambda: fallbacks("writes_on_read"),
        lambda: client.get(url, headers=bearer(reader_token)).json,
    )
    assert first == 1
    # Counting a window is not the caller's write: its reads need not wait for it.
    assert write_position(replication, reader_token) is None
    caught_up(replication)
    name = replica_name(replication)
    before = reads_to(name)
    again = client.get(url, headers=bearer(reader_token))
    assert [item["viewCount"] for item in again.json["data"]] == [1]
    assert reads_to(name) == before + 1
    trending = client.get(f"{BASE}/dashboard/trending?days=7", headers=bearer(reader_token))
    assert trending.status_code == 200
    assert [item["dashboardId"] for item in trending.json["data"]] == [dashboard]


def test_a_stopped_replica_is_skipped_and_comes_back_by_itself(
    replication: Replication, workers: tuple[Flask, Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicas, "DOWN_RETRY_SECONDS", 0.5)
    _, reader = workers
    org = new_org()
    secret = new_token(replication, org)
    client = reader.test_client()
    name = replica_name(replication)

    def most_viewed() -> None:
        answer = client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(secret))
        assert answer.status_code == 200 and answer.json["data"] == []

    caught_up(replication)
    assert counted(lambda: reads_to(name), most_viewed) == 1
    embedded.stop_embedded_server(replication.replica_dir)
    try:
        down_before = fallbacks("down")
        for _ in range(3):
            most_viewed()
        assert fallbacks("down") >= down_before + 3
        assert client.get("/readyz").status_code == 200
        assert REGISTRY.get_sample_value("insights_audit_replica_usable", {"replica": name}) == 0
    finally:
        embedded.start_stopped_server(replication.replica_dir)
    deadline = time.monotonic() + 10
    while counted(lambda: reads_to(name), most_viewed) != 1:
        assert time.monotonic() < deadline, "reads did not return to the restarted replica"
        time.sleep(0.2)
    assert REGISTRY.get_sample_value("insights_audit_replica_usable", {"replica": name}) == 1


def test_reads_are_served_again_after_the_primary_restarts(
    replication: Replication, workers: tuple[Flask, Flask]
) -> None:
    _, reader = workers
    secret = new_token(replication, new_org())
    client = reader.test_client()
    url = f"{BASE}/dashboard/most-viewed"
    assert client.get(url, headers=bearer(secret)).status_code == 200
    embedded.restart_embedded_server(replication.primary_dir, pause_s=0.5)
    replication.owner.extensions[ENGINE_KEY].dispose()  # the fixture's own connections
    # Connections opened before the restart fail once each (503), then are replaced; the
    # write-position lookup's own connection among them.
    statuses = [client.get(url, headers=bearer(secret)).status_code for _ in range(15)]
    assert set(statuses) <= {200, 503} and statuses[-3:] == [200, 200, 200], statuses
    caught_up(replication)
    assert (
        counted(
            lambda: reads_to(replica_name(replication)),
            lambda: client.get(url, headers=bearer(secret)),
        )
        == 1
    )


def test_a_replica_further_behind_than_the_limit_is_skipped(
    replication: Replication, replay_paused: None
) -> None:
    app = create_app(replication.settings(replica_max_lag_seconds=1))
    org = new_org()
    writer, reader = new_token(replication, org), new_token(replication, org, "user-2")
    client = app.test_client()
    client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(reader))  # first probe
    client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(writer))
    time.sleep(2.5)  # the replica replays nothing: more than a second behind
    lagging = counted(
        lambda: fallbacks("lagging"),
        lambda: client.get(f"{BASE}/dashboard/most-viewed", headers=bearer(reader)),
    )
    assert lagging == 1
    lag = REGISTRY.get_sample_value(
        "insights_audit_replica_lag_seconds", {"replica": replica_name(replication)}
    )
    assert lag is not None and lag > 1


def test_only_requests_that_write_record_their_transaction(
    replication: Replication, workers: tuple[Flask, Flask]
) -> None:
    writer, _ = workers
    org = new_org()
    secret = new_token(replication, org)
    client = writer.test_client()

    client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    assert write_position(replication, secret) is None
    client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret))
    first = write_position(replication, secret)
    client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret))
    second = write_position(replication, secret)
    assert first is not None and second is not None and second > first
    client.get(f"{BASE}/dashboard/recently-viewed", headers=bearer(secret))
    assert write_position(replication, secret) == second


def test_replica_settings_are_read_from_the_environment_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "DATABASE_REPLICA_URLS", "postgresql://app@r1/audit, postgres://app@r2:6432/a"
    )
    monkeypatch.setenv("REPLICA_MAX_LAG_SECONDS", "2.5")
    settings = Settings.from_env()
    assert settings.database_replica_urls == (
        "postgresql://app@r1/audit",
        "postgres://app@r2:6432/a",
    )
    assert settings.replica_max_lag_seconds == 2.5
    monkeypatch.setenv("REPLICA_MAX_LAG_SECONDS", "0")
    with pytest.raises(RuntimeError, match="REPLICA_MAX_LAG_SECONDS must be greater than 0"):
        Settings.from_env()
    monkeypatch.delenv("REPLICA_MAX_LAG_SECONDS")
    monkeypatch.setenv("DATABASE_REPLICA_URLS", "postgresql://app@r1/audit,mysql://app@r2/audit")
    with pytest.raises(RuntimeError, match="DATABASE_REPLICA_URLS take postgresql:// URLs"):
        Settings.from_env()
    monkeypatch.delenv("DATABASE_REPLICA_URLS")
    assert Settings.from_env().database_replica_urls == ()


def test_a_replica_is_named_in_metrics_without_its_credentials() -> None:
    assert replicas.replica_name("postgresql://app:s3cret@db-r2:6432/audit") == "db-r2:6432/audit"
    assert replicas.replica_name("postgresql://app@/audit?host=/run/pg") == "/run/pg:5432/audit"


def test_lag_is_the_age_of_the_newest_primary_position_the_replica_has_reached() -> None:
    routing = replicas.ReadRouting(engine_stub(), [], max_lag_seconds=5)
    # The primary's WAL position at three probes, a second apart.
    routing._primary_positions.extend([(10.0, 1_000_000), (11.0, 2_000_000), (12.0, 3_000_000)])
    assert routing._lag(3_000_000, None, 12.5, 3_000_000) == 0.0
    assert routing._lag(2_995_000, None, 12.5, 3_000_000) == 0.0  # within a WAL page
    assert routing._lag(2_500_000, None, 12.5, 3_000_000) == 1.5  # reached the one of 11.0
    # Behind every sample: the age of its last replayed commit, if it has one.
    assert routing._lag(500_000, 30.0, 12.5, 3_000_000) == 30.0
    assert routing._lag(500_000, None, 12.5, 3_000_000) is None


def engine_stub() -> Any:
    """An engine nothing is asked of (no connection is made)."""
    return object()
