"""Recording views, recently viewed, most viewed (all time and windows), stats."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event

from insights_audit import worker
from insights_audit.audit.window_counts import WINDOWS_KEPT_PER_ORG
from insights_audit.db.engine import engine
from insights_audit.worker import keep_windows_counted
from tests.conftest import (
    BASE,
    TokenFactory,
    bearer,
    new_id,
    rebuild_aggregates,
    record_view,
    run_sql,
)


def get_data(client: FlaskClient, secret: str, path: str) -> Any:
    response = client.get(BASE + path, headers=bearer(secret))
    assert response.status_code == 200, response.json
    return response.json["data"]


def parse(ts: str) -> datetime:
    assert ts.endswith("Z") and len(ts) == 24, ts
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def backdate_views(
    app: Flask, org: str, dashboard_id: str, user: str, when: datetime, n: int = 1
) -> None:
    """Append view entries at a past time, then rebuild the aggregates from the trail."""
    for _ in range(n):
        append_view_entry(app, org, dashboard_id, user, when)
    rebuild_aggregates(app, org)


def append_view_entry(app: Flask, org: str, dashboard_id: str, user: str, when: datetime) -> None:
    """A view entry written straight into the trail, as if recorded at ``when``."""
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, created_at)"
        " VALUES (audit_object_id(:when), :org, 'dashboard', 'view', :d, :user, :when)",
        org=org,
        d=dashboard_id,
        user=user,
        when=when,
    )


# Recording a view -----------------------------------------------------------------------


def test_recording_a_view_counts_it_and_writes_one_audit_entry(
    client: FlaskClient, token: str
) -> None:
    dashboard = new_id()
    first = record_view(client, token, dashboard, json={"name": "Velocity"})
    second = record_view(client, token, dashboard.upper())
    assert first["viewCount"] == 1 and first["totalViews"] == 1
    assert second["viewCount"] == 2 and second["totalViews"] == 2
    assert second["dashboardId"] == dashboard and second["userId"] == "user-1"
    assert parse(second["viewedAt"]) >= parse(first["viewedAt"])
    entry = get_data(client, token, f"/{second['auditLogId']}")
    assert entry["type"] == "dashboard" and entry["action"] == "view"
    assert entry["targetId"] == dashboard and entry["createdAt"] == second["viewedAt"]
    trail = get_data(client, token, f"/dashboard/{dashboard}")
    assert [e["id"] for e in trail] == [second["auditLogId"], first["auditLogId"]]


def test_total_views_count_every_user_of_the_org(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    dashboard = new_id()
    alice, bob = make_token(user="alice"), make_token(user="bob")
    record_view(client, alice, dashboard)
    result = record_view(client, bob, dashboard)
    assert result["viewCount"] == 1 and result["totalViews"] == 2


@pytest.mark.parametrize(
    "body",
    [b"[]", b'"name"', b"{not json", b"42", b"null"],
)
def test_view_body_must_be_a_json_object(client: FlaskClient, token: str, body: bytes) -> None:
    response = client.post(
        f"{BASE}/dashboard/{new_id()}/view",
        data=body,
        headers={**bearer(token), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "json" in response.json["errors"]


def test_view_body_rejects_unknown_fields_and_long_names(client: FlaskClient, token: str) -> None:
    path = f"{BASE}/dashboard/{new_id()}/view"
    unknown = client.post(path, json={"title": "x"}, headers=bearer(token))
    assert unknown.status_code == 400
    assert unknown.json["errors"] == {"json": {"title": ["Unknown field."]}}
    long_name = client.post(path, json={"name": "x" * 257}, headers=bearer(token))
    assert long_name.status_code == 400 and "name" in long_name.json["errors"]["json"]
    assert client.post(path, json={"name": "x" * 256}, headers=bearer(token)).status_code == 200


def test_a_non_json_body_is_rejected_whatever_its_content_type(
    client: FlaskClient, token: str
) -> None:
    response = client.post(
        f"{BASE}/dashboard/{new_id()}/view",
        data="name=x",
        headers={**bearer(token), "Content-Type": "text/plain"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-uuid",
        "123e4567e89b12d3a456426614174000",
        "123e4567-e89b-12d3-a456-42661417400",
        "{123e4567-e89b-12d3-a456-426614174000}",
    ],
)
def test_malformed_dashboard_id_is_400(client: FlaskClient, token: str, bad_id: str) -> None:
    for method, path in (
        ("POST", f"/dashboard/{bad_id}/view"),
        ("GET", f"/dashboard/{bad_id}/stats"),
        ("GET", f"/dashboard/{bad_id}"),
    ):
        response = client.open(BASE + path, method=method, headers=bearer(token))
        assert response.status_code == 400, path
        assert response.json == {
            "message": "Invalid dashboard ID format",
            "code": 400,
            "status": "Bad Request",
        }


# Recently viewed ------------------------------------------------------------------------


def test_recently_viewed_lists_my_dashboards_newest_first(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    me, other = make_token(user="me"), make_token(user="other")
    a, b, c = new_id(), new_id(), new_id()
    record_view(client, me, a, json={"name": "A"})
    record_view(client, me, b)
    record_view(client, me, a)
    record_view(client, other, c)
    items = get_data(client, me, "/dashboard/recently-viewed")
    assert [i["dashboardId"] for i in items] == [a, b]
    assert items[0]["viewCount"] == 2 and items[0]["name"] == "A"
    assert items[1]["name"] is None
    assert parse(items[0]["firstViewedAt"]) < parse(items[0]["lastViewedAt"])
    assert set(items[0]) == {"dashboardId", "name", "viewCount", "firstViewedAt", "lastViewedAt"}


def test_recently_viewed_breaks_ties_by_dashboard_id(
    client: FlaskClient, app: Flask, token: str, org: str
) -> None:
    ids = [new_id() for _ in range(4)]
    for d in ids:
        record_view(client, token, d)
    run_sql(
        app,
        "UPDATE view_logs SET last_viewed_at = '2026-01-01T00:00:00Z' WHERE org = :org",
        org=org,
    )
    items = get_data(client, token, "/dashboard/recently-viewed?limit=3")
    assert [i["dashboardId"] for i in items] == sorted(ids)[:3]


def test_name_is_the_last_non_null_name_reported(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    me, other = make_token(user="me"), make_token(user="other")
    d = new_id()
    record_view(client, me, d, json={"name": "Old"})
    record_view(client, other, d, json={"name": "New"})
    record_view(client, me, d, json={"name": None})
    assert get_data(client, me, "/dashboard/recently-viewed")[0]["name"] == "New"
    event = {"type": "dashboard", "action": "rename", "targetId": d, "details": {"name": "Newest"}}
    assert client.post(BASE, json=event, headers=bearer(me)).status_code == 201
    assert get_data(client, me, "/dashboard/recently-viewed")[0]["name"] == "Newest"
    assert get_data(client, me, f"/dashboard/{d}/stats")["name"] == "Newest"


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=", "extra=1"])
def test_recently_viewed_rejects_bad_query(client: FlaskClient, token: str, query: str) -> None:
    response = client.get(f"{BASE}/dashboard/recently-viewed?{query}", headers=bearer(token))
    assert response.status_code == 400
    assert response.json["errors"]["query"]


def test_recently_viewed_limit(client: FlaskClient, token: str) -> None:
    for _ in range(12):
        record_view(client, token, new_id())
    assert len(get_data(client, token, "/dashboard/recently-viewed")) == 10
    assert len(get_data(client, token, "/dashboard/recently-viewed?limit=11")) == 11
    assert len(get_data(client, token, "/dashboard/recently-viewed?limit=100")) == 12


# Most viewed ----------------------------------------------------------------------------


def test_most_viewed_orders_by_count_then_recency_then_id(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    alice, bob = make_token(user="alice"), make_token(user="bob")
    hot, warm, tie_1, tie_2 = new_id(), new_id(), *sorted([new_id(), new_id()])
    for _ in range(3):
        record_view(client, alice, hot)
    record_view(client, bob, hot)
    record_view(client, alice, warm)
    record_view(client, bob, warm)
    record_view(client, alice, tie_2)
    record_view(client, alice, tie_1)
    items = get_data(client, alice, "/dashboard/most-viewed")
    assert [i["dashboardId"] for i in items] == [hot, warm, tie_1, tie_2]
    assert (items[0]["viewCount"], items[0]["uniqueViewers"]) == (4, 2)
    assert set(items[0]) == {"dashboardId", "name", "viewCount", "uniqueViewers", "lastViewedAt"}
    run_sql(
        app,
        "UPDATE dashboard_totals SET last_viewed_at = '2026-01-01T00:00:00Z' WHERE org = :org",
        org=org,
    )
    items = get_data(client, alice, "/dashboard/most-viewed?limit=4")
    assert [i["dashboardId"] for i in items] == [hot, warm, tie_1, tie_2]
    assert len(get_data(client, alice, "/dashboard/most-viewed?limit=2")) == 2


def test_most_viewed_with_days_counts_only_the_window(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    alice = make_token(user="alice")
    old_favourite, recent = new_id(), new_id()
    now = datetime.now(UTC)
    backdate_views(app, org, old_favourite, "alice", now - timedelta(days=10), n=5)
    backdate_views(app, org, old_favourite, "bob", now - timedelta(days=2, hours=1))
    backdate_views(app, org, recent, "alice", now - timedelta(hours=47))
    backdate_views(app, org, recent, "carol", now - timedelta(hours=1), n=2)
    items = get_data(client, alice, "/dashboard/most-viewed?days=2")
    assert [(i["dashboardId"], i["viewCount"], i["uniqueViewers"]) for i in items] == [
        (recent, 3, 2)
    ]
    items = get_data(client, alice, "/dashboard/most-viewed?days=3")
    assert [(i["dashboardId"], i["viewCount"]) for i in items] == [(recent, 3), (old_favourite, 1)]
    items = get_data(client, alice, "/dashboard/most-viewed?days=11")
    assert [(i["dashboardId"], i["viewCount"], i["uniqueViewers"]) for i in items] == [
        (old_favourite, 6, 2),
        (recent, 3, 2),
    ]


@pytest.mark.parametrize(
    "query", ["days=0", "days=3651", "days=x", "limit=0", "limit=101", "sort=asc"]
)
def test_most_viewed_rejects_bad_query(client: FlaskClient, token: str, query: str) -> None:
    response = client.get(f"{BASE}/dashboard/most-viewed?{query}", headers=bearer(token))
    assert response.status_code == 400 and response.json["errors"]["query"]


# Stats ----------------------------------------------------------------------------------


def test_stats_of_a_never_viewed_dashboard_are_zeros(client: FlaskClient, token: str) -> None:
    d = new_id()
    stats = get_data(client, token, f"/dashboard/{d}/stats?days=7")
    assert stats["dashboardId"] == d and stats["name"] is None
    assert (stats["totalViews"], stats["uniqueViewers"]) == (0, 0)
    assert stats["firstViewedAt"] is None and stats["lastViewedAt"] is None
    assert stats["topViewers"] == []
    days = stats["dailyViews"]
    today = datetime.now(UTC).date()
    assert [day["date"] for day in days] == [str(today - timedelta(days=6 - i)) for i in range(7)]
    assert all(day["views"] == 0 and day["uniqueViewers"] == 0 for day in days)
    period = stats["period"]
    assert period["days"] == 7 and period["views"] == 0 and period["uniqueViewers"] == 0
    assert period["from"] == f"{today - timedelta(days=6)}T00:00:00.000Z"
    assert abs(parse(period["to"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_stats_count_days_viewers_and_top_viewers(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    alice, bob = (
        make_token(user="alice", email="alice@example.com"),
        make_token(user="bob", email=None),
    )
    d = new_id()
    for _ in range(3):
        record_view(client, alice, d)
    record_view(client, bob, d, json={"name": "Quality"})
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    backdate_views(app, org, d, "carol", today - timedelta(days=2) + timedelta(hours=5), n=2)
    backdate_views(app, org, d, "alice", today - timedelta(days=2) + timedelta(hours=6))
    backdate_views(app, org, d, "dave", today - timedelta(days=40))
    stats = get_data(client, alice, f"/dashboard/{d}/stats?days=3")
    assert stats["name"] == "Quality"
    assert (stats["totalViews"], stats["uniqueViewers"]) == (8, 4)
    assert [(x["views"], x["uniqueViewers"]) for x in stats["dailyViews"]] == [
        (3, 2),
        (0, 0),
        (4, 2),
    ]
    assert stats["period"]["views"] == 7 and stats["period"]["uniqueViewers"] == 3
    top = stats["topViewers"]
    assert [(v["userId"], v["userEmail"], v["viewCount"]) for v in top] == [
        ("alice", "alice@example.com", 4),
        ("carol", None, 2),
        ("bob", None, 1),
        ("dave", None, 1),
    ]
    default = get_data(client, alice, f"/dashboard/{d}/stats")
    assert len(default["dailyViews"]) == 30 and default["period"]["days"] == 30
    assert default["dailyViews"][-1]["date"] == str(date.today())


def test_top_viewers_are_at_most_ten(client: FlaskClient, make_token: TokenFactory) -> None:
    d = new_id()
    for n in range(12):
        record_view(client, make_token(user=f"user-{n:02d}"), d)
    stats = get_data(client, make_token(), f"/dashboard/{d}/stats?days=1")
    assert len(stats["topViewers"]) == 10 and stats["uniqueViewers"] == 12
    assert stats["dailyViews"] == [
        {"date": str(datetime.now(UTC).date()), "views": 12, "uniqueViewers": 12}
    ]


@pytest.mark.parametrize("query", ["days=0", "days=366", "days=1.5", "limit=5"])
def test_stats_rejects_bad_query(client: FlaskClient, token: str, query: str) -> None:
    response = client.get(f"{BASE}/dashboard/{new_id()}/stats?{query}", headers=bearer(token))
    assert response.status_code == 400 and response.json["errors"]["query"]


def test_most_viewed_windows_match_a_brute_force_count(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    rng = random.Random(11)
    token = make_token()
    now = datetime.now(UTC)
    dashboards = [new_id() for _ in range(6)]
    views = [
        (
            rng.choice(dashboards),
            f"user-{rng.randrange(5)}",
            now - timedelta(hours=rng.uniform(0.1, 24 * 9)),
        )
        for _ in range(120)
    ]
    for d, user, when in views:
        append_view_entry(app, org, d, user, when)
    rebuild_aggregates(app, org)
    for round_ in range(2):
        if round_:
            # Stored running totals of past days stay right as new views arrive.
            for d in dashboards[:3]:
                record_view(client, token, d)
                views.append((d, "user-1", datetime.now(UTC)))
        assert_windows_match(client, token, views, dashboards)
    # The running totals of one day each are stored once: the day before each window's start
    # (1..9 days ago) and before the start of the window as long before it (2..18 days ago).
    (snapshots,) = run_sql(app, "SELECT count(*) FROM total_snapshots WHERE org = :org", org=org)
    assert snapshots == (len(set(range(1, 10)) | set(range(2, 19, 2))),)


def test_kept_window_counts_stay_exact_as_views_slide_out_and_arrive(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    token = make_token()
    leaving, staying = new_id(), new_id()
    now = datetime.now(UTC)
    # Three views about to leave the 1-day window, two well inside it.
    views = [
        (leaving, f"user-{n}", now - timedelta(days=1) + timedelta(seconds=3)) for n in range(3)
    ]
    views += [(staying, "user-9", now - timedelta(hours=2)) for _ in range(2)]
    for d, user, when in views:
        append_view_entry(app, org, d, user, when)
    rebuild_aggregates(app, org)
    first = get_data(client, token, "/dashboard/most-viewed?days=1")
    assert [(i["dashboardId"], i["viewCount"]) for i in first] == [(leaving, 3), (staying, 2)]
    (kept,) = run_sql(app, "SELECT count(*) FROM window_counts WHERE org = :org", org=org)
    assert kept == (2,)  # the window's counts are kept, with the snapshot they saw
    time.sleep(4)  # the three slide out of the window; the kept counts still hold them
    record_view(client, token, staying)
    views.append((staying, "user-1", datetime.now(UTC)))
    assert_windows_match(client, token, views, [leaving, staying], windows=(1,))


def test_kept_window_counts_do_not_count_twice_past_a_transaction_left_open(
    client: FlaskClient, app: Flask, database_url: str, make_token: TokenFactory, org: str
) -> None:
    token = make_token()
    d = new_id()
    with psycopg.connect(database_url) as idle:
        # An older transaction still open: the kept snapshot's xmin stays behind the views
        # below, which it nevertheless saw.
        idle.execute("SELECT pg_current_xact_id()")
        for _ in range(3):
            record_view(client, token, d)
        kept = get_data(client, token, "/dashboard/most-viewed?days=3")
        again = get_data(client, token, "/dashboard/most-viewed?days=3")
    assert [i["viewCount"] for i in kept] == [i["viewCount"] for i in again] == [3]


def test_the_background_worker_counts_asked_for_windows_again(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    token = make_token()
    d = new_id()
    record_view(client, token, d)
    get_data(client, token, "/dashboard/most-viewed?days=7")
    # Counts two minutes old: nothing has changed since, so moving as_of back keeps them true.
    run_sql(
        app,
        "UPDATE window_snapshots SET as_of = as_of - interval '2 minutes' WHERE org = :org",
        org=org,
    )
    record_view(client, token, d)
    with app.app_context():
        keep_windows_counted(org)
    ((fresh, count),) = run_sql(
        app,
        "SELECT s.as_of > now() - interval '1 minute', c.views FROM window_snapshots AS s"
        " JOIN window_counts AS c USING (org, days) WHERE s.org = :org",
        org=org,
    )
    assert fresh and count == 2
    items = get_data(client, token, "/dashboard/most-viewed?days=7")
    assert [(i["dashboardId"], i["viewCount"]) for i in items] == [(d, 2)]


def test_the_workers_own_recounts_do_not_keep_a_window_in_demand(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    token = make_token()
    record_view(client, token, new_id())
    get_data(client, token, "/dashboard/most-viewed?days=5")
    # Last asked for 30 minutes ago, counted 2 minutes ago (nothing changed since).
    run_sql(
        app,
        "UPDATE window_snapshots SET requested_at = now() - interval '30 minutes',"
        " as_of = as_of - interval '2 minutes' WHERE org = :org",
        org=org,
    )
    with app.app_context():
        keep_windows_counted(org)
    ((recounted, asked_minutes_ago),) = run_sql(
        app,
        "SELECT as_of > now() - interval '1 minute',"
        " round(extract(epoch FROM now() - requested_at) / 60) FROM window_snapshots"
        " WHERE org = :org",
        org=org,
    )
    # Recounted, yet still last asked for 30 minutes ago: unasked, it stops after an hour.
    assert recounted and asked_minutes_ago == 30


def test_the_worker_keeps_only_the_most_recently_asked_for_windows(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str
) -> None:
    """Second review, finding 7: a token asking for 300 distinct ``days`` made the worker
    count 301 windows again every minute."""
    token = make_token()
    d = new_id()
    record_view(client, token, d)
    for days in range(1, 41):
        get_data(client, token, f"/dashboard/most-viewed?days={days}")
    # Asked for in the order 40, 39, ..., 1 (1 most recently); counted two minutes ago.
    run_sql(
        app,
        "UPDATE window_snapshots SET as_of = as_of - interval '2 minutes',"
        " requested_at = requested_at - make_interval(secs => days) WHERE org = :org",
        org=org,
    )
    record_view(client, token, d)
    with app.app_context():
        assert keep_windows_counted(org) == WINDOWS_KEPT_PER_ORG
    kept = run_sql(
        app,
        "SELECT s.days, c.views FROM window_snapshots AS s JOIN window_counts AS c"
        " USING (org, days) WHERE s.org = :org AND s.as_of > '-infinity' ORDER BY s.days",
        org=org,
    )
    assert kept == [(days, 2) for days in range(1, WINDOWS_KEPT_PER_ORG + 1)]
    # An evicted window is counted afresh when asked for again: still exact.
    record_view(client, token, d)
    items = get_data(client, token, "/dashboard/most-viewed?days=40")
    assert [(i["dashboardId"], i["viewCount"]) for i in items] == [(d, 3)]


def test_window_recounts_stop_at_their_budget(
    client: FlaskClient, app: Flask, make_token: TokenFactory, org: str, monkeypatch: Any
) -> None:
    token = make_token()
    record_view(client, token, new_id())
    for days in (3, 4):
        get_data(client, token, f"/dashboard/most-viewed?days={days}")
    run_sql(
        app,
        "UPDATE window_snapshots SET as_of = as_of - interval '2 minutes' WHERE org = :org",
        org=org,
    )
    monkeypatch.setattr(worker, "RECOUNT_BUDGET_SECONDS", 0.0)
    with app.app_context():
        assert keep_windows_counted(org) == 0
    monkeypatch.setattr(worker, "RECOUNT_BUDGET_SECONDS", 10.0)
    with app.app_context():
        assert keep_windows_counted(org) == 2


def test_recounts_and_sealing_never_wait_for_each_other(
    client: FlaskClient, app: Flask, database_url: str, make_token: TokenFactory, org: str
) -> None:
    token = make_token()
    record_view(client, token, new_id())
    get_data(client, token, "/dashboard/most-viewed?days=6")
    stale = "UPDATE window_snapshots SET as_of = as_of - interval '2 minutes' WHERE org = :org"
    run_sql(app, stale, org=org)
    with psycopg.connect(database_url, autocommit=True) as other:
        # Someone else is sealing: the windows are still counted.
        other.execute("SELECT pg_advisory_lock(%s)", [worker.SEALER_LOCK])
        assert worker.recount_windows(app, [org]) == 1
        other.execute("SELECT pg_advisory_unlock(%s)", [worker.SEALER_LOCK])
        run_sql(app, stale, org=org)
        # Someone else is counting: sealing goes on, and this pass counts nothing.
        other.execute("SELECT pg_advisory_lock(%s)", [worker.RECOUNT_LOCK])
        assert worker.seal_everything(app) >= 1
        assert worker.recount_windows(app, [org]) == 0
        other.execute("SELECT pg_advisory_unlock(%s)", [worker.RECOUNT_LOCK])


def assert_windows_match(
    client: FlaskClient,
    token: str,
    views: list[tuple[str, str, datetime]],
    dashboards: list[str],
    windows: tuple[int, ...] = tuple(range(1, 10)),
) -> None:
    for days in windows:
        since = datetime.now(UTC) - timedelta(days=days)
        counted = {
            d: (
                sum(1 for v in views if v[0] == d and v[2] >= since),
                len({v[1] for v in views if v[0] == d and v[2] >= since}),
            )
            for d in dashboards
        }
        expected = sorted(
            ((d, c) for d, c in counted.items() if c[0]), key=lambda item: -item[1][0]
        )
        items = get_data(client, token, f"/dashboard/most-viewed?days={days}&limit=100")
        got = {i["dashboardId"]: (i["viewCount"], i["uniqueViewers"]) for i in items}
        assert got == dict(expected), days
        assert [i["viewCount"] for i in items] == sorted((c[0] for _, c in expected), reverse=True)


def test_first_requests_for_a_cold_window_wait_for_one_count(
    app: Flask, make_token: TokenFactory, org: str
) -> None:
    """The cold-window stampede of the benchmark: every first request counted the window."""
    token = make_token()
    warm = app.test_client()
    for _ in range(3):
        record_view(warm, token, new_id())
    with app.app_context():
        bind = engine()
    counts: list[str] = []

    def count(*args: Any) -> None:
        if "INSERT INTO window_snapshots" in args[2]:
            counts.append(args[2])

    barrier = threading.Barrier(8)
    answers: list[Any] = []

    def ask() -> None:
        client = app.test_client()
        barrier.wait()
        answers.append(get_data(client, token, "/dashboard/most-viewed?days=11"))

    event.listen(bind, "before_cursor_execute", count)
    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        event.remove(bind, "before_cursor_execute", count)
    assert len(counts) == 1
    assert len(answers) == 8 and all(answer == answers[0] for answer in answers)
    assert sum(item["viewCount"] for item in answers[0]) == 3
