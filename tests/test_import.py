"""``insights-audit import``: a document store's exports brought into the trail, checked against
brute-force answers computed from the documents themselves."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import BASE, TEST_SIGNING_KEY, TokenFactory, bearer, run_sql
from tests.test_cli import CLI, cli
from tests.test_engagement import (
    View,
    get,
    recommended_oracle,
    related_oracle,
    trending_oracle,
)

KEY = {"AUDIT_SIGNING_KEY": TEST_SIGNING_KEY}
DAY = timedelta(days=1)
USERS = [f"user-{n}" for n in range(6)]
BOARDS = sorted(str(uuid.UUID(int=n * 104729 + 7)) for n in range(8))
NAMES = [f"Board {n}" for n in range(len(BOARDS))]


def relaxed_date(at: datetime) -> dict[str, Any]:
    return {"$date": at.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def canonical_date(at: datetime) -> dict[str, Any]:
    return {"$date": {"$numberLong": str(int(at.timestamp() * 1000))}}


def offset_date(at: datetime) -> dict[str, Any]:
    india = timezone(timedelta(hours=5, minutes=30))
    return {"$date": at.astimezone(india).isoformat(timespec="milliseconds")}


def uuid_shapes(board: str) -> list[Any]:
    """One dashboard id in every form an export may hold it."""
    raw = uuid.UUID(board).bytes
    return [
        board,
        board.upper(),
        {"$uuid": board},
        {"$binary": {"base64": base64.b64encode(raw).decode(), "subType": "04"}},
        # Subtype 3 as the Python driver wrote it: the bytes in order.
        {"$binary": {"base64": base64.b64encode(raw).decode(), "subType": "03"}},
    ]


def object_id(at: datetime, rng: random.Random) -> str:
    return f"{int(at.timestamp()):08x}{rng.getrandbits(64):016x}"


@dataclass
class Export:
    """Documents to import, and what the import must make of them."""

    views: list[View] = field(default_factory=list)
    # Per dashboard: the last name its documents reported (by time).
    names: dict[str, str] = field(default_factory=dict)
    named_at: dict[str, datetime] = field(default_factory=dict)
    documents: list[dict[str, Any] | str] = field(default_factory=list)
    # Position (line from 1) -> a word the reject's reason must hold.
    rejects: dict[int, str] = field(default_factory=dict)

    def add(self, document: dict[str, Any] | str, reject: str | None = None) -> None:
        self.documents.append(document)
        if reject is not None:
            self.rejects[len(self.documents)] = reject


def away_from_edges(now: datetime, rng: random.Random, max_days: int) -> datetime:
    """A time in the last ``max_days`` days, never within 10 minutes of a window's edge (whole
    days back from now), so that the windows answer the same while the test runs."""
    while True:
        at = now - timedelta(seconds=rng.uniform(60, max_days * 86_400))
        offset = (now - at).total_seconds() % 86_400
        if 600 < offset < 86_400 - 600:
            return at.replace(microsecond=at.microsecond // 1000 * 1000)


def view_export(org: str, seed: int = 1, count: int = 160) -> Export:
    """View logs in every shape: the ids, dates and UUIDs of Extended JSON, fields in any
    order, optional fields missing, some documents without ``_id``; then bad ones."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    export = Export()
    for n in range(count):
        user, board = rng.choice(USERS), rng.choice(BOARDS)
        at = away_from_edges(now, rng, 40)
        document: dict[str, Any] = {
            "userId": user,
            "dashboardId": rng.choice(uuid_shapes(board)),
            "owner": org,
            "__v": 0,
        }
        if n % 7:
            document["_id"] = rng.choice([{"$oid": object_id(at, rng)}, object_id(at, rng).upper()])
        date = rng.choice([relaxed_date, canonical_date, offset_date])(at)
        document["createdAt" if n % 5 else "viewedAt"] = date
        if n % 3:
            document["userEmail"] = f"{user}@example.com"
        if n % 4 == 0:
            name = f"{NAMES[BOARDS.index(board)]} v{n}"
            document["dashboardName"] = name
            if board not in export.named_at or at >= export.named_at[board]:
                export.names[board], export.named_at[board] = name, at
        items = list(document.items())
        rng.shuffle(items)
        export.add(dict(items))
        export.views.append(View(user, board, at))
    board, at = BOARDS[0], now - 3 * DAY
    export.add('{"userId": "user-1", "dashboardId": ', "not valid JSON")
    export.add(
        {"_id": {"$oid": "zz"}, "userId": "u", "dashboardId": board, "createdAt": relaxed_date(at)},
        "ObjectId",
    )
    export.add(
        {"userId": "u", "dashboardId": board, "createdAt": {"$date": "last tuesday"}},
        "Extended JSON",
    )
    moved = at - timedelta(seconds=5)
    export.add(
        {
            "_id": {"$oid": object_id(moved, rng)},
            "userId": "u",
            "dashboardId": board,
            "createdAt": relaxed_date(at),
        },
        "createdAt's second",
    )
    export.add(
        {"userId": "u", "dashboardId": "not-a-uuid", "createdAt": relaxed_date(at)}, "dashboardId"
    )
    export.add({"dashboardId": board, "createdAt": relaxed_date(at)}, "userId")
    export.add({"userId": "u", "dashboardId": board}, "createdAt")
    export.add(
        {"userId": "u", "dashboardId": board, "createdAt": relaxed_date(now + DAY)}, "future"
    )
    export.add(
        {
            "userId": "u",
            "dashboardId": board,
            "createdAt": relaxed_date(at),
            "owner": "another-org",
        },
        "organisation",
    )
    export.add(
        {
            "userId": "u",
            "dashboardId": board,
            "createdAt": relaxed_date(at),
            "dashboardName": "x" * 257,
        },
        "longer than 256",
    )
    export.add(
        {
            "userId": "u",
            "userEmail": "not an address",
            "dashboardId": board,
            "createdAt": relaxed_date(at),
        },
        "e-mail",
    )
    export.add("[1, 2]", "not a JSON object")
    return export


