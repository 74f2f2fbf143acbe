"""Trending, related and recommended dashboards, each checked against a brute-force oracle
computed from the view entries themselves."""

from __future__ import annotations

import json
import math
import random
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insights_audit.dashboards import answers, engagement
from insights_audit.db.engine import engine
from insights_audit.worker import keep_answers_fresh, keep_windows_counted
from tests.conftest import BASE, TokenFactory, bearer, new_id, rebuild_aggregates, run_sql

DAY = timedelta(days=1)


@dataclass(frozen=True)
class View:
    user: str
    board: str
    at: datetime


def write_views(app: Flask, org: str, views: list[View], names: dict[str, str]) -> None:
    """The views (and one naming entry per named board, long ago) as entries of ``org``,
    written as the table owner; then the org's aggregates rebuilt from them."""
    rows: list[tuple[str, str, str, str, datetime]] = [
        (view.user, view.board, "view", "{}", view.at) for view in views
    ]
    long_ago = datetime.now(UTC) - 400 * DAY
    rows += [
        ("namer", board, "update", json.dumps({"name": name}), long_ago)
        for board, name in names.items()
    ]
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        values = ", ".join(
            f"(audit_object_id(CAST(:at{n} AS timestamptz)), :org, 'dashboard', :action{n},"
            f" CAST(:board{n} AS uuid), :user{n}, CAST(:details{n} AS jsonb), :at{n})"
            for n in range(len(chunk))
        )
        params: dict[str, Any] = {"org": org}
        for n, (user, board, action, details, at) in enumerate(chunk):
            params.update(
                {f"user{n}": user, f"board{n}": board, f"action{n}": action}
                | {f"details{n}": details, f"at{n}": at}
            )
        run_sql(
            app,
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, details,"
            f" created_at) VALUES {values}",
            **params,
        )
    rebuild_aggregates(app, org)


def in_window(views: list[View], start: datetime, end: datetime | None = None) -> list[View]:
    return [view for view in views if view.at >= start and (end is None or view.at < end)]


def viewers(views: list[View], since: datetime) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for view in in_window(views, since):
        found.setdefault(view.board, set()).add(view.user)
    return found


def key(score: float) -> float:
    return round(score, 9)


def trending_oracle(
    views: list[View], names: dict[str, str], now: datetime, days: int, limit: int
) -> list[dict[str, Any]]:
    recent: dict[str, int] = {}
    previous: dict[str, int] = {}
    for view in in_window(views, now - days * DAY):
        recent[view.board] = recent.get(view.board, 0) + 1
    for view in in_window(views, now - 2 * days * DAY, now - days * DAY):
        previous[view.board] = previous.get(view.board, 0) + 1
    items = []
    for board, r in recent.items():
        p = previous.get(board, 0)
        if r > p:
            score = (r - p) / math.sqrt(p + 1)
            items.append((board, r, p, score))
    items.sort(key=lambda item: (-key(item[3]), -item[1], item[0]))
    return [
        {
            "dashboardId": board,
            "name": names.get(board),
            "recentViews": r,
            "previousViews": p,
            "score": round(score, 4),
        }
        for board, r, p, score in items[:limit]
    ]


def related_oracle(
    views: list[View], names: dict[str, str], now: datetime, board: str, days: int, limit: int
) -> list[dict[str, Any]]:
    sets = viewers(views, now - days * DAY)
    mine = sets.get(board, set())
    items = []
    for other, users in sets.items():
        shared = len(mine & users)
        if other != board and shared:
            items.append((other, shared, shared / math.sqrt(len(mine) * len(users))))
    items.sort(key=lambda item: (-key(item[2]), -item[1], item[0]))
    return [
        {
            "dashboardId": other,
            "name": names.get(other),
            "sharedViewers": shared,
            "score": round(score, 4),
        }
        for other, shared, score in items[:limit]
    ]


