"""``GET {base}/reports/usage`` and ``insights-audit report usage``, checked against a
brute-force oracle over the view entries."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from insights_audit.web.schemas import format_timestamp
from tests.conftest import BASE, TokenFactory, bearer, new_id, run_sql
from tests.test_cli import CLI, cli
from tests.test_engagement import View, write_views

AUDITOR = ("Auditor",)
DAY = timedelta(days=1)
USERS = [f"user-{n}" for n in range(5)]
BOARDS = sorted(str(uuid.UUID(int=n * 104729 + 3)) for n in range(7))
# Names that a spreadsheet would run, or split on a list separator.
NAMES = {BOARDS[0]: "=SUM(A1)", BOARDS[1]: "Sales; Q3", BOARDS[2]: '"Quoted", name'}
NEVER_VIEWED = str(uuid.UUID(int=999))


@pytest.fixture
def views(app: Flask, org: str) -> list[View]:
    rng = random.Random(org)
    now = datetime.now(UTC)
    found = [
        View(
            rng.choice(USERS),
            rng.choice(BOARDS[:-1]),
            now - timedelta(seconds=rng.uniform(5, 50 * 86400)),
        )
        for _ in range(300)
    ]
    # The last board is viewed only long ago; one more is only named, never viewed.
    found.append(View(USERS[0], BOARDS[-1], now - 60 * DAY))
    write_views(app, org, found, {**NAMES, NEVER_VIEWED: "Never opened"})
    emails = {user: f"{user}@example.com" for user in USERS[:3]}
    for user, email in emails.items():
        run_sql(
            app,
            "UPDATE audit_entries SET user_email = :email WHERE org = :org AND user_id = :user",
            maintenance=True,
            org=org,
            user=user,
            email=email,
        )
    return found


def oracle(
    views: list[View], names: dict[str, str], since: datetime, until: datetime
) -> dict[str, Any]:
    kept = [view for view in views if since <= view.at < until]
    days = []
    day = since.date()
    while datetime.combine(day, datetime.min.time(), UTC) < until:
        on_day = [view for view in kept if view.at.date() == day]
        days.append(
            {
                "date": day.isoformat(),
                "views": len(on_day),
                "uniqueViewers": len({view.user for view in on_day}),
            }
        )
        day += timedelta(days=1)
    boards: list[dict[str, Any]] = []
    for board in {view.board for view in kept}:
        of_board = [view for view in kept if view.board == board]
        boards.append(
            {
                "dashboardId": board,
                "name": names.get(board),
                "views": len(of_board),
                "uniqueViewers": len({view.user for view in of_board}),
                "firstViewedAt": format_timestamp(min(view.at for view in of_board)),
                "lastViewedAt": format_timestamp(max(view.at for view in of_board)),
            }
        )
    boards.sort(key=lambda item: (-item["views"], item["dashboardId"]))
    users: list[dict[str, Any]] = []
    for user in {view.user for view in kept}:
        of_user = [view for view in kept if view.user == user]
        users.append(
            {
                "userId": user,
                "userEmail": f"{user}@example.com" if user in USERS[:3] else None,
                "views": len(of_user),
                "dashboards": len({view.board for view in of_user}),
                "lastViewedAt": format_timestamp(max(view.at for view in of_user)),
            }
        )
    users.sort(key=lambda item: (-item["views"], item["userId"]))
    viewed = {view.board for view in kept}
    known = {view.board for view in views} | set(names)
    stale: list[dict[str, Any]] = []
    for board in known - viewed:
        before = [view.at for view in views if view.board == board and view.at < until]
        stale.append(
            {
                "dashboardId": board,
                "name": names.get(board),
                "lastViewedAt": max(before) if before else None,
            }
        )
    stale.sort(
        key=lambda item: (
            item["lastViewedAt"] is not None,
            item["lastViewedAt"] or 0,
            item["dashboardId"],
        )
    )
    for item in stale:
        item["lastViewedAt"] = item["lastViewedAt"] and format_timestamp(item["lastViewedAt"])
    return {
        "since": format_timestamp(since),
        "until": format_timestamp(until),
        "views": len(kept),
        "uniqueViewers": len({view.user for view in kept}),
        "activeDashboards": len(viewed),
        "dailyViews": days,
        "dashboards": boards,
        "users": users,
        "staleDashboards": stale,
    }


def report(client: FlaskClient, token: str, query: str = "") -> Any:
    response = client.get(f"{BASE}/reports/usage?{query}", headers=bearer(token))
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response


ALL_NAMES = {**NAMES, NEVER_VIEWED: "Never opened"}


@pytest.mark.parametrize(("ago", "length"), [(10, 7), (45, 30), (3, 1), (50, 50), (400, 366)])
def test_a_period_equals_the_oracle(
    client: FlaskClient, make_token: TokenFactory, views: list[View], ago: int, length: int
) -> None:
    now = datetime.now(UTC)
    since = (now - ago * DAY).replace(microsecond=123000)
    until = since + length * DAY
    query = f"since={format_timestamp(since)}&until={format_timestamp(until)}"
    body = report(client, make_token(roles=AUDITOR), query).json
    assert body["message"] == "Successfully retrieved usage report"
    assert body["data"] == oracle(views, ALL_NAMES, since, until)
    assert list(body["data"]) == list(oracle(views, ALL_NAMES, since, until))


def test_the_default_period_is_the_last_30_days(
    client: FlaskClient, make_token: TokenFactory, views: list[View]
) -> None:
    data = report(client, make_token(roles=AUDITOR)).json["data"]
    until = datetime.fromisoformat(data["until"])
    since = datetime.fromisoformat(data["since"])
    assert until - since == 30 * DAY
    assert abs((datetime.now(UTC) - until).total_seconds()) < 5
    # The server's moment has microseconds the answer rounds away: compare the rest.
    expected = oracle(views, ALL_NAMES, since, until + timedelta(milliseconds=1))
    assert data["views"] == expected["views"] and data["dashboards"] == expected["dashboards"]


def test_the_csv_reads_back_as_the_json_dashboards(
    client: FlaskClient, make_token: TokenFactory, views: list[View]
) -> None:
    token = make_token(roles=AUDITOR)
    data = report(client, token, "").json["data"]
    response = report(client, token, "format=csv")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    text = response.get_data(as_text=True)
    assert text.startswith("dashboardId,name,views,uniqueViewers,firstViewedAt,lastViewedAt\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    expected = [
        {key: ("" if value is None else str(value)) for key, value in item.items()}
        for item in data["dashboards"]
    ]
    for item in expected:
        if item["name"].startswith("="):
            item["name"] = "'" + item["name"]  # defused for spreadsheets
    assert rows == expected
    for line in text.split("\r\n")[1:-1]:
        assert line.startswith('"') and line.endswith('"')  # every cell quoted
    assert '"\'=SUM(A1)"' in text and '"Sales; Q3"' in text


def test_the_cli_writes_the_same_bytes(
    client: FlaskClient,
    database_url: str,
    make_token: TokenFactory,
    org: str,
    views: list[View],
    tmp_path: Path,
) -> None:
    token = make_token(roles=AUDITOR)
    period = ["--since", "2026-01-01T00:00:00Z", "--until", "2026-12-01T00:00:00+00:00"]
    query = "since=2026-01-01T00:00:00Z&until=2026-12-01T00:00:00%2B00:00"
    for fmt in ("json", "csv"):
        api = report(client, token, f"{query}&format={fmt}").get_data()
        out = tmp_path / f"report.{fmt}"
        result = cli(
            database_url,
            "report",
            "usage",
            "--org",
            org,
            *period,
            "--format",
            fmt,
            "--out",
            str(out),
        )
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == api


def test_the_cli_refuses_a_bad_period(database_url: str, org: str) -> None:
    result = cli(database_url, "report", "usage", "--org", org, "--since", "2026-01-01")
    assert result.returncode == 2 and "since" in result.stderr


def test_another_orgs_views_never_move_the_report(
    app: Flask, client: FlaskClient, make_token: TokenFactory, views: list[View]
) -> None:
    token = make_token(roles=AUDITOR)
    query = "since=2026-01-01T00:00:00Z&until=2026-12-01T00:00:00Z"
    before = report(client, token, query).get_data()
    other = f"org-r-{new_id()[:8]}"
    now = datetime.now(UTC)
    write_views(app, other, [View(USERS[0], board, now - DAY) for board in BOARDS], {})
    assert report(client, token, query).get_data() == before


@pytest.mark.parametrize(
    "query",
    [
        "since=2026-01-01T00:00:00Z&until=2027-01-03T00:00:00Z",
        "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=2026-01-01",
        "until=tomorrow",
        "format=xml",
        "limit=3",
        "since=2099-01-01T00:00:00Z",
        "since=2020-01-01T00:00:00Z",
    ],
)
def test_bad_periods_are_400(client: FlaskClient, make_token: TokenFactory, query: str) -> None:
    response = client.get(
        f"{BASE}/reports/usage?{query}", headers=bearer(make_token(roles=AUDITOR))
    )
    assert response.status_code == 400 and response.json["errors"]["query"], query


def test_366_days_is_the_longest_period(client: FlaskClient, make_token: TokenFactory) -> None:
    token = make_token(roles=AUDITOR)
    data = report(client, token, "since=2025-01-01T00:00:00Z&until=2026-01-02T00:00:00Z").json[
        "data"
    ]
    assert len(data["dailyViews"]) == 366


@pytest.mark.parametrize("role", ["Users", "Power User"])
def test_reports_are_for_auditors_and_administrators(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    response = client.get(f"{BASE}/reports/usage", headers=bearer(make_token(roles=(role,))))
    assert response.status_code == 403
    for allowed in ("Opsera Administrator", "Administrator", "Auditor", "Security Manager"):
        token = make_token(roles=(allowed,), scopes=("api-readonly",))
        assert client.get(f"{BASE}/reports/usage", headers=bearer(token)).status_code == 200


def test_an_empty_org_gets_zeros_and_zero_filled_days(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    query = "since=2026-03-01T12:00:00Z&until=2026-03-03T00:00:00Z"
    data = report(client, make_token(roles=AUDITOR), query).json["data"]
    assert (data["views"], data["uniqueViewers"], data["activeDashboards"]) == (0, 0, 0)
    assert data["dailyViews"] == [
        {"date": str(date(2026, 3, day)), "views": 0, "uniqueViewers": 0} for day in (1, 2)
    ]
    assert data["dashboards"] == data["users"] == data["staleDashboards"] == []


def test_a_viewers_email_is_that_of_their_latest_view_in_the_period_that_has_one(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    """Of two views at the same moment the greater id is the later; a later view without
    an e-mail, and one after the period, do not count."""
    now = datetime.now(UTC).replace(microsecond=0)
    moments = [now - 3 * DAY, now - 2 * DAY, now - 2 * DAY, now - DAY, now]
    write_views(app, org, [View("mover", BOARDS[0], at) for at in moments], {})
    ids = [
        row[0]
        for row in run_sql(
            app,
            "SELECT id FROM audit_entries WHERE org = :org AND user_id = 'mover'"
            " ORDER BY created_at, id",
            maintenance=True,
            org=org,
        )
    ]
    emails = ["old@example.com", "tied-lower@example.com", "tied-greater@example.com", None]
    for entry_id, email in zip(ids, [*emails, "after@example.com"], strict=True):
        run_sql(
            app,
            "UPDATE audit_entries SET user_email = :email WHERE org = :org AND id = :id",
            maintenance=True,
            org=org,
            id=entry_id,
            email=email,
        )
    until = format_timestamp(now - timedelta(seconds=1))
    since = format_timestamp(now - 10 * DAY)
    data = report(client, make_token(roles=AUDITOR), f"since={since}&until={until}").json["data"]
    assert [(u["userId"], u["userEmail"], u["views"]) for u in data["users"]] == [
        ("mover", "tied-greater@example.com", 4)
    ]


def test_the_cli_tells_a_person_at_a_terminal_how_long_it_counted(
    database_url: str, org: str, views: list[View]
) -> None:
    """Standard error a terminal: the count and its seconds are shown there, and standard
    output carries the same bytes as without a terminal."""
    period = ["--since", "2026-01-01T00:00:00Z", "--until", "2026-12-01T00:00:00Z"]
    plain = cli(database_url, "report", "usage", "--org", org, *period)
    assert plain.returncode == 0 and plain.stderr == ""
    controller, terminal = os.openpty()
    try:
        watched = subprocess.run(
            [CLI, "report", "usage", "--org", org, *period],
            env={**os.environ, "DATABASE_URL": database_url},
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
            check=False,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert watched.returncode == 0
    assert watched.stdout.decode() == plain.stdout
    assert re.search(rf"Counting the views of {org}: \d+\.\d s", shown.decode()), shown