def write(path: Path, documents: list[dict[str, Any] | str], layout: str, compress: bool) -> Path:
    """The documents as ``mongoexport`` writes them: JSON lines, or one array (where a
    malformed document cannot be written, it is left out)."""
    if layout == "lines":
        body = "".join(
            (document if isinstance(document, str) else json.dumps(document)) + "\n"
            for document in documents
        )
    else:
        parsed = []
        for document in documents:
            if isinstance(document, str):
                try:
                    parsed.append(json.loads(document))
                except ValueError:
                    continue
            else:
                parsed.append(document)
        body = "[" + ",\n".join(json.dumps(document) for document in parsed) + "]"
    data = body.encode()
    if compress:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


# What an import leaves in an org, in an order that depends on neither ids nor transactions.
IMPORTED_STATE = (
    "SELECT type, action, target_id, user_id, created_at, details FROM audit_entries"
    " WHERE org = :org AND type <> 'import' ORDER BY created_at, user_id, target_id",
    "SELECT details FROM audit_entries WHERE org = :org AND type = 'import'",
    "SELECT user_id, dashboard_id, view_count, first_viewed_at, last_viewed_at,"
    " previous_viewed_at FROM view_logs WHERE org = :org ORDER BY 1, 2",
    "SELECT dashboard_id, name, view_count, unique_viewers FROM dashboard_totals"
    " WHERE org = :org ORDER BY 1",
    "SELECT dashboard_id, day, views, unique_viewers, last_viewers, total_views"
    " FROM dashboard_daily_views WHERE org = :org ORDER BY 1, 2",
)


def imported_state(app: Flask, org: str) -> list[list[tuple[Any, ...]]]:
    return [run_sql(app, query, org=org) for query in IMPORTED_STATE]