def recommended_oracle(
    views: list[View], names: dict[str, str], now: datetime, user: str, days: int, limit: int
) -> list[dict[str, Any]]:
    since = now - days * DAY
    sets = viewers(views, since)
    mine = {board for board, users in sets.items() if user in users}
    scored = []
    for candidate, users in sets.items():
        if candidate in mine:
            continue
        parts = []
        for board in mine:
            shared = len(sets[board] & users)
            if shared:
                parts.append((shared / math.sqrt(len(sets[board]) * len(users)), board))
        if parts:
            parts.sort(key=lambda part: (-key(part[0]), part[1]))
            score = math.fsum(part[0] for part in parts)
            scored.append((candidate, score, [board for _, board in parts[:3]]))
    scored.sort(key=lambda item: (-key(item[1]), item[0]))
    answer = [
        {
            "dashboardId": board,
            "name": names.get(board),
            "score": round(score, 4),
            "reason": "similar",
            "because": because,
        }
        for board, score, because in scored[:limit]
    ]
    if len(answer) < limit:
        counts: dict[str, int] = {}
        for view in in_window(views, since):
            counts[view.board] = counts.get(view.board, 0) + 1
        last = {board: max(v.at for v in views if v.board == board) for board in counts}
        taken = mine | {item["dashboardId"] for item in answer}
        popular = sorted(
            (board for board in counts if board not in taken),
            key=lambda board: (-counts[board], -last[board].timestamp(), board),
        )
        answer += [
            {
                "dashboardId": board,
                "name": names.get(board),
                "score": 0.0,
                "reason": "popular",
                "because": [],
            }
            for board in popular[: limit - len(answer)]
        ]
    return answer


def get(client: FlaskClient, token: str, path: str) -> tuple[datetime, list[dict[str, Any]]]:
    """The data of ``path`` and the moment just before it was asked."""
    asked = datetime.now(UTC)
    response = client.get(f"{BASE}{path}", headers=bearer(token))
    assert response.status_code == 200, response.json
    return asked, response.json["data"]


def forget_answers(app: Flask, org: str) -> None:
    """No kept answers of ``org``: its next asks compute them."""
    run_sql(app, "DELETE FROM engagement_answers WHERE org = :org", org=org)


USERS = [f"user-{n}" for n in range(7)]
BOARDS = sorted(str(uuid.UUID(int=n * 7919 + 1)) for n in range(9))
NAMES = {board: f"Board {n}" for n, board in enumerate(BOARDS[:-1])}  # the last one unnamed


@pytest.fixture
def history(app: Flask, org: str) -> list[View]:
    """Views over 40 days by seven users of nine boards, with views 30 seconds either side of
    the 1, 7, 14 and 30-day edges (and of the trending windows' 2x edges)."""
    rng = random.Random(org)
    now = datetime.now(UTC)
    views = []
    for _ in range(400):
        user = rng.choice(USERS[: rng.randint(2, len(USERS))])
        board = BOARDS[min(int(rng.expovariate(0.35)), len(BOARDS) - 1)]
        views.append(View(user, board, now - timedelta(seconds=rng.uniform(60, 40 * 86400))))
    for days in (1, 2, 7, 14, 28, 30):
        for side in (-30, 30):
            views.append(
                View(
                    rng.choice(USERS),
                    rng.choice(BOARDS),
                    now - days * DAY + timedelta(seconds=side),
                )
            )
    write_views(app, org, views, NAMES)
    return views


@pytest.mark.parametrize("days", [1, 7, 14, 30])
def test_trending_equals_the_oracle(
    client: FlaskClient, make_token: TokenFactory, history: list[View], days: int
) -> None:
    token = make_token()
    asked, data = get(client, token, f"/dashboard/trending?days={days}&limit=100")
    assert data == trending_oracle(history, NAMES, asked, days, 100)
    assert [list(item) for item in data[:1]] in (
        [],
        [["dashboardId", "name", "recentViews", "previousViews", "score"]],
    )


@pytest.mark.parametrize("days", [1, 7, 30, 90])
def test_related_equals_the_oracle_for_every_board(
    client: FlaskClient, make_token: TokenFactory, history: list[View], days: int
) -> None:
    token = make_token()
    for board in BOARDS:
        asked, data = get(client, token, f"/dashboard/{board}/related?days={days}&limit=50")
        assert data == related_oracle(history, NAMES, asked, board, days, 50), board


