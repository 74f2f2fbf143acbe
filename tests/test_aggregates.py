"""The aggregates equal what the raw trail implies: after seeding, concurrent views, rebuilds."""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient

from insights_audit.audit import aggregates, keys
from insights_audit.db.engine import engine
from insights_audit.db.orgs import orgs_with_entries
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import demo
from insights_audit.integrity import sealing
from tests.conftest import (
    BASE,
    TEST_SIGNING_KEY,
    TokenFactory,
    bearer,
    new_id,
    record_view,
    run_sql,
)
from tests.test_cli import cli


def expected_from_trail(app: Flask, org: str) -> dict[str, Any]:
    """The aggregates computed independently, in Python, from the org's raw entries."""
    rows = run_sql(
        app,
        "SELECT user_id, target_id, created_at, user_email, action, details"
        " FROM audit_entries WHERE org = :org AND type = 'dashboard' ORDER BY created_at, id",
        org=org,
    )
    viewers: dict[tuple[Any, Any], dict[str, Any]] = {}
    daily: dict[tuple[Any, Any], list[Any]] = defaultdict(list)
    names: dict[Any, str] = {}
    for user, target, at, email, action, details in rows:
        if isinstance(details.get("name"), str):
            names[target] = details["name"]
        if action != "view":
            continue
        log = viewers.setdefault((user, target), {"count": 0, "times": [], "email": None})
        log["count"] += 1
        log["times"].append(at)
        log["email"] = email or log["email"]
        daily[(target, at.date())].append(user)
    view_logs = {
        key: (
            log["email"],
            log["count"],
            min(log["times"]),
            max(log["times"]),
            sorted(log["times"])[-2] if log["count"] > 1 else None,
        )
        for key, log in viewers.items()
    }
    totals: dict[Any, tuple[Any, ...]] = {}
    for target in {t for _, t in viewers} | set(names):
        logs = [log for (_, t), log in viewers.items() if t == target]
        times = [time for log in logs for time in log["times"]]
        totals[target] = (
            names.get(target),
            sum(log["count"] for log in logs),
            len(logs),
            min(times, default=None),
            max(times, default=None),
        )
    last_days: dict[tuple[Any, Any], int] = defaultdict(int)
    for (_, target), log in viewers.items():
        last_days[(target, max(log["times"]).date())] += 1
    days = {}
    running: dict[Any, int] = defaultdict(int)
    for (target, day), users in sorted(
        daily.items(), key=lambda item: (str(item[0][0]), item[0][1])
    ):
        running[target] += len(users)
        days[(target, day)] = (
            len(users),
            len(set(users)),
            last_days[(target, day)],
            running[target],
        )
    return {"view_logs": view_logs, "totals": totals, "daily": days}


def actual_aggregates(app: Flask, org: str) -> dict[str, Any]:
    view_logs = run_sql(
        app,
        "SELECT user_id, dashboard_id, user_email, view_count, first_viewed_at, last_viewed_at,"
        " previous_viewed_at FROM view_logs WHERE org = :org",
        org=org,
    )
    totals = run_sql(
        app,
        "SELECT dashboard_id, name, view_count, unique_viewers, first_viewed_at, last_viewed_at"
        " FROM dashboard_totals WHERE org = :org",
        org=org,
    )
    daily = run_sql(
        app,
        "SELECT dashboard_id, day, views, unique_viewers, last_viewers, total_views"
        " FROM dashboard_daily_views"
        " WHERE org = :org",
        org=org,
    )
    return {
        "view_logs": {(r[0], r[1]): tuple(r[2:]) for r in view_logs},
        "totals": {r[0]: tuple(r[1:]) for r in totals},
        "daily": {(r[0], r[1]): tuple(r[2:]) for r in daily},
    }


def rebuild(app: Flask, org: str) -> None:
    with app.app_context(), transaction(org) as connection:
        aggregates.rebuild(connection, org)


def test_aggregates_after_seeding_equal_the_trail(app: Flask, org: str) -> None:
    plan = demo.SeedPlan(org, events=3_000, users=40, dashboards=25, days=20, seed=3)
    with app.app_context():
        report = demo.seed(engine(), plan, lambda _: None)
    assert report.entries == 3_000 + 25
    (views,) = run_sql(
        app, "SELECT count(*) FROM audit_entries WHERE org = :org AND action = 'view'", org=org
    )
    assert 2_700 < views[0] < 3_000
    expected = expected_from_trail(app, org)
    assert actual_aggregates(app, org) == expected
    assert len(expected["totals"]) == 25 and all(t[0] for t in expected["totals"].values())


def test_seeded_data_looks_like_real_traffic(app: Flask, org: str) -> None:
    plan = demo.SeedPlan(org, events=20_000, users=100, dashboards=50, days=28, seed=5)
    with app.app_context():
        demo.seed(engine(), plan, lambda _: None)
    per_dashboard = [
        r[0]
        for r in run_sql(
            app, "SELECT view_count FROM dashboard_totals WHERE org = :org ORDER BY 1 DESC", org=org
        )
    ]
    assert per_dashboard[0] > 5 * per_dashboard[9] > 0, "popularity follows a long tail"
    weekday = run_sql(
        app,
        "SELECT extract(isodow FROM created_at) >= 6, count(*) FROM audit_entries"
        " WHERE org = :org AND action = 'view' GROUP BY 1 ORDER BY 1",
        org=org,
    )
    (_, weekdays), (_, weekends) = weekday
    assert weekdays / 5 > 2 * weekends / 2, "weekends are quieter"
    (future,) = run_sql(
        app, "SELECT count(*) FROM audit_entries WHERE org = :org AND created_at > now()", org=org
    )
    assert future == (0,)
    (newest_age,) = run_sql(
        app,
        "SELECT extract(epoch FROM now() - max(created_at)) FROM audit_entries WHERE org = :org",
        org=org,
    )
    assert 0 <= newest_age[0] < 3 * 3600, "today's traffic reaches up to now"
    kinds = dict(
        run_sql(
            app, "SELECT type, count(*) FROM audit_entries WHERE org = :org GROUP BY 1", org=org
        )
    )
    assert set(kinds) == {"dashboard", "kpi", "mapping"}