def run_import(
    database_url: str, org: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli(database_url, "import", "--org", org, *args, env={**KEY, **(env or {})})


def read_rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def api(client: FlaskClient, token: str, path: str) -> Any:
    response = client.get(f"{BASE}{path}", headers=bearer(token))
    assert response.status_code == 200, response.json
    return response.json["data"]


def stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_dashboards_answer(client: FlaskClient, make_token: TokenFactory, export: Export) -> None:
    """recently-viewed, most-viewed (all time and windows), stats, trending, related and
    recommended equal what the views alone imply."""
    views, names = export.views, export.names
    tokens = {user: make_token(user=user, email=f"{user}@example.com") for user in USERS}
    for user, token in tokens.items():
        mine = [view for view in views if view.user == user]
        boards = {view.board for view in mine}
        by_board: list[dict[str, Any]] = sorted(
            (
                {
                    "dashboardId": board,
                    "name": names.get(board),
                    "viewCount": sum(1 for view in mine if view.board == board),
                    "firstViewedAt": stamp(min(v.at for v in mine if v.board == board)),
                    "lastViewedAt": stamp(max(v.at for v in mine if v.board == board)),
                }
                for board in boards
            ),
            key=lambda item: item["dashboardId"],
        )
        expected = sorted(by_board, key=lambda item: item["lastViewedAt"], reverse=True)
        assert api(client, token, "/dashboard/recently-viewed?limit=100") == expected
    token = tokens[USERS[0]]
    for days in (None, 1, 7, 30):
        since = datetime.now(UTC) - timedelta(days=days or 100_000)
        counted = [view for view in views if view.at >= since]
        got = api(
            client, token, f"/dashboard/most-viewed?limit=100{f'&days={days}' if days else ''}"
        )
        expected_counts = {
            board: (
                sum(1 for v in counted if v.board == board),
                len({v.user for v in counted if v.board == board}),
            )
            for board in {v.board for v in counted}
        }
        assert {
            i["dashboardId"]: (i["viewCount"], i["uniqueViewers"]) for i in got
        } == expected_counts
        assert [i["viewCount"] for i in got] == sorted(
            (c for c, _ in expected_counts.values()), reverse=True
        )
        assert all(i["name"] == names.get(i["dashboardId"]) for i in got)
    for board in BOARDS:
        stats = api(client, token, f"/dashboard/{board}/stats?days=30")
        mine = [view for view in views if view.board == board]
        assert stats["totalViews"] == len(mine)
        assert stats["uniqueViewers"] == len({v.user for v in mine})
        assert stats["lastViewedAt"] == (stamp(max(v.at for v in mine)) if mine else None)
        daily = {day["date"]: day["views"] for day in stats["dailyViews"]}
        assert len(daily) == 30
        for date, count in daily.items():
            assert count == sum(1 for v in mine if v.at.date().isoformat() == date)
        # Fewer than ten viewers: every one of them is a top viewer, most views first.
        counts = {user: sum(1 for v in mine if v.user == user) for user in {v.user for v in mine}}
        top = [(t["userId"], t["viewCount"]) for t in stats["topViewers"]]
        assert dict(top) == counts
        assert [count for _, count in top] == sorted(counts.values(), reverse=True)
    for days in (1, 7, 14):
        now, data = get(client, token, f"/dashboard/trending?days={days}&limit=50")
        assert data == trending_oracle(views, names, now, days, 50)
    for board in BOARDS:
        now, data = get(client, token, f"/dashboard/{board}/related?days=30&limit=50")
        assert data == related_oracle(views, names, now, board, 30, 50)
    for user, user_token in tokens.items():
        now, data = get(client, user_token, "/dashboard/recommended?days=30&limit=5")
        assert data == recommended_oracle(views, names, now, user, 30, 5)


@pytest.mark.parametrize(
    ("layout", "compress"), [("lines", False), ("lines", True), ("array", False), ("array", True)]
)
def test_an_imported_view_log_answers_as_its_documents_imply(
    client: FlaskClient,
    make_token: TokenFactory,
    database_url: str,
    org: str,
    tmp_path: Path,
    layout: str,
    compress: bool,
) -> None:
    export = view_export(org)
    path = write(tmp_path / "viewlogs.json", export.documents, layout, compress)
    rejects = tmp_path / "rejects.jsonl"
    result = run_import(database_url, org, "--views", str(path), "--rejects", str(rejects))
    assert result.returncode == 3, result.stderr  # finished, with rejects
    listed = read_rejects(rejects)
    if layout == "lines":
        assert {item["line"]: item["reason"] for item in listed}.keys() == export.rejects.keys()
        for item in listed:
            assert export.rejects[item["line"]] in item["reason"], item
            assert item["document"] == (
                export.documents[item["line"] - 1]
                if isinstance(export.documents[item["line"] - 1], str)
                else json.dumps(export.documents[item["line"] - 1])
            )
    else:  # the line that is not JSON cannot be in an array; array positions count from 0
        assert len(listed) == len(export.rejects) - 1
        assert all("index" in item for item in listed)
    assert f"imported {len(export.views):,}, skipped 0 already present" in result.stdout
    assert_dashboards_answer(client, make_token, export)


def test_importing_the_same_files_again_changes_nothing(
    client: FlaskClient,
    app: Flask,
    make_token: TokenFactory,
    database_url: str,
    org: str,
    tmp_path: Path,
) -> None:
    export = view_export(org, seed=2)
    path = write(tmp_path / "views.json.gz", export.documents, "lines", True)
    first = run_import(database_url, org, "--views", str(path), "--rejects", str(tmp_path / "r"))
    assert first.returncode == 3, first.stderr

    def state() -> list[Any]:
        ids = "SELECT id, txid::text FROM audit_entries WHERE org = :org ORDER BY id"
        return [run_sql(app, ids, org=org), *imported_state(app, org)]

    before = state()
    again = run_import(database_url, org, "--views", str(path), "--rejects", str(tmp_path / "r"))
    assert again.returncode == 3, again.stderr
    assert f"imported 0, skipped {len(export.views):,} already present" in again.stdout
    assert "was recorded before" in again.stdout
    assert state() == before
    records = run_sql(
        app, "SELECT details FROM audit_entries WHERE org = :org AND type = 'import'", org=org
    )
    assert len(records) == 1
    (details,) = records[0]
    assert details["documents"] == len(export.documents)
    assert details["entries"] == len(export.views)
    assert details["rejected"] == len(export.rejects)
    assert details["files"][0]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_dashboards_answer(client, make_token, export)


def entry_documents(
    org: str,
) -> tuple[list[dict[str, Any] | str], list[dict[str, Any]], dict[int, str]]:
    """Audit entries with every Extended JSON value type in their details, and the entries
    the API must then show; plus bad ones (line -> reason)."""
    rng = random.Random(5)
    now = datetime.now(UTC)
    documents: list[dict[str, Any] | str] = []
    expected = []
    nested = {
        "count": {"$numberLong": "9007199254740993"},
        "small": {"$numberInt": "42"},
        "ratio": {"$numberDouble": "0.25"},
        "price": {"$numberDecimal": "19.99"},
        "at": {"$date": "2026-01-02T03:04:05.678Z"},
        "owner": {"$oid": "507f1f77bcf86cd799439011"},
        "ref": {"$uuid": BOARDS[1]},
        "deep": {"list": [1, "two", {"$numberLong": "3"}, None, True]},
        "formula": "=SUM(A1:A9) v2.1",
    }
    shown = {
        "count": 9007199254740993,
        "small": 42,
        "ratio": 0.25,
        "price": "19.99",
        "at": "2026-01-02T03:04:05.678Z",
        "owner": "507f1f77bcf86cd799439011",
        "ref": BOARDS[1],
        "deep": {"list": [1, "two", 3, None, True]},
        "formula": "=SUM(A1:A9) v2.1",
    }
    for n, (kind, action) in enumerate(
        [
            ("kpi", "update"),
            ("mapping", "sync"),
            ("dashboard", "create"),
            ("dashboard", "view"),
            ("kpi", "threshold.update"),
        ]
    ):
        at = away_from_edges(now, rng, 20)
        entry_id = object_id(at, rng)
        target = str(uuid.UUID(int=rng.getrandbits(128)))
        documents.append(
            {
                "requestId": f"req-{n}",
                "details": nested if n == 0 else {"name": f"Thing {n}"},
                "type": kind,
                "_id": {"$oid": entry_id},
                "action": action,
                "targetId": {
                    "$binary": {
                        "base64": base64.b64encode(uuid.UUID(target).bytes).decode(),
                        "subType": "04",
                    }
                },
                "userId": f"user-{n}",
                "userEmail": f"user-{n}@example.com",
                "createdAt": relaxed_date(at),
                "ip": "10.0.0.1",
                "userAgent": "legacy-ui/1.0",
            }
        )
        expected.append(
            {
                "id": entry_id,
                "type": kind,
                "action": action,
                "targetId": target,
                "userId": f"user-{n}",
                "userEmail": f"user-{n}@example.com",
                "recordedBy": "insights-audit:import",
                "details": shown if n == 0 else {"name": f"Thing {n}"},
                "createdAt": stamp(at),
                "requestId": f"req-{n}",
                "ip": "10.0.0.1",
                "userAgent": "legacy-ui/1.0",
            }
        )
    when = relaxed_date(now - DAY)
    target = BOARDS[0]
    base = {"type": "kpi", "action": "x", "targetId": target, "userId": "u", "createdAt": when}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "type": "report"}, "type"),
        ({**base, "action": "Bad Action"}, "action"),
        ({**base, "details": {"blob": "y" * 17_000}}, "bytes as JSON"),
        ({**base, "details": {"n": {"$numberDouble": "NaN"}}}, "finite"),
        ({**base, "details": {"n": {"$numberLong": "99999999999999999999"}}}, "64 bits"),
        ({**base, "details": {"t": {"$timestamp": {"t": 1, "i": 2}}}}, "JSON cannot carry"),
        ({**base, "details": "text"}, "not an object"),
        ({**base, "userId": "u\u0000"}, "NUL"),
    ]
    bad = {len(documents) + n: case for n, case in enumerate(cases, 1)}
    for document, _ in bad.values():
        documents.append(document)
    return documents, expected, {line: reason for line, (_, reason) in bad.items()}


