"""``GET {base}/export``: the trail as NDJSON or CSV, streamed in one snapshot."""

from __future__ import annotations

import csv
import gzip
import http.client
import io
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from insights_audit.db.engine import engine
from insights_audit.dev import demo
from insights_audit.trail.export import CSV_HEADER
from tests.conftest import BASE, TokenFactory, bearer, new_id, record_view, running_gunicorn
from tests.test_cli import CLI, cli

AUDITOR = ("Auditor",)
TRICKY = [
    {"name": 'Sales, "Q3"\nline two', "emoji": "été ✓"},
    {"formula": "=SUM(A1:A9)", "list": [1, 2.5, None, True]},
    {},
]
# The second review's bypasses among them: leading Unicode spaces, full-width signs, a line end.
INJECTED = [
    "=cmd",
    "+1",
    "-2",
    "@me",
    "\tTab",
    "\rCR",
    " =1+1",
    "\uff1d1+1",
    "\uff0bcmd",
    "\u3000=1+1",
    "\xa0=1+1",
    "\n=1+1",
    "\x0b=1+1",
    "a;b",
]


def write_trail(client: FlaskClient, make_token: TokenFactory) -> list[dict[str, Any]]:
    """Entries with commas, quotes, newlines, non-ASCII and every formula prefix in them."""
    admin = make_token(user="admin", roles=("Administrator",))
    written = []
    for n, details in enumerate(TRICKY * 2):
        body = {"type": "kpi", "action": f"edit.{n}", "targetId": new_id(), "details": details}
        response = client.post(BASE, json=body, headers=bearer(admin))
        assert response.status_code == 201, response.json
        written.append(response.json["data"])
    for user in INJECTED:
        body = {"type": "mapping", "action": "share", "targetId": new_id(), "userId": user}
        written.append(client.post(BASE, json=body, headers=bearer(admin)).json["data"])
    view = record_view(client, admin, new_id())
    written.append(client.get(f"{BASE}/{view['auditLogId']}", headers=bearer(admin)).json["data"])
    return written


def export(client: FlaskClient, token: str, query: str = "", **headers: str) -> Any:
    response = client.get(f"{BASE}/export?{query}", headers={**bearer(token), **headers})
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    response.get_data()
    response.close()  # as a server does once the body is sent: the export's work ends
    return response


def test_ndjson_lines_are_exactly_the_entries_oldest_first(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    written = write_trail(client, make_token)
    response = export(client, make_token(roles=AUDITOR))
    assert response.headers["Content-Type"] == "application/x-ndjson"
    disposition = response.headers["Content-Disposition"]
    assert re.fullmatch(r'attachment; filename="audit-logs-\d{8}T\d{6}Z\.ndjson"', disposition)
    body = response.get_data()
    assert body.endswith(b"\n")
    lines = [json.loads(line) for line in body.decode().split("\n")[:-1]]
    assert lines == written  # same fields, same values, same order as the API's entries
    assert [list(line) for line in lines] == [list(entry) for entry in written]


def test_csv_reads_back_as_the_entries_with_formulas_defused(
    client: FlaskClient, make_token: TokenFactory
) -> None:
    written = write_trail(client, make_token)
    response = export(client, make_token(roles=AUDITOR), "format=csv")
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].endswith('.csv"')
    text = response.get_data().decode()
    assert text.startswith(
        "id,type,action,targetId,userId,userEmail,recordedBy,createdAt,requestId,ip,"
        "userAgent,details\r\n"
    )
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(written)
    for row, entry in zip(rows, written, strict=True):
        for field in ("id", "type", "action", "targetId", "recordedBy", "createdAt", "ip"):
            assert row[field] == (entry[field] or "")
        assert row["userId"] == defused(entry["userId"])
        details = row["details"].removeprefix("'")
        assert json.loads(details) == entry["details"]
        assert row["userEmail"] == (entry["userEmail"] or "")