def test_aggregates_after_concurrent_api_views_equal_the_trail(
    app: Flask, make_token: TokenFactory, org: str
) -> None:
    tokens = [
        make_token(user=f"u{n}", email=f"u{n}@example.com" if n % 2 else None) for n in range(6)
    ]
    admin = make_token(user="admin", roles=("Administrator",))
    dashboards = [new_id() for _ in range(3)]
    start = threading.Barrier(48)

    def work(n: int) -> int:
        client = app.test_client()
        start.wait()
        d = dashboards[n % 3]
        if n % 8 == 0:
            body = {
                "type": "dashboard",
                "action": "view",
                "targetId": d,
                "details": {"name": f"n{n}"},
            }
            return client.post(BASE, json=body, headers=bearer(admin)).status_code
        response = client.post(f"{BASE}/dashboard/{d}/view", headers=bearer(tokens[n % 6]))
        return response.status_code

    with ThreadPoolExecutor(48) as pool:
        assert set(pool.map(work, range(48))) <= {200, 201}
    client = app.test_client()
    client.post(
        BASE,
        json={
            "type": "dashboard",
            "action": "rename",
            "targetId": new_id(),
            "details": {"name": "Only named"},
        },
        headers=bearer(admin),
    )
    expected = expected_from_trail(app, org)
    assert actual_aggregates(app, org) == expected
    rebuild(app, org)
    assert actual_aggregates(app, org) == expected


def test_rebuild_restores_damaged_aggregates(app: Flask, token: str, org: str) -> None:
    client = app.test_client()
    d = new_id()
    for _ in range(3):
        client.post(f"{BASE}/dashboard/{d}/view", json={"name": "Board"}, headers=bearer(token))
    before = actual_aggregates(app, org)
    run_sql(
        app, "UPDATE dashboard_totals SET view_count = 999, name = NULL WHERE org = :org", org=org
    )
    run_sql(app, "DELETE FROM view_logs WHERE org = :org", org=org)
    run_sql(app, "UPDATE dashboard_daily_views SET views = 0 WHERE org = :org", org=org)
    rebuild(app, org)
    assert actual_aggregates(app, org) == before == expected_from_trail(app, org)


def test_rebuild_command_leaves_other_orgs_alone(
    app: Flask, make_token: TokenFactory, org: str
) -> None:
    other = "other-" + new_id()[:8]
    client = app.test_client()
    mine, theirs = make_token(), make_token(token_org=other)
    for secret in (mine, theirs):
        client.post(f"{BASE}/dashboard/{new_id()}/view", headers=bearer(secret))
    run_sql(app, "UPDATE dashboard_totals SET view_count = 7 WHERE org = :other", other=other)
    result: Result = app.test_cli_runner().invoke(args=["aggregates", "rebuild", "--org", org])
    assert result.exit_code == 0 and f"Rebuilt the aggregates of {org}" in result.output
    assert run_sql(
        app, "SELECT view_count FROM dashboard_totals WHERE org = :other", other=other
    ) == [(7,)]


def test_orgs_with_entries_lists_each_org_once_in_order(
    app: Flask, make_token: TokenFactory
) -> None:
    prefix = f"org-list-{new_id()[:8]}"
    names = [f"{prefix}-{n}" for n in range(3)]
    for name in names:
        secret = make_token(token_org=name)
        for _ in range(2):
            record_view(app.test_client(), secret, new_id())
    with app.app_context(), transaction() as connection:
        listed = orgs_with_entries(connection)
    assert listed == sorted(set(listed))
    assert [name for name in listed if name.startswith(prefix)] == names


def test_verify_aggregates_reports_counters_changed_behind_the_trails_back(
    app: Flask, database_url: str, client: FlaskClient, token: str, org: str
) -> None:
    board = new_id()
    for _ in range(3):
        record_view(client, token, board)
    key = {"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY}
    with app.app_context():
        sealing.seal(transaction, org, keys.app_signing_key(app))
    whole = cli(database_url, "audit", "verify", "--org", org, "--aggregates", env=key)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    run_sql(app, "UPDATE view_logs SET view_count = 300 WHERE org = :org", org=org)
    changed = cli(database_url, "audit", "verify", "--org", org, "--aggregates", env=key)
    assert changed.returncode == 1
    assert f"FAILED {org}: aggregates differ from the trail: view_logs (1 differ)" in changed.stdout
    # The check compares and changes nothing: the tampered counter is still there to inspect.
    assert run_sql(app, "SELECT view_count FROM view_logs WHERE org = :org", org=org) == [(300,)]
    assert cli(database_url, "audit", "verify", "--org", org, env=key).returncode == 0
