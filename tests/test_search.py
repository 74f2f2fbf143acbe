"""``GET {base}``: the org's whole trail searched, checked against a brute-force oracle."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db.engine import ENGINE_KEY
from insights_audit.db.unit_of_work import transaction
from insights_audit.trail import queries
from tests.conftest import BASE, TEST_SIGNING_KEY, TokenFactory, bearer, new_id, run_sql

AUDITOR = ("Auditor",)
START = datetime(2026, 3, 1, tzinfo=UTC)
TARGETS = [str(uuid.UUID(int=n + 1)) for n in range(4)]
USERS = ["ana", "bo", "chen", "dana"]
ACTIONS = ["view", "settings.threshold", "settings.owner", "set", "delete", "share.link"]
DETAILS = [
    {},
    {"name": "Ventes été"},
    {"note": "Threshold raised to 90%", "nested": {"deep": ["Ünïcode ÉCLAIR", 3]}},
    {"name": "Q3 (draft), v2"},
    {"reason": '=HYPERLINK("x")', "n": 1},
    {"k": ["under_score", "per%cent"]},
]


@pytest.fixture
def trail(app: Flask, org: str) -> list[dict[str, Any]]:
    """A small org trail spread over 20 days, written as the table owner; returned as the
    oracle sees it."""
    entries = []
    for n in range(72):
        entry = {
            "type": ["dashboard", "kpi", "mapping"][n % 3],
            "action": ACTIONS[n % len(ACTIONS)],
            "targetId": TARGETS[n % len(TARGETS)],
            "userId": USERS[n % len(USERS)],
            "userEmail": f"{USERS[n % len(USERS)]}@Example.com" if n % 5 else None,
            "details": DETAILS[n % len(DETAILS)],
            "createdAt": START + timedelta(hours=7 * n),
        }
        if entry["action"] == "view":
            entry["type"] = "dashboard"
        entries.append(entry)
        run_sql(
            app,
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, user_email,"
            " details, created_at) VALUES (audit_object_id(:at), :org, :type, :action,"
            " CAST(:target AS uuid), :user, :email, CAST(:details AS jsonb), :at)",
            org=org,
            type=entry["type"],
            action=entry["action"],
            target=entry["targetId"],
            user=entry["userId"],
            email=entry["userEmail"],
            details=json.dumps(entry["details"]),
            at=entry["createdAt"],
        )
    ids = run_sql(app, "SELECT id FROM audit_entries WHERE org = :org ORDER BY created_at", org=org)
    for entry, (entry_id,) in zip(entries, ids, strict=True):
        entry["id"] = entry_id
    return entries


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return []


def oracle(trail: list[dict[str, Any]], query: dict[str, Any]) -> list[str]:
    """The ids a search must return, newest first, by brute force."""

    def keeps(entry: dict[str, Any]) -> bool:
        if "type" in query and entry["type"] not in query["type"]:
            return False
        if "action" in query and not any(
            entry["action"].startswith(a[:-1]) if a.endswith("*") else entry["action"] == a
            for a in query["action"]
        ):
            return False
        if "targetId" in query and entry["targetId"] != query["targetId"]:
            return False
        if "userId" in query and entry["userId"] not in query["userId"]:
            return False
        if "since" in query and entry["createdAt"] < query["since"]:
            return False
        if "until" in query and entry["createdAt"] >= query["until"]:
            return False
        texts = [entry["action"], entry["userId"], entry["userEmail"] or ""]
        texts += strings_in(entry["details"])
        return all(
            any(word.lower() in text.lower() for text in texts)
            for word in query.get("q", "").split()
        )

    kept = [entry for entry in trail if keeps(entry)]
    kept.sort(key=lambda entry: (entry["createdAt"], entry["id"]), reverse=True)
    return [entry["id"] for entry in kept]


def search_all(client: FlaskClient, token: str, query: dict[str, Any], limit: int) -> list[str]:
    """Every page of a search, following the Link header; the ids in order."""
    params: list[tuple[str, str]] = [("limit", str(limit))]
    for name, value in query.items():
        values = value if isinstance(value, list) else [value]
        params += [(name, v.isoformat() if isinstance(v, datetime) else v) for v in values]
    response = client.get(BASE, query_string=params, headers=bearer(token))
    ids: list[str] = []
    while True:
        assert response.status_code == 200, response.json
        body = response.json
        assert body["message"] == "Successfully retrieved audit logs"
        assert len(body["data"]) <= limit
        ids += [entry["id"] for entry in body["data"]]
        if body["pagination"]["nextCursor"] is None:
            assert "Link" not in response.headers
            return ids
        link = response.headers["Link"]
        url = link[1 : link.index(">")].removeprefix("http://localhost")
        response = client.get(url, headers=bearer(token))


GRID: list[dict[str, Any]] = [
    {},
    {"type": ["kpi"]},
    {"type": ["kpi", "mapping"]},
    {"action": ["settings.*"]},
    {"action": ["set"]},
    {"action": ["set*"]},
    {"action": ["view", "delete"]},
    {"targetId": TARGETS[1]},
    {"userId": ["bo"]},
    {"userId": ["bo", "dana"]},
    {"since": START + timedelta(days=5)},
    {"until": START + timedelta(days=5)},
    {"since": START + timedelta(days=3), "until": START + timedelta(days=4)},
    {"q": "threshold"},
    {"q": "THRESHOLD raised"},
    {"q": "été"},
    {"q": "ÉTÉ"},
    {"q": "éclair"},
    {"q": "(draft),"},
    {"q": "per%cent"},
    {"q": "under_"},
    {"q": "raised THRESHOLD threshold"},
    {"q": "example.com"},
    {"q": "=hyperlink"},
    {"q": "nothing-matches-this"},
    {"type": ["dashboard"], "action": ["settings.*"], "userId": ["ana", "chen"]},
    {"targetId": TARGETS[0], "q": "ventes", "since": START + timedelta(days=2)},
]


@pytest.mark.parametrize("query", GRID, ids=[json.dumps(q, default=str) for q in GRID])
def test_search_returns_exactly_what_the_oracle_keeps(
    client: FlaskClient,
    make_token: TokenFactory,
    trail: list[dict[str, Any]],
    query: dict[str, Any],
) -> None:
    token = make_token(roles=AUDITOR, scopes=("api-readonly",))
    assert search_all(client, token, query, limit=7) == oracle(trail, query)


def test_every_pair_of_filters_agrees_with_the_oracle(
    client: FlaskClient, make_token: TokenFactory, trail: list[dict[str, Any]]
) -> None:
    token = make_token(roles=AUDITOR)
    singles = [query for query in GRID if len(query) == 1]
    for first, second in itertools.combinations(singles, 2):
        if set(first) & set(second):
            continue
        query = {**first, **second}
        if query.get("since", START) >= query.get("until", START + timedelta(days=99)):
            continue  # an empty window is a 400, tested below
        assert search_all(client, token, query, limit=50) == oracle(trail, query), query


def test_search_pages_visit_each_match_once(
    client: FlaskClient, make_token: TokenFactory, trail: list[dict[str, Any]]
) -> None:
    ids = search_all(client, make_token(roles=AUDITOR), {}, limit=1)
    assert len(ids) == len(set(ids)) == len(trail)


@pytest.mark.parametrize("role", ["Users", "Power User"])
def test_search_is_for_auditors_and_administrators(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    response = client.get(BASE, headers=bearer(make_token(roles=(role,))))
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["Opsera Administrator", "Administrator", "Security Manager"])
def test_search_is_open_to_oversight_roles(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    assert client.get(BASE, headers=bearer(make_token(roles=(role,)))).status_code == 200


def test_another_orgs_cursor_is_refused(
    client: FlaskClient, make_token: TokenFactory, trail: list[dict[str, Any]]
) -> None:
    mine = client.get(f"{BASE}?limit=1", headers=bearer(make_token(roles=AUDITOR)))
    cursor = mine.json["pagination"]["nextCursor"]
    stranger = make_token(roles=AUDITOR, token_org=f"org-x-{new_id()[:8]}")
    response = client.get(f"{BASE}?cursor={cursor}", headers=bearer(stranger))
    assert response.status_code == 400 and "cursor" in response.json["errors"]["query"]


@pytest.mark.parametrize(
    "query",
    [
        "type=view",
        "action=Settings",
        "action=*",
        "action=a**",
        "action=view%0A",
        "targetId=nope",
        "userId=",
        "q=",
        "q=%20%20",
        "q=" + "x" * 201,
        "q=%25",
        "q=threshold%20to",
        "q=" + "%20".join(f"w{n:02d}" for n in range(11)),
        "limit=0",
        "limit=1001",
        "since=2026-03-01",
        "since=2026-03-02T00:00:00Z&until=2026-03-01T00:00:00Z",
        "unknown=1",
    ],
)
def test_bad_search_filters_are_400(
    client: FlaskClient, make_token: TokenFactory, query: str
) -> None:
    response = client.get(f"{BASE}?{query}", headers=bearer(make_token(roles=AUDITOR)))
    assert response.status_code == 400, query
    assert response.json["errors"]["query"]


@pytest.mark.parametrize("path", ["", "/export"])
def test_a_nul_in_any_repeated_value_is_a_400(
    client: FlaskClient, make_token: TokenFactory, path: str
) -> None:
    response = client.get(
        f"{BASE}{path}?userId=a&userId=b%00c", headers=bearer(make_token(roles=AUDITOR))
    )
    assert response.status_code == 400 and response.json["errors"]["query"]


def test_a_user_id_filter_takes_1_to_255_characters(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    token = make_token(roles=AUDITOR)
    for value, status in (("u", 200), ("u" * 255, 200), ("u" * 256, 400), ("", 400)):
        response = client.get(f"{BASE}?userId={value}", headers=bearer(token))
        assert response.status_code == status, len(value)


def test_a_search_page_holds_100_entries_unless_told(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    body = client.get(BASE, headers=bearer(make_token(roles=AUDITOR))).json
    assert body["pagination"]["limit"] == 100


def test_the_openapi_document_gives_lists_and_required_fields(client: FlaskClient) -> None:
    """What generated clients rely on: the pages' data are lists of entries, and the feed's
    pagination always has its three fields."""
    schemas = client.get("/openapi.json").json["components"]["schemas"]
    entries = {"type": "array", "items": {"$ref": "#/components/schemas/Entry"}}
    for name in ("DashboardAuditLogs", "KpiAuditLogs", "MappingAuditLogs", "AuditLogSearch"):
        assert schemas[name]["properties"]["data"] == entries, name
        assert set(schemas[name]["required"]) == {"data", "message", "pagination"}
    assert schemas["AuditLogFeed"]["properties"]["data"] == entries
    assert set(schemas["FeedPagination"]["required"]) == {"limit", "nextCursor", "hasMore"}


def test_search_limits_are_inclusive(client: FlaskClient, make_token: TokenFactory) -> None:
    """``limit`` 1..1000 and ``q`` up to 200 characters and 10 distinct words (repeats, in
    any case, count once) are accepted, both ends included."""
    token = make_token(roles=AUDITOR)
    ten_words = "%20".join(f"w{n:02d}" for n in range(10))
    repeated = "%20".join(["abc", "ABC"] * 20)
    for query in ("limit=1", "limit=1000", "q=" + "x" * 200, "q=" + ten_words, "q=" + repeated):
        assert client.get(f"{BASE}?{query}", headers=bearer(token)).status_code == 200, query


def test_a_search_page_is_bound_by_the_statement_timeout(
    app: Flask, database_url: str, make_token: TokenFactory
) -> None:
    """Second review, finding 3: no search page may hold a thread past the statement timeout
    (here a page that waits on a lock: 503 in the envelope, not a wait)."""
    quick = create_app(dataclasses.replace(app.config["SETTINGS"], statement_timeout_ms=200))
    token = make_token(roles=AUDITOR)
    try:
        with psycopg.connect(database_url) as holder:
            holder.execute("LOCK TABLE audit_entries IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            response = quick.test_client().get(
                f"{BASE}?q=threshold&limit=1000", headers=bearer(token)
            )
            waited = time.monotonic() - started
        assert response.status_code == 503 and response.json["code"] == 503
        assert waited < 3
    finally:
        quick.extensions[ENGINE_KEY].dispose()


# ---- as the app role, under row-level security ------------------------------------------


# Rows the org's partitions gave to table scans and index fetches, and scans of their
# trigram index, in the current transaction: this search's reads alone, whatever else the
# server does meanwhile (autovacuum, another test's leftovers).
TRANSACTION_READS = """
SELECT coalesce(sum(t.seq_tup_read), 0), coalesce(sum(t.idx_tup_fetch), 0),
       (SELECT coalesce(sum(pg_stat_get_xact_numscans(i.indexrelid)), 0)
        FROM pg_stat_user_indexes AS i
        WHERE i.relname LIKE 'audit_entries_%' AND i.indexrelname LIKE '%text%')