@pytest.mark.parametrize(("days", "limit"), [(7, 3), (30, 10), (90, 50), (1, 5)])
def test_recommended_equals_the_oracle_for_every_user(
    client: FlaskClient, make_token: TokenFactory, history: list[View], days: int, limit: int
) -> None:
    for user in USERS:
        token = make_token(user=user)
        asked, data = get(client, token, f"/dashboard/recommended?days={days}&limit={limit}")
        assert data == recommended_oracle(history, NAMES, asked, user, days, limit), user


def test_limits_cut_the_same_order(
    client: FlaskClient, make_token: TokenFactory, history: list[View]
) -> None:
    token = make_token(user=USERS[0])
    for path in (
        "/dashboard/trending?days=14",
        f"/dashboard/{BOARDS[0]}/related?days=30",
        "/dashboard/recommended?days=30",
    ):
        _, whole = get(client, token, f"{path}&limit=50")
        _, first = get(client, token, f"{path}&limit=2")
        assert first == whole[:2], path


def test_a_window_slides_while_the_test_runs(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    """A view 2 s inside the 1-day window is recent, and 3 s later it is previous; two views
    2 s inside the day before it are previous, and 3 s later in neither window."""
    now = datetime.now(UTC)
    board, other = BOARDS[0], BOARDS[2]
    views = [View("a", board, now - DAY + timedelta(seconds=2))]
    views += [View("b", BOARDS[1], now - DAY - timedelta(hours=1))]
    views += [View("c", other, now - timedelta(hours=1))]
    views += [View("c", other, now - 2 * DAY + timedelta(seconds=2))] * 2
    write_views(app, org, views, {})
    token = make_token()
    _, before = get(client, token, "/dashboard/trending?days=1")
    assert [(i["dashboardId"], i["recentViews"], i["previousViews"]) for i in before] == [
        (board, 1, 0)
    ]
    time.sleep(3)
    _, after = get(client, token, "/dashboard/trending?days=1")
    # The first board: one view before and none since, not rising; the other: one recent
    # view and the two before gone.
    assert [(i["dashboardId"], i["recentViews"], i["previousViews"]) for i in after] == [
        (other, 1, 0)
    ]


def test_trending_reads_its_kept_windows_exactly_as_views_arrive_and_recounts_run(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    """Trending keeps its window counted (7 days here, with the 7 days before it): views
    recorded after the counts were kept, and the background worker's recounts, leave it
    equal to the oracle."""
    token = make_token()
    _, first = get(client, token, "/dashboard/trending?days=7&limit=100")
    kept = run_sql(app, "SELECT days FROM window_snapshots WHERE org = :org ORDER BY 1", org=org)
    assert kept == [(7,)]
    views = list(history)
    for board in [BOARDS[-1]] * 30 + [BOARDS[-2]]:
        assert (
            client.post(f"{BASE}/dashboard/{board}/view", headers=bearer(token)).status_code == 200
        )
        views.append(View("tester", board, datetime.now(UTC)))
    asked, data = get(client, token, "/dashboard/trending?days=7&limit=100")
    assert data == trending_oracle(views, NAMES, asked, 7, 100)
    assert data != first  # 30 new views of the last board make it rise
    with app.app_context():
        run_sql(
            app,
            "UPDATE window_snapshots SET as_of = as_of - interval '2 minutes' WHERE org = :org",
            org=org,
        )
        assert keep_windows_counted(org) == 1
    asked, data = get(client, token, "/dashboard/trending?days=7&limit=100")
    assert data == trending_oracle(views, NAMES, asked, 7, 100)


def test_views_recorded_through_the_api_count_at_once(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    ana, bo = make_token(user="ana"), make_token(user="bo")
    first, second, third = new_id(), new_id(), new_id()
    for token, board in ((ana, first), (ana, second), (bo, first), (bo, second), (bo, third)):
        assert (
            client.post(f"{BASE}/dashboard/{board}/view", headers=bearer(token)).status_code == 200
        )
    _, related = get(client, ana, f"/dashboard/{first}/related")
    assert [(i["dashboardId"], i["sharedViewers"], i["score"]) for i in related] == [
        (second, 2, 1.0),
        (third, 1, round(1 / math.sqrt(2), 4)),
    ]
    _, recommended = get(client, ana, "/dashboard/recommended")
    assert recommended == [
        {
            "dashboardId": third,
            "name": None,
            "score": round(2 / math.sqrt(2), 4),
            "reason": "similar",
            "because": sorted([first, second]),
        }
    ]
    _, trending = get(client, ana, "/dashboard/trending")
    # A tie in score and recent views is ordered by id.
    assert [(i["dashboardId"], i["recentViews"], i["score"]) for i in trending] == [
        *sorted([(first, 2, 2.0), (second, 2, 2.0)]),
        (third, 1, 1.0),
    ]


def test_another_orgs_views_never_move_an_answer(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    token = make_token(user=USERS[1])
    paths = [
        "/dashboard/trending?days=7",
        f"/dashboard/{BOARDS[1]}/related",
        "/dashboard/recommended?limit=50",
    ]
    before = [get(client, token, path)[1] for path in paths]
    other = f"org-e-{new_id()[:8]}"
    now = datetime.now(UTC)
    write_views(
        app,
        other,
        [View(USERS[1], board, now - timedelta(hours=n)) for n, board in enumerate(BOARDS * 3)],
        {},
    )
    forget_answers(app, org)  # computed again, not the answers kept a moment ago
    assert [get(client, token, path)[1] for path in paths] == before


def test_a_caller_with_no_history_gets_the_popular_dashboards(
    client: FlaskClient, make_token: TokenFactory, history: list[View]
) -> None:
    asked, data = get(client, make_token(user="newcomer"), "/dashboard/recommended?days=30")
    assert data and all(item["reason"] == "popular" for item in data)
    assert data == recommended_oracle(history, NAMES, asked, "newcomer", 30, 10)


def test_an_unknown_dashboard_has_no_related_ones(
    client: FlaskClient, make_token: TokenFactory, history: list[View]
) -> None:
    assert get(client, make_token(), f"/dashboard/{new_id()}/related")[1] == []


def test_an_empty_org_answers_empty_lists(client: FlaskClient, make_token: TokenFactory) -> None:
    token = make_token()
    for path in ("/dashboard/trending", "/dashboard/recommended", f"/dashboard/{new_id()}/related"):
        assert get(client, token, path)[1] == [], path


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/trending?days=0",
        "/dashboard/trending?days=91",
        "/dashboard/trending?limit=0",
        "/dashboard/trending?limit=101",
        "/dashboard/trending?days=x",
        "/dashboard/trending?since=1",
        "/dashboard/recommended?days=366",
        "/dashboard/recommended?limit=51",
        "/dashboard/recommended?days=0",
        f"/dashboard/{BOARDS[0]}/related?limit=51",
        f"/dashboard/{BOARDS[0]}/related?days=366",
        f"/dashboard/{BOARDS[0]}/related?days=0",
    ],
)
def test_out_of_range_parameters_are_400(
    client: FlaskClient, make_token: TokenFactory, path: str
) -> None:
    response = client.get(f"{BASE}{path}", headers=bearer(make_token()))
    assert response.status_code == 400 and response.json["errors"]["query"], path


def test_bounds_are_inclusive(client: FlaskClient, make_token: TokenFactory) -> None:
    token = make_token()
    for path in (
        "/dashboard/trending?days=90&limit=100",
        "/dashboard/trending?days=1&limit=1",
        "/dashboard/recommended?days=365&limit=50",
        f"/dashboard/{BOARDS[0]}/related?days=365&limit=50",
    ):
        assert client.get(f"{BASE}{path}", headers=bearer(token)).status_code == 200, path


def test_a_malformed_dashboard_id_is_400(client: FlaskClient, make_token: TokenFactory) -> None:
    response = client.get(f"{BASE}/dashboard/nope/related", headers=bearer(make_token()))
    assert response.status_code == 400 and response.json["message"] == "Invalid dashboard ID format"


@pytest.mark.parametrize(
    "path", ["/dashboard/trending", "/dashboard/recommended", f"/dashboard/{BOARDS[0]}/related"]
)
def test_any_site_role_with_either_scope_may_ask_and_nobody_else(
    client: FlaskClient, make_token: TokenFactory, path: str
) -> None:
    for role in ("Opsera Administrator", "Administrator", "Power User", "Users"):
        for scope in ("api", "api-readonly"):
            token = make_token(roles=(role,), scopes=(scope,))
            assert client.get(f"{BASE}{path}", headers=bearer(token)).status_code == 200
    auditor = make_token(roles=("Auditor",))
    assert client.get(f"{BASE}{path}", headers=bearer(auditor)).status_code == 403
    assert client.get(f"{BASE}{path}").status_code == 401


HISTORIES = st.lists(
    st.tuples(
        st.sampled_from(USERS[:4]),
        st.sampled_from(BOARDS[:5]),
        st.floats(min_value=0.001, max_value=20.0),
    ),
    max_size=40,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=HISTORIES, days=st.sampled_from([1, 3, 7]))
def test_trending_and_related_hold_for_any_history(
    app: Flask, client: FlaskClient, make_token: TokenFactory, history: list[Any], days: int
) -> None:
    org = f"org-h-{new_id()[:10]}"
    now = datetime.now(UTC)
    views = [View(user, board, now - timedelta(days=ago)) for user, board, ago in history]
    write_views(app, org, views, {})
    token = make_token(token_org=org)
    asked, data = get(client, token, f"/dashboard/trending?days={days}&limit=100")
    assert data == trending_oracle(views, {}, asked, days, 100)
    for board in BOARDS[:5]:
        asked, data = get(client, token, f"/dashboard/{board}/related?days={days}&limit=50")
        assert data == related_oracle(views, {}, asked, board, days, 50)


@pytest.mark.parametrize(("few_viewers", "few_audiences"), [(500, 0), (0, 0), (0, 10_000)])
def test_related_counts_audiences_every_way_with_the_same_answer(
    client: FlaskClient,
    make_token: TokenFactory,
    history: list[View],
    monkeypatch: pytest.MonkeyPatch,
    few_viewers: int,
    few_audiences: int,
) -> None:
    """Every audience in the statement that counts the shared viewers (a dashboard with few
    viewers), or by the bound: in one pass over the window (``few_audiences`` 0) or dashboard
    by dashboard from the daily counts; each gives the oracle's answer."""
    monkeypatch.setattr(engagement, "FEW_VIEWERS", few_viewers)
    monkeypatch.setattr(engagement, "FEW_AUDIENCES", few_audiences)
    token = make_token()
    for days in (1, 7, 30):
        for board in BOARDS:
            asked, data = get(client, token, f"/dashboard/{board}/related?days={days}&limit=3")
            assert data == related_oracle(history, NAMES, asked, board, days, 3), board


def test_related_counts_the_audiences_that_can_win_and_answers_exactly(
    app: Flask,
    client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twelve dashboards share all four viewers of X but have twenty viewers each; one
    shares a single viewer and has no other: it shares least, yet scores best, so the
    audiences of the dashboards sharing most must not be the only ones counted."""
    monkeypatch.setattr(engagement, "FEW_VIEWERS", 0)  # by the bound, though X has four
    now = datetime.now(UTC)
    x, niche = BOARDS[0], str(uuid.UUID(int=77))
    crowd = [str(uuid.UUID(int=1000 + n)) for n in range(12)]
    views = [View(f"fan-{n}", x, now - DAY) for n in range(4)]
    views += [View(f"fan-{n}", y, now - DAY) for n in range(4) for y in crowd]
    views += [View(f"other-{n}", y, now - DAY) for n in range(16) for y in crowd]
    views += [View("fan-0", niche, now - DAY)]
    write_views(app, org, views, {})
    token = make_token()
    for limit in (1, 2, 13, 50):
        forget_answers(app, org)  # nothing kept: computed for this limit
        asked, data = get(client, token, f"/dashboard/{x}/related?days=7&limit={limit}")
        assert data == related_oracle(views, {}, asked, x, 7, limit), limit
    assert data[0]["dashboardId"] == niche and data[0]["score"] == 0.5


@pytest.mark.parametrize("few_viewers", [0, 500])
def test_related_cuts_a_long_list_exactly_either_way(
    app: Flask,
    client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    monkeypatch: pytest.MonkeyPatch,
    few_viewers: int,
) -> None:
    """Dashboards co-viewed with each of a few others number in the dozens, far more than
    the candidates either way keeps (``limit`` + 10), with audiences of every size."""
    monkeypatch.setattr(engagement, "FEW_VIEWERS", few_viewers)
    rng = random.Random(11)
    now = datetime.now(UTC)
    boards = [str(uuid.UUID(int=2000 + n)) for n in range(60)]
    views = [
        View(f"u{user}", board, now - timedelta(hours=rng.uniform(1, 100)))
        for user in range(40)
        for board in rng.sample(boards, rng.randint(3, 30))
    ]
    write_views(app, org, views, {})
    token = make_token()
    for board in boards[:5]:
        for limit in (1, 2, 5):
            forget_answers(app, org)  # nothing kept: computed for this limit
            asked, data = get(client, token, f"/dashboard/{board}/related?days=7&limit={limit}")
            assert data == related_oracle(views, {}, asked, board, 7, limit), (board, limit)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    history=st.lists(
        st.tuples(
            st.integers(0, 11),
            st.integers(0, 39),
            st.floats(min_value=0.001, max_value=10.0),
        ),
        max_size=150,
    ),
    limit=st.sampled_from([1, 2, 3, 5]),
)
@pytest.mark.parametrize("few_viewers", [0, 500])
def test_related_holds_for_many_dashboards_and_small_limits(
    app: Flask,
    client: FlaskClient,
    make_token: TokenFactory,
    monkeypatch: pytest.MonkeyPatch,
    few_viewers: int,
    history: list[Any],
    limit: int,
) -> None:
    """More dashboards than the candidates of either way: the bound (``few_viewers`` 0)
    counts audiences in two rounds, the one statement cuts its ordered list."""
    monkeypatch.setattr(engagement, "FEW_VIEWERS", few_viewers)
    org = f"org-h-{new_id()[:10]}"
    now = datetime.now(UTC)
    boards = [str(uuid.UUID(int=500 + n)) for n in range(40)]
    views = [
        View(f"u{user}", boards[board], now - timedelta(days=ago)) for user, board, ago in history
    ]
    write_views(app, org, views, {})
    token = make_token(token_org=org)
    for board in sorted({view.board for view in views})[:6]:
        asked, data = get(client, token, f"/dashboard/{board}/related?days=7&limit={limit}")
        assert data == related_oracle(views, {}, asked, board, 7, limit)


def test_recommended_picks_the_same_few_out_of_many_candidates(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    """More candidates than are scored exactly (limit + 10): the cheap ranking that picks them
    must not lose one the exact scores would list."""
    rng = random.Random(org)
    boards = sorted(str(uuid.UUID(int=n * 15485863 + 7)) for n in range(45))
    users = [f"wide-{n}" for n in range(12)]
    now = datetime.now(UTC)
    views = [
        View(
            rng.choice(users),
            rng.choice(boards),
            now - timedelta(seconds=rng.uniform(60, 80 * 86400)),
        )
        for _ in range(700)
    ]
    write_views(app, org, views, {})
    for user in users:
        token = make_token(user=user)
        for limit in (1, 2, 5):
            forget_answers(app, org)  # nothing kept: computed for this limit
            asked, data = get(client, token, f"/dashboard/recommended?days=60&limit={limit}")
            assert data == recommended_oracle(views, {}, asked, user, 60, limit), (user, limit)


# Kept answers (``dashboards.answers``): related and recommended may lag views by a minute.


def kept(app: Flask, org: str) -> list[tuple[Any, ...]]:
    return run_sql(
        app,
        "SELECT kind, subject, days, as_of, requested_at FROM engagement_answers"
        " WHERE org = :org ORDER BY kind, subject, days",
        org=org,
    )


def age_answers(app: Flask, org: str, seconds: int, column: str = "as_of") -> None:
    run_sql(
        app,
        f"UPDATE engagement_answers SET {column} = {column} - make_interval(secs => :s)"
        " WHERE org = :org",
        org=org,
        s=seconds,
    )


def test_an_answer_is_kept_for_a_minute_then_computed_again(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    """Views recorded after an answer was computed leave it as it is while it is younger than
    a minute: the answer equals the oracle at the moment it was first asked. Once older, the
    next request computes it again, with every view."""
    user = "newcomer"  # recommended the popular dashboards until they view one
    token = make_token(user=user)
    related_path = f"/dashboard/{BOARDS[0]}/related?days=30&limit=50"
    recommended_path = "/dashboard/recommended?days=30&limit=50"
    first_asked, first_related = get(client, token, related_path)
    _, first_recommended = get(client, token, recommended_path)
    assert [row[:3] for row in kept(app, org)] == [
        ("recommended", user, 30),
        ("related", BOARDS[0], 30),
    ]
    views = list(history)
    for board in (BOARDS[0], BOARDS[-1]):  # shared by one more viewer; the caller has a history
        response = client.post(f"{BASE}/dashboard/{board}/view", headers=bearer(token))
        assert response.status_code == 200
        views.append(View(user, board, datetime.now(UTC)))
    assert related_oracle(views, NAMES, datetime.now(UTC), BOARDS[0], 30, 50) != first_related
    _, again = get(client, token, related_path)
    assert again == first_related == related_oracle(history, NAMES, first_asked, BOARDS[0], 30, 50)
    assert get(client, token, recommended_path)[1] == first_recommended
    age_answers(app, org, 61)
    asked, data = get(client, token, related_path)
    assert data == related_oracle(views, NAMES, asked, BOARDS[0], 30, 50)
    asked, data = get(client, token, recommended_path)
    assert data == recommended_oracle(views, NAMES, asked, user, 30, 50)
    assert data[0]["reason"] == "similar" and first_recommended[0]["reason"] == "popular"


def test_an_answer_kept_for_a_limit_answers_smaller_ones_and_a_larger_one_replaces_it(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    token = make_token(user=USERS[0])
    related_path = f"/dashboard/{BOARDS[0]}/related?days=30"
    for path, oracle, subject in (
        (related_path, related_oracle, BOARDS[0]),
        ("/dashboard/recommended?days=30", recommended_oracle, USERS[0]),
    ):
        _, two = get(client, token, f"{path}&limit=2")
        [(*_, computed_at, _)] = kept(app, org)
        _, one = get(client, token, f"{path}&limit=1")
        assert one == two[:1] and kept(app, org)[0][3] == computed_at  # the kept one
        asked, five = get(client, token, f"{path}&limit=5")
        assert kept(app, org)[0][3] > computed_at  # computed again, for five
        assert five[:2] == two and five == oracle(history, NAMES, asked, subject, 30, 5)
        assert get(client, token, f"{path}&limit=3")[1] == five[:3]
        assert run_sql(
            app, "SELECT items_limit FROM engagement_answers WHERE org = :org", org=org
        ) == [(5,)]
        forget_answers(app, org)


def test_the_worker_computes_answers_asked_for_again_before_they_are_a_minute_old(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    user = USERS[3]
    token = make_token(user=user)
    path = f"/dashboard/{BOARDS[1]}/related?days=7&limit=50"
    get(client, token, path)
    get(client, token, "/dashboard/recommended?days=7")
    get(client, token, f"/dashboard/{BOARDS[2]}/related?days=7")  # asked for once only
    age_answers(app, org, 20, "requested_at")
    get(client, token, path)  # both asked for again: the kept answers count the ask
    get(client, token, "/dashboard/recommended?days=7")
    views = list(history)
    for other in ("late-1", "late-2"):
        viewer = make_token(user=other)
        for board in (BOARDS[1], BOARDS[-1]):
            assert (
                client.post(f"{BASE}/dashboard/{board}/view", headers=bearer(viewer)).status_code
                == 200
            )
            views.append(View(other, board, datetime.now(UTC)))
    with app.app_context():
        assert keep_answers_fresh(org, older_than=30) == 0  # all younger than that
    age_answers(app, org, 40)
    before = [row for row in kept(app, org) if row[1] != BOARDS[2]]
    with app.app_context():
        assert keep_answers_fresh(org, older_than=30) == 2  # not the one asked for once
    after = [row for row in kept(app, org) if row[1] != BOARDS[2]]
    (once,) = [row for row in kept(app, org) if row[1] == BOARDS[2]]
    assert once[3] < after[0][3]  # left to age
    assert [row[3] > old[3] for row, old in zip(after, before, strict=True)] == [True, True]
    assert [row[4] for row in after] == [row[4] for row in before]  # not asked by the worker
    asked, data = get(client, token, path)
    assert [row for row in kept(app, org) if row[1] != BOARDS[2]] == after  # the worker's
    assert data == related_oracle(views, NAMES, asked, BOARDS[1], 7, 50)
    assert data != related_oracle(history, NAMES, asked, BOARDS[1], 7, 50)


def test_answers_nobody_asks_for_are_dropped_and_an_org_keeps_the_latest_asked(
    app: Flask,
    client: FlaskClient,
    make_token: TokenFactory,
    org: str,
    history: list[View],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = make_token()
    for board in BOARDS[:4]:
        get(client, token, f"/dashboard/{board}/related")
    run_sql(
        app,
        "UPDATE engagement_answers SET requested_at = now() - interval '4 minutes'"
        " WHERE org = :org AND subject = :board",
        org=org,
        board=BOARDS[0],
    )
    run_sql(
        app,
        "UPDATE engagement_answers SET requested_at = now() - interval '30 seconds'"
        " WHERE org = :org AND subject = :board",
        org=org,
        board=BOARDS[1],
    )
    monkeypatch.setattr(answers, "KEPT_PER_ORG", 2)
    with app.app_context():
        keep_answers_fresh(org, older_than=30)
    assert sorted(row[1] for row in kept(app, org)) == sorted(BOARDS[2:4])


def test_a_kept_answer_is_marked_asked_at_most_every_15_seconds(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    token = make_token()
    path = f"/dashboard/{BOARDS[0]}/related"
    get(client, token, path)
    age_answers(app, org, 10, "requested_at")
    marked = kept(app, org)[0][4]
    get(client, token, path)
    assert kept(app, org)[0][4] == marked  # asked less than 15 s ago: left as it is
    age_answers(app, org, 10, "requested_at")
    get(client, token, path)
    assert kept(app, org)[0][4] > marked


def test_requests_that_find_an_answer_missing_at_once_compute_it_once(
    app: Flask, org: str, history: list[View]
) -> None:
    calls: list[str] = []

    def slow(connection: Any, org: str, question: answers.Question) -> list[Any]:
        calls.append(question.subject)
        time.sleep(0.5)
        return [[question.subject, None, 1, 0.5]]

    question = answers.Question(answers.RELATED, BOARDS[0], 7, 50)
    found: list[Any] = []

    def ask() -> None:
        with app.app_context():
            found.append(
                answers.computed(
                    engine(), org, question, slow, snapshot=True, asked=True, wait=True
                )
            )

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [BOARDS[0]]
    assert found == [[[BOARDS[0], None, 1, 0.5]]] * 3
    # The worker does not wait for a computation under way: it leaves the answer to it.
    forget_answers(app, org)
    busy = threading.Thread(target=ask)
    busy.start()
    time.sleep(0.2)
    with app.app_context():
        skipped = answers.computed(
            engine(), org, question, slow, snapshot=True, asked=False, wait=False
        )
    busy.join()
    assert skipped is None and len(calls) == 2


def test_kept_answers_stay_in_their_org_and_go_with_a_rebuild(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str, history: list[View]
) -> None:
    path = f"/dashboard/{BOARDS[0]}/related"
    assert get(client, make_token(), path)[1]
    stranger = make_token(token_org=f"org-s-{new_id()[:8]}")
    assert get(client, stranger, path)[1] == []
    assert get(client, make_token(user="newcomer"), "/dashboard/recommended")[1]
    assert len(kept(app, org)) == 2
    rebuild_aggregates(app, org)
    assert kept(app, org) == []