# A formula's first character (after spaces, full-width), a separator, a quote or a line end
# starts some of the text; a header value holds printable ASCII and tabs only.
HEADER_FIRST = ["", "=", "+", "-", "@", "\t", ",", '"', ";", " =", "x;="]
FIRST = [
    *HEADER_FIRST,
    "\r",
    "\n",
    "\n=",
    "\uff1d",
    "\uff0b",
    "\uff0d",
    "\uff20",
    "\u3000=",
    "\xa0+",
]
FIRST += ["\x0b=", "\u2028@", "\u200b="]
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
CSV_COLUMNS = CSV_HEADER.split(",")


FORMULA_SIGNS = ("=", "+", "-", "@", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def defused(cell: str | None) -> str:
    """A cell as a spreadsheet must see it: formulas defused (a tab or line end first, or a
    formula sign after any leading white space), nothing for null."""
    if cell is None:
        return ""
    formula = cell[:1] in ("\t", "\r", "\n") or cell.lstrip()[:1] in FORMULA_SIGNS
    return "'" + cell if formula else cell


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    users=st.lists(st.builds(str.__add__, st.sampled_from(FIRST), TEXT).filter(bool), min_size=1),
    details=st.dictionaries(TEXT, JSON_VALUES, max_size=4),
    agent=st.builds(
        str.__add__, st.sampled_from(HEADER_FIRST), st.from_regex(r"[ -~]{0,20}", fullmatch=True)
    ),
)
def test_export_lines_are_what_json_and_the_csv_module_write(
    client: FlaskClient, make_token: TokenFactory, users: list[str], details: Any, agent: str
) -> None:
    """PostgreSQL writes the lines: byte for byte what Python's json and csv modules write for
    the same entries (every CSV cell quoted, formulas defused), whatever text they hold."""
    admin = make_token(user="admin", roles=("Administrator",))
    target = new_id()
    written = []
    for user in users:
        body = {"type": "kpi", "action": "edit", "targetId": target, "details": details}
        response = client.post(
            BASE, json={**body, "userId": user}, headers={**bearer(admin), "User-Agent": agent}
        )
        assert response.status_code == 201, response.json
        written.append(response.json["data"])
    auditor = make_token(roles=AUDITOR)
    lines = export(client, auditor, f"targetId={target}").get_data().decode()
    assert lines.endswith("\n")  # only "\n" ends a line: U+2028 and friends stay inside one
    assert [json.loads(line) for line in lines.split("\n")[:-1]] == written
    expected = io.StringIO(newline="")
    csv.writer(expected, lineterminator="\r\n").writerow(CSV_COLUMNS)
    writer = csv.writer(expected, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    for entry in written:
        cells = [entry[name] for name in CSV_COLUMNS[:-1]]
        compact = json.dumps(entry["details"], separators=(",", ":"), ensure_ascii=False)
        writer.writerow([defused(cell) for cell in cells] + [compact])
    assert export(client, auditor, f"targetId={target}&format=csv").get_data().decode() == (
        expected.getvalue()
    )


def test_gzip_is_the_same_bytes_compressed(client: FlaskClient, make_token: TokenFactory) -> None:
    write_trail(client, make_token)
    token = make_token(roles=AUDITOR)
    for fmt in ("ndjson", "csv"):
        plain = export(client, token, f"format={fmt}").get_data()
        packed = export(client, token, f"format={fmt}", **{"Accept-Encoding": "gzip"})
        assert packed.headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(packed.get_data()) == plain


def test_filters_apply_to_the_export(client: FlaskClient, make_token: TokenFactory) -> None:
    written = write_trail(client, make_token)
    lines = export(client, make_token(roles=AUDITOR), "type=mapping&action=sh*").get_data()
    kept = [json.loads(line)["id"] for line in lines.splitlines()]
    assert kept == [entry["id"] for entry in written if entry["type"] == "mapping"]


def test_the_export_is_a_snapshot_of_when_it_began(
    app: Flask, client: FlaskClient, make_token: TokenFactory, org: str
) -> None:
    with app.app_context():
        seed = int.from_bytes(org.encode()[-6:], "big")
        demo.seed(engine(), demo.SeedPlan(org, 12_000, 50, 20, 10, seed), lambda _: None)
    token = make_token(roles=AUDITOR)
    response = client.get(f"{BASE}/export", headers=bearer(token), buffered=False)
    chunks = iter(cast(Iterable[bytes], response.response))
    first = next(chunks)
    viewer = make_token(user="late")
    late = {record_view(client, viewer, new_id())["auditLogId"] for _ in range(5)}
    body = first + b"".join(chunks)
    response.close()  # as a server does: ends the export's transaction
    ids = [json.loads(line)["id"] for line in body.splitlines()]
    assert len(ids) == len(set(ids)) == 12_000 + 20
    assert not late & set(ids)


@pytest.mark.parametrize("role", ["Users", "Power User"])
def test_export_is_for_auditors_and_administrators(
    client: FlaskClient, make_token: TokenFactory, role: str
) -> None:
    response = client.get(f"{BASE}/export", headers=bearer(make_token(roles=(role,))))
    assert response.status_code == 403 and response.json["code"] == 403


@pytest.mark.parametrize("query", ["format=xml", "cursor=abc", "limit=5", "q="])
def test_bad_export_requests_get_the_error_envelope(
    client: FlaskClient, make_token: TokenFactory, query: str
) -> None:
    response = client.get(f"{BASE}/export?{query}", headers=bearer(make_token(roles=AUDITOR)))
    assert response.status_code == 400 and response.json["errors"]["query"]


def test_an_export_outlasting_the_worker_timeout_completes(
    database_url: str, make_token: TokenFactory, big_org: str
) -> None:
    token = make_token(roles=AUDITOR)
    with running_gunicorn(database_url, GUNICORN_TIMEOUT="2") as url:
        request = urllib.request.Request(f"{url}{BASE}/export", headers=bearer(token))
        started = time.monotonic()
        lines = 0
        with urllib.request.urlopen(request, timeout=30) as response:
            while chunk := response.read(256 * 1024):
                lines += chunk.count(b"\n")
                time.sleep(0.1)  # a slow reader: the download lasts longer than the timeout
        assert time.monotonic() - started > 3
    assert lines == 40_000 + 50


def test_a_failure_mid_stream_cuts_the_transfer(
    database_url: str, make_token: TokenFactory, big_org: str, tmp_path: Path
) -> None:
    """The client sees a cut body; the log has one line saying which request and why, not a
    traceback (second security review, finding 10)."""
    token = make_token(roles=AUDITOR)
    log = tmp_path / "gunicorn.log"
    with running_gunicorn(database_url, str(log)) as url:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.request("GET", f"{BASE}/export", headers=bearer(token))
        response = connection.getresponse()
        assert response.status == 200
        response.read(1024)
        with psycopg.connect(database_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'insights-audit'"
                " AND query LIKE 'FETCH FORWARD %%'"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    cut = [line for line in log.read_text().splitlines() if "export cut short" in line]
    assert len(cut) == 1 and f"org={big_org}" in cut[0]
    assert re.search(r"request_id=[0-9a-f-]{36}", cut[0]) and "OperationalError" in cut[0]
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_the_cli_writes_the_same_bytes_as_the_api(
    client: FlaskClient,
    database_url: str,
    make_token: TokenFactory,
    org: str,
    fmt: str,
    tmp_path: Path,
) -> None:
    write_trail(client, make_token)
    api = export(client, make_token(roles=AUDITOR), f"format={fmt}&action=edit.*").get_data()
    out = tmp_path / f"trail.{fmt}"
    result = cli(
        database_url,
        "export",
        "--org",
        org,
        "--format",
        fmt,
        "--action",
        "edit.*",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == api
    to_stdout = subprocess.run(
        [CLI, "export", "--org", org, "--format", fmt, "--action", "edit.*"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        check=True,
    )
    assert to_stdout.stdout == api


def test_the_cli_refuses_bad_filters(database_url: str, org: str) -> None:
    result = cli(database_url, "export", "--org", org, "--since", "2026-01-01")
    assert result.returncode == 2 and "since" in result.stderr