FROM pg_stat_xact_user_tables AS t WHERE t.relname LIKE 'audit_entries_%'
"""


def _search_as_app_role(
    app_role_url: str, org: str, words: tuple[str, ...]
) -> tuple[list[str], dict[str, int]]:
    """One search page as the service runs it (the app role, the org's policy), and what it
    read."""
    service = create_app(Settings(database_url=app_role_url, audit_signing_key=TEST_SIGNING_KEY))
    with service.app_context(), transaction(org) as connection:
        page = queries.search_page(connection, org, queries.TrailFilter(words=words), limit=100)
        row = connection.execute(text(TRANSACTION_READS)).one()
    reads = {"table_rows": int(row[0]), "fetched": int(row[1]), "text_scans": int(row[2])}
    return [entry["id"] for entry in json.loads(page.data)], reads


def _matching(app: Flask, org: str, word: str) -> list[str]:
    rows = run_sql(
        app,
        "SELECT id FROM audit_entries WHERE org = :org"
        " AND audit_search_text(action, user_id, user_email, details) LIKE :pattern"
        " ORDER BY created_at DESC, id DESC LIMIT 100",
        org=org,
        pattern=f"%{word.lower()}%",
    )
    return [entry_id for (entry_id,) in rows]


def test_as_the_app_role_a_common_word_walks_the_newest_entries_and_a_rare_one_its_index(
    app: Flask, app_role_url: str, big_org: str
) -> None:
    _analyze_trail(app)
    (rare,) = run_sql(
        app,
        "SELECT user_id FROM audit_entries WHERE org = :org GROUP BY user_id"
        " HAVING count(*) BETWEEN 5 AND 60 ORDER BY count(*) LIMIT 1",
        org=big_org,
    )[0:1]
    cases = {"common": "view", "rare": rare[0], "absent": "zq-nowhere-qz"}
    for kind, word in cases.items():
        found, read = _search_as_app_role(app_role_url, big_org, (word,))
        assert found == _matching(app, big_org, word), kind
        # Never a scan of the org's 40,000 entries.
        assert read["table_rows"] == 0, (kind, read)
        assert read["fetched"] <= 2_000, (kind, read)
        if kind == "common":
            assert len(found) == 100 and read["text_scans"] == 0, (kind, read)
        else:
            assert read["text_scans"] > 0, (kind, read)


def test_a_word_only_in_an_old_month_is_found_and_pages_cross_months(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    run_sql(app, "SELECT audit_ensure_partitions((current_date - 200)::date, current_date)")
    old = []
    for age_days in (0, 0, 40, 40, 130, 130, 131):
        note = "zzmark " + ("oldword" if age_days > 100 else "newer")
        ((entry_id,),) = run_sql(
            app,
            "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, details,"
            " created_at) SELECT audit_object_id(at), :org, 'kpi', 'note', gen_random_uuid(),"
            " 'u', jsonb_build_object('note', CAST(:note AS text)), at"
            " FROM (SELECT now() - make_interval(days => :age) AS at) AS t RETURNING id",
            org=org,
            note=note,
            age=age_days,
        )
        if age_days > 100:
            old.append(entry_id)
    token = make_token(roles=AUDITOR)
    assert set(search_all(client, token, {"q": "oldword"}, limit=100)) == set(old)
    in_order = run_sql(
        app,
        "SELECT id FROM audit_entries WHERE org = :org ORDER BY created_at DESC, id DESC",
        org=org,
    )
    # A page of one at a time, across three months: every match once, newest first.
    assert search_all(client, token, {"q": "zzmark"}, limit=1) == [row[0] for row in in_order]


def _analyze_trail(app: Flask) -> None:
    """Fresh planner statistics of the whole trail (1,000 samples a month's text: slow on a
    busy machine, so without the statement timeout)."""
    with app.app_context(), transaction() as connection:
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("ANALYZE audit_entries"))


def _entries_as_the_oracle_sees_them(app: Flask, org: str) -> list[dict[str, Any]]:
    rows = run_sql(
        app,
        "SELECT id, action, user_id, user_email, details, created_at FROM audit_entries"
        " WHERE org = :org",
        org=org,
    )
    return [
        {"id": row[0], "action": row[1], "userId": row[2], "userEmail": row[3]}
        | {"details": row[4], "createdAt": row[5], "type": "kpi", "targetId": None}
        for row in rows
    ]


def test_every_way_a_page_is_found_agrees_with_the_oracle(
    app: Flask, client: FlaskClient, make_token: TokenFactory, app_role_url: str, org: str
) -> None:
    """Words that fill a page in the first walk, in the second, only through the trigram
    index month by month; words the cheap test may not be used for (a double quote, a
    backslash); a word in a key of ``details`` everywhere and in a value rarely (the cheap
    test keeps every entry, the searchable text a few); case folding beyond ASCII; a word
    per field."""
    run_sql(app, "SELECT audit_ensure_partitions((current_date - 120)::date, current_date)")
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, details,"
        " created_at) SELECT audit_object_id(at), :org, 'kpi', 'note', gen_random_uuid(),"
        " 'u-' || (g % 7), jsonb_build_object('note', concat_ws(' ',"
        "   CASE WHEN g % 20 = 0 THEN 'Dense' END, CASE WHEN g % 450 = 3 THEN 'sparse' END,"
        "   CASE WHEN g % 1000 = 999 THEN 'say\"hi back\\slash ÉCLAIRZ keyonly' END),"
        "   'keyonly' || (g % 3), 'v'), at"
        " FROM generate_series(1, 6000) AS g,"
        " LATERAL (SELECT now() - make_interval(mins => g * 25) AS at) AS t",
        org=org,
    )
    entries = _entries_as_the_oracle_sees_them(app, org)
    token = make_token(roles=AUDITOR)
    words = ["dense", "sparse", 'say"hi', "back\\slash", "éclairz", "keyonly", "sparse u-3"]
    words += ["note", "absentword"]
    for word in words:
        expected = oracle(entries, {"q": word})
        assert search_all(client, token, {"q": word}, limit=100) == expected, word
        assert search_all(client, token, {"q": word}, limit=37) == expected, word
    assert len(oracle(entries, {"q": "keyonly"})) == 6
    assert len(oracle(entries, {"q": "dense"})) == 300

    # The 5% word: the second walk fills the first page, without the trigram index.
    _analyze_trail(app)
    found, read = _search_as_app_role(app_role_url, org, ("dense",))
    assert found == oracle(entries, {"q": "dense"})[:100]
    assert read["text_scans"] == 0 and read["table_rows"] == 0, read
    assert 500 < read["fetched"] <= 5_000, read


def test_words_between_common_and_rare_are_read_a_stretch_of_time_at_a_time(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    """A word the walks find too seldom to fill the page but not never: the trigram index is
    asked for stretches of time sized by how often it was found (planned with the index's
    statistics: the search role bypasses the policies when a superuser migrated); paging
    through every stretch and month boundary visits each match once, in order."""
    ((bypasses,),) = run_sql(
        app, "SELECT rolbypassrls FROM pg_roles WHERE rolname = 'insights_audit_search'"
    )
    assert bypasses
    run_sql(app, "SELECT audit_ensure_partitions((current_date - 60)::date, current_date)")
    run_sql(
        app,
        "INSERT INTO audit_entries (id, org, type, action, target_id, user_id, details,"
        " created_at) SELECT audit_object_id(at), :org, 'kpi', 'note', gen_random_uuid(),"
        " 'u', jsonb_build_object('n', concat_ws(' ', CASE WHEN g % 60 = 7 THEN 'midword' END,"
        "   CASE WHEN g % 400 = 9 THEN 'slowword' END)), at"
        " FROM generate_series(1, 20000) AS g,"
        # Seven entries a moment (as a bulk import writes them), a moment every ten minutes.
        " LATERAL (SELECT date_trunc('second', now()) - make_interval(secs => g / 7 * 600)"
        "   AS at) AS t",
        org=org,
    )
    _analyze_trail(app)
    entries = _entries_as_the_oracle_sees_them(app, org)
    token = make_token(roles=AUDITOR)
    for word in ("midword", "slowword", "NOTE midword"):
        expected = oracle(entries, {"q": word})
        assert expected, word
        assert search_all(client, token, {"q": word}, limit=100) == expected, word
        assert search_all(client, token, {"q": word}, limit=23) == expected, word


def test_every_month_samples_a_thousand_searchable_texts_for_the_planner(app: Flask) -> None:
    """Migration 0018's statistics target on the searchable text reaches the partitions that
    existed and those made later (without it, a word under 1% of a month is guessed)."""
    run_sql(app, "SELECT audit_ensure_partitions(date '2031-05-01', date '2031-05-01')")
    targets = run_sql(
        app,
        "SELECT i.inhrelid::regclass::text, a.attstattarget FROM pg_inherits i"
        " JOIN pg_attribute a ON a.attrelid = i.inhrelid AND a.attnum = 1"
        " WHERE i.inhparent = 'ix_audit_entries_text'::regclass",
    )
    assert any("p203105" in name for name, _ in targets), targets
    assert {target for _, target in targets} == {1000}, targets


def test_an_org_runs_its_word_searches_one_at_a_time(
    app: Flask, database_url: str, make_token: TokenFactory, org: str
) -> None:
    """While one search with words holds the org's slot (``SEARCH_CONCURRENCY`` 1), the next
    waits for it, no longer than the statement timeout (503); searches without words and
    another org's searches do not wait."""
    quick = create_app(dataclasses.replace(app.config["SETTINGS"], statement_timeout_ms=300))
    client = quick.test_client()
    token = make_token(roles=AUDITOR)
    other = make_token(roles=AUDITOR, token_org=f"{org}-other")
    try:
        with psycopg.connect(database_url, autocommit=True) as holder:
            holder.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s || ':0'))",
                (queries.SEARCH_LOCK_CLASS, org),
            )
            waited = client.get(f"{BASE}?q=threshold", headers=bearer(token))
            assert waited.status_code == 503 and waited.json["code"] == 503
            assert client.get(f"{BASE}?type=kpi", headers=bearer(token)).status_code == 200
            assert client.get(f"{BASE}?q=threshold", headers=bearer(other)).status_code == 200
        assert client.get(f"{BASE}?q=threshold", headers=bearer(token)).status_code == 200
    finally:
        quick.extensions[ENGINE_KEY].dispose()
