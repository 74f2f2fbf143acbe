"""Getting the trail out, measured against the running benchmark gunicorn: the big org's
export (NDJSON and CSV, entries/s and time to the first byte), draining its feed, and the
latency of typical searches."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
import urllib.parse
import urllib.request
from datetime import timedelta
from typing import Any

import orjson
import psycopg

from benchmarks.settings import BASE, BIG_ORG, URL, log
from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db.unit_of_work import transaction
from insights_audit.web.tokens import create_token

SEARCHES = {
    "no-filter": {},
    "type": {"type": "kpi"},
    "action-prefix": {"action": "threshold.*"},
    "user": {"userId": "user-00042"},
    "q-word": {"q": "threshold"},
    "q-common": {"q": "update"},
    "q-absent": {"q": "zq-nowhere"},
    "combined": {"type": "dashboard", "action": "view", "userId": "user-00001"},
}
# Pages followed before the deep searches are timed.
DEEP_PAGES = 50


def data_searches(database_url: str) -> dict[str, dict[str, str]]:
    """Searches whose values come from the data: a busy KPI, one day, and a word (a user id,
    in the searchable text of the entries that user wrote) found in about 0.1% of the org's
    entries."""
    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', %s, false)", (BIG_ORG,))
        target, day = connection.execute(
            "SELECT target_id::text, date_trunc('day', created_at - interval '100 days')"
            " FROM audit_entries WHERE org = %s AND type = 'kpi'"
            " ORDER BY created_at DESC LIMIT 1",
            (BIG_ORG,),
        ).fetchone() or (None, None)
        word = connection.execute(
            "SELECT user_id FROM audit_entries WHERE org = %s AND action <> 'view'"
            " GROUP BY user_id"
            " ORDER BY abs(count(*) - 0.001 * (SELECT count(*) FROM audit_entries"
            "  WHERE org = %s)) LIMIT 1",
            (BIG_ORG, BIG_ORG),
        ).fetchone()
    since = day.strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "target": {"type": "kpi", "targetId": str(target)},
        "day": {"since": since, "until": until},
        "q-0.1%": {"q": word[0] if word else "user-00042"},
    }


def deep_query(token: str, query: dict[str, str]) -> dict[str, str]:
    """``query`` with the cursor of its page ``DEEP_PAGES + 1`` (or of its last page)."""
    deep = dict(query)
    for _ in range(DEEP_PAGES):
        url = f"{URL}{BASE}?{urllib.parse.urlencode(deep)}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            cursor = orjson.loads(response.read())["pagination"]["nextCursor"]
        if not cursor:
            break
        deep["cursor"] = cursor
    return deep


def auditor_token(database_url: str) -> str:
    app = create_app(Settings(database_url=database_url))
    with app.app_context(), transaction() as connection:
        _, secret = create_token(
            connection,
            org=BIG_ORG,
            user_id="bench-auditor",
            user_email=None,
            roles=["Auditor"],
            scopes=["api-readonly"],
            name="bench",
            expires_in_days=1,
        )
    return secret


def count_entries(database_url: str) -> int:
    with psycopg.connect(database_url) as connection:
        connection.execute("SELECT set_config('insights_audit.org', %s, false)", (BIG_ORG,))
        row = connection.execute(
            "SELECT count(*) FROM audit_entries WHERE org = %s", (BIG_ORG,)
        ).fetchone()
    return int(row[0]) if row else 0


def export(token: str, fmt: str) -> dict[str, float]:
    curl = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-H",
            f"Authorization: Bearer {token}",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            f"{URL}{BASE}/export?format={fmt}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    first, total, size = (float(part) for part in curl.stdout.split())
    return {"first_byte_s": first, "total_s": total, "bytes": size}


def drain_feed(token: str) -> dict[str, float]:
    after, received, started = None, 0, time.perf_counter()
    while True:
        query = "limit=1000" + (f"&after={after}" if after else "")
        request = urllib.request.Request(
            f"{URL}{BASE}/feed?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = orjson.loads(response.read())  # as a SIEM's client would parse it
        received += len(body["data"])
        after = body["pagination"]["nextCursor"]
        if not body["pagination"]["hasMore"]:
            break
    return {"entries": received, "seconds": time.perf_counter() - started}


# Sequential requests per search (BENCH_SEARCHES).
SEARCH_SAMPLES = int(os.environ.get("BENCH_SEARCHES", "200"))


def search_latency(
    token: str, query: dict[str, str], samples: int = SEARCH_SAMPLES
) -> dict[str, float]:
    url = f"{URL}{BASE}?{urllib.parse.urlencode(query)}"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
        timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
    }


def measure(database_url: str) -> dict[str, Any]:
    token = auditor_token(database_url)
    entries = count_entries(database_url)
    results: dict[str, Any] = {"org_entries": entries}
    for fmt in ("ndjson", "csv"):
        run = export(token, fmt)
        run["entries_per_s"] = round(entries / run["total_s"])
        results[f"export_{fmt}"] = run
        rate, first = run["entries_per_s"], run["first_byte_s"]
        log(f"  export {fmt}: {rate:,.0f} entries/s, first byte {first:.3f} s")
    feed = drain_feed(token)
    results["feed"] = {**feed, "entries_per_s": round(feed["entries"] / feed["seconds"])}
    log(f"  feed drain: {results['feed']['entries_per_s']:,} entries/s")
    searches = {**SEARCHES, **data_searches(database_url)}
    searches.update({f"{name}-deep": deep_query(token, query) for name, query in searches.items()})
    results["search"] = {name: search_latency(token, query) for name, query in searches.items()}
    for name, timing in results["search"].items():
        log(f"  search {name}: p50 {timing['p50_ms']} ms, p99 {timing['p99_ms']} ms")
    return results