def test_imported_audit_entries_keep_every_field_and_value(
    client: FlaskClient, make_token: TokenFactory, database_url: str, org: str, tmp_path: Path
) -> None:
    documents, expected, bad = entry_documents(org)
    path = write(tmp_path / "entries.json", documents, "lines", False)
    rejects = tmp_path / "rejects.jsonl"
    result = run_import(database_url, org, "--entries", str(path), "--rejects", str(rejects))
    assert result.returncode == 3, result.stderr
    listed = {item["line"]: item["reason"] for item in read_rejects(rejects)}
    assert listed.keys() == bad.keys()
    for line, word in bad.items():
        assert word in listed[line], (line, listed[line])
    token = make_token(roles=("Administrator",))
    for entry in expected:
        assert api(client, token, f"/{entry['id']}") == entry
    kinds = {entry["type"] for entry in expected}
    trail = api(client, token, f"?limit=100&{'&'.join(f'type={k}' for k in kinds)}")
    assert sorted(item["id"] for item in trail) == sorted(entry["id"] for entry in expected)


def test_audit_verify_names_the_imported_files_and_catches_an_edited_entry(
    app: Flask, database_url: str, org: str, tmp_path: Path
) -> None:
    export = view_export(org, seed=3, count=40)
    good = [document for n, document in enumerate(export.documents, 1) if n not in export.rejects]
    path = write(tmp_path / "views.json", good, "lines", False)
    result = run_import(database_url, org, "--views", str(path), "--rejects", str(tmp_path / "r"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "r").exists()  # no rejects, no file
    verified = cli(database_url, "audit", "verify", "--org", org, env=KEY)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"verified {len(good) + 1} entries" in verified.stdout
    assert f"{org}: {len(good)} entries were imported" in verified.stdout
    assert f"{path} (views, sha256 {digest})" in verified.stdout
    run_sql(
        app,
        "UPDATE audit_entries SET user_id = 'someone-else' WHERE id = ("
        " SELECT id FROM audit_entries WHERE org = :org AND recorded_by = 'insights-audit:import'"
        " ORDER BY id LIMIT 1)",
        maintenance=True,
        org=org,
    )
    failed = cli(database_url, "audit", "verify", "--org", org, env=KEY)
    assert failed.returncode == 1
    assert "entry differs from what was sealed" in failed.stdout


def test_an_interrupted_import_run_again_ends_as_one_uninterrupted_run(
    app: Flask, database_url: str, tmp_path: Path
) -> None:
    """Killed after its first batches committed, then run again: the same entries, counters
    and record as an import that was never interrupted (ids derived from content, so that
    the two orgs compared hold the same documents)."""
    rng = random.Random(9)
    now = datetime.now(UTC)
    lines = []
    for n in range(70_000):
        at = now - timedelta(seconds=rng.uniform(60, 30 * 86_400))
        lines.append(
            json.dumps(
                {
                    "userId": f"user-{n % 97}",
                    "dashboardId": BOARDS[n % len(BOARDS)],
                    "createdAt": relaxed_date(
                        at.replace(microsecond=at.microsecond // 1000 * 1000)
                    ),
                }
            )
        )
    path = tmp_path / "views.json"
    path.write_text("\n".join(lines) + "\n")
    whole, broken = f"org-{uuid.uuid4().hex[:8]}", f"org-{uuid.uuid4().hex[:8]}"
    assert run_import(database_url, whole, "--views", str(path)).returncode == 0
    command = subprocess.Popen(
        [CLI, "import", "--org", broken, "--views", str(path)],
        env={**os.environ, "DATABASE_URL": database_url, **KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    count = 0
    while time.monotonic() < deadline and count == 0:
        time.sleep(0.05)
        ((count,),) = run_sql(
            app, "SELECT count(*) FROM audit_entries WHERE org = :org", org=broken
        )
    command.send_signal(signal.SIGKILL)
    command.wait()
    ((landed,),) = run_sql(app, "SELECT count(*) FROM audit_entries WHERE org = :org", org=broken)
    assert 0 < landed < len(lines)  # killed part-way
    again = run_import(database_url, broken, "--views", str(path))
    assert again.returncode == 0, again.stderr
    assert f"imported {len(lines) - landed:,}, skipped {landed:,}" in again.stdout

    assert imported_state(app, broken) == imported_state(app, whole)
    for org in (whole, broken):
        assert cli(database_url, "audit", "verify", "--org", org, env=KEY).returncode == 0


def test_a_dry_run_checks_everything_and_writes_nothing(
    app: Flask, database_url: str, org: str, tmp_path: Path
) -> None:
    export = view_export(org, seed=4, count=30)
    path = write(tmp_path / "views.json", export.documents, "lines", False)
    result = run_import(
        database_url, org, "--views", str(path), "--dry-run", "--rejects", str(tmp_path / "r")
    )
    assert result.returncode == 3
    assert f"Dry run: would import {len(export.views)}, skipped 0" in result.stdout
    assert "Nothing was written." in result.stdout
    assert len(read_rejects(tmp_path / "r")) == len(export.rejects)
    assert run_sql(app, "SELECT count(*) FROM audit_entries WHERE org = :org", org=org) == [(0,)]


def test_fields_are_read_where_map_says_and_standard_input_is_read(
    client: FlaskClient, make_token: TokenFactory, database_url: str, org: str
) -> None:
    at = datetime.now(UTC) - timedelta(hours=3)
    board = BOARDS[2]
    document = {
        "who": {"id": "mapped-user"},
        "board": {"$uuid": board},
        "ts": relaxed_date(at),
        "owner": "someone",
    }
    body = gzip.compress((json.dumps(document) + "\n").encode())
    result = subprocess.run(
        [
            CLI,
            "import",
            "--org",
            org,
            "--views",
            "-",
            "--map",
            "userId=who.id",
            "--map",
            "dashboardId=board",
            "--map",
            "createdAt=ts",
            "--map",
            "org=",
        ],
        input=body,
        env={**os.environ, "DATABASE_URL": database_url, **KEY},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert b"standard input" in result.stdout
    token = make_token(user="mapped-user")
    (item,) = api(client, token, "/dashboard/recently-viewed")
    assert (item["dashboardId"], item["lastViewedAt"]) == (board, stamp(at))


def test_an_id_another_org_holds_is_rejected_not_shared(
    database_url: str, org: str, tmp_path: Path
) -> None:
    export = view_export(org, seed=6, count=10)
    good = [d for n, d in enumerate(export.documents, 1) if n not in export.rejects]
    path = write(tmp_path / "views.json", good, "lines", False)
    first = run_import(database_url, org, "--views", str(path), "--map", "org=")
    assert first.returncode == 0, first.stderr
    other = f"org-{uuid.uuid4().hex[:8]}"
    rejects = tmp_path / "rejects.jsonl"
    second = run_import(
        database_url, other, "--views", str(path), "--map", "org=", "--rejects", str(rejects)
    )
    assert second.returncode == 3
    with_ids = [n for n, d in enumerate(good, 1) if isinstance(d, dict) and "_id" in d]
    listed = read_rejects(rejects)
    assert sorted(item["line"] for item in listed) == with_ids
    assert all("used by another organisation" in item["reason"] for item in listed)


def test_entries_older_than_the_retention_horizon_are_rejected(
    database_url: str, org: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    documents: list[dict[str, Any] | str] = [
        {
            "userId": "u",
            "dashboardId": BOARDS[0],
            "createdAt": relaxed_date(now - timedelta(days=days)),
        }
        for days in (1, 29, 31, 400)
    ]
    path = write(tmp_path / "views.json", documents, "lines", False)
    rejects = tmp_path / "rejects.jsonl"
    result = run_import(
        database_url,
        org,
        "--views",
        str(path),
        "--rejects",
        str(rejects),
        env={"AUDIT_RETENTION_DAYS": "30"},
    )
    assert result.returncode == 3
    assert [item["line"] for item in read_rejects(rejects)] == [3, 4]
    assert all("retention horizon" in item["reason"] for item in read_rejects(rejects))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "at least one --views or --entries"),
        (("--views", "/nonexistent.json"), "no such file"),
        (("--views", "-", "--entries", "-"), "only once"),
        (("--views", "-", "--map", "colour=x"), "FIELD=PATH"),
        (("--views", "-", "--legacy-uuid", "cobol"), "legacy-uuid"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(
    database_url: str, org: str, args: tuple[str, ...], message: str
) -> None:
    result = run_import(database_url, org, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_the_app_role_is_refused_before_anything_is_written(
    app: Flask, app_role_url: str, org: str, tmp_path: Path
) -> None:
    """An import ends by rebuilding the org's counters, which the app role may not: it is told
    so at once, rather than after loading entries it cannot count."""
    export = view_export(org, seed=8, count=5)
    good = [d for n, d in enumerate(export.documents, 1) if n not in export.rejects]
    path = write(tmp_path / "views.json", good, "lines", False)
    result = run_import(app_role_url, org, "--views", str(path))
    assert result.returncode == 1
    assert "only the tables' owner may do" in result.stderr
    assert run_sql(app, "SELECT count(*) FROM audit_entries WHERE org = :org", org=org) == [(0,)]


def test_a_broken_array_is_imported_up_to_the_break_and_the_rest_is_one_reject(
    app: Flask, database_url: str, org: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    good = [
        json.dumps(
            {"userId": f"u{n}", "dashboardId": BOARDS[n], "createdAt": relaxed_date(now - n * DAY)}
        )
        for n in range(1, 4)
    ]
    path = tmp_path / "views.json"
    path.write_text(
        "[" + ",\n".join(good) + ',\n{"userId": "u9", "dashboardId": }, ' + good[0] + "]"
    )
    rejects = tmp_path / "rejects.jsonl"
    result = run_import(database_url, org, "--views", str(path), "--rejects", str(rejects))
    assert result.returncode == 3, result.stderr
    (reject,) = read_rejects(rejects)
    assert reject["index"] == 3
    assert "the array is not valid JSON from here on" in reject["reason"]
    assert run_sql(
        app, "SELECT count(*) FROM audit_entries WHERE org = :org AND type = 'dashboard'", org=org
    ) == [(3,)]
    # The file's SHA-256 covers all of it, not only what could be read.
    assert hashlib.sha256(path.read_bytes()).hexdigest() in result.stdout
