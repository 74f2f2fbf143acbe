"""``make bench-search``: the org-wide search, as the app role, on the ``make bench`` database.

The demo's searchable text is id-shaped (``user-00042``, ``threshold.update``). This adds,
once, free-form entries to the big org (4% of it: sentences, people's names, e-mail
addresses, nested ``details``) in which ``ledger`` occurs in 3% of the org's entries and
``quokka`` in 0.1%, and then times, through gunicorn as in production (``BENCH_SEARCHES``
sequential requests each, ``BENCH_SEARCH_ROUNDS`` rounds, medians):

- a common, a rare and an absent word, the demo's words, an action prefix and a type, each
  on its first page and 50 pages deep;
- the dashboard reads at ``-c 1`` (wrk) alone, and while 4 clients search common words in a
  loop.

Run ``BENCH_EVENTS=... make bench`` first: it builds the database.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import urllib.parse
import urllib.request

import psycopg

from benchmarks.database import start_database
from benchmarks.load import ensure_tools, lua_script, start_gunicorn, stop_gunicorn, wrk
from benchmarks.settings import BASE, BIG_ORG, DATA, EVENTS, URL, log
from benchmarks.trail_out import auditor_token, data_searches, deep_query, search_latency
from insights_audit.dev import embedded

ROUNDS = int(os.environ.get("BENCH_SEARCH_ROUNDS", "3"))
VARIED_ACTION = "note.varied"
WORDS = (
    "quarterly",
    "review",
    "budget",
    "forecast",
    "pipeline",
    "release",
    "approved",
    "rejected",
    "draft",
    "owner",
    "team",
    "migration",
    "schema",
    "access",
    "granted",
    "revoked",
    "policy",
    "incident",
    "postmortem",
    "customer",
    "churn",
    "revenue",
    "target",
    "threshold",
    "alert",
    "escalation",
    "sprint",
    "roadmap",
    "backlog",
    "audit",
    "export",
    "deployment",
    "rollback",
    "latency",
    "outage",
    "capacity",
    "vendor",
    "contract",
    "invoice",
    "finance",
)
NAMES = ["Ana Souza", "Chen Wei", "Dana Kowalski", "Élodie Martin", "Ravi Iyer", "Ömer Kaya"]

VARIED = """
INSERT INTO audit_entries (id, org, type, action, target_id, user_id, user_email, details,
                           created_at)
SELECT audit_object_id(at), %(org)s, 'kpi', %(action)s, gen_random_uuid(),
       'analyst-' || (g %% 500), 'analyst' || (g %% 500) || '@example.org',
       jsonb_build_object(
           'comment', initcap(w[1 + (g * 7) %% n]) || ' ' || w[1 + (g * 13) %% n] || ' '
               || w[1 + (g * 17) %% n] || ' for the ' || w[1 + (g * 19) %% n] || ' of '
               || w[1 + (g * 23) %% n]
               || CASE WHEN g %% 4 <> 0 THEN ' in the ledger' ELSE '' END
               || CASE WHEN g %% 40 = 1 THEN ', seen by a quokka' ELSE '' END || '.',
           'author', jsonb_build_object('name', names[1 + g %% 6], 'teams', jsonb_build_array(
               w[1 + (g * 29) %% n], w[1 + (g * 31) %% n]))),
       at
FROM (SELECT g, now() - (g::float / %(count)s) * interval '360 days' AS at,
             %(words)s::text[] AS w, %(names)s::text[] AS names,
             cardinality(%(words)s::text[]) AS n
      FROM generate_series(1, %(count)s) AS g) AS rows
"""


def ensure_varied_text(admin_url: str) -> dict[str, int]:
    """The free-form entries, once; how many entries the org has and how many hold each
    word."""
    with psycopg.connect(admin_url, autocommit=True) as connection:
        org_entries = connection.execute(
            "SELECT count(*) FROM audit_entries WHERE org = %s AND action <> %s",
            (BIG_ORG, VARIED_ACTION),
        ).fetchone()[0]  # type: ignore[index]
        present = connection.execute(
            "SELECT count(*) FROM audit_entries WHERE org = %s AND action = %s",
            (BIG_ORG, VARIED_ACTION),
        ).fetchone()[0]  # type: ignore[index]
        # "ledger" in 3 of 4 varied entries: 3% of the org when they are 4% of it.
        count = round(org_entries * 0.04 / 0.96)
        if present < count:
            log(f"adding {count - present:,} free-form entries to {BIG_ORG} ...")
            connection.execute(
                VARIED,
                {
                    "org": BIG_ORG,
                    "action": VARIED_ACTION,
                    "count": count - present,
                    "words": list(WORDS),
                    "names": NAMES,
                },
            )
            connection.execute("ANALYZE audit_entries")
        total = org_entries + max(count, present)
        return {"org_entries": total, "ledger": round(count * 0.75), "quokka": round(count / 40)}


SEARCHES = {
    "q 3% (ledger)": {"q": "ledger"},
    "q 0.1% (quokka)": {"q": "quokka"},
    "q absent": {"q": "zq-nowhere"},
    "q two words": {"q": "ledger quokka"},
    "q name (élodie)": {"q": "élodie"},
    "q email part": {"q": "analyst42@"},
    "action prefix": {"action": "threshold.*"},
    "type": {"type": "kpi"},
}


def main() -> None:
    ensure_tools()
    server_url, _ = start_database()
    name = f"bench_{EVENTS}"
    manifest = DATA / f"{name}.json"
    if not manifest.exists():
        raise SystemExit(f"no {name}: run `BENCH_EVENTS={EVENTS} make bench` first")
    dataset = json.loads(manifest.read_text())
    admin_url = embedded.database_url(server_url, name)
    counts = ensure_varied_text(admin_url)
    log(
        f"{name}: {counts['org_entries']:,} entries in {BIG_ORG}; ledger in ~{counts['ledger']:,},"
        f" quokka in ~{counts['quokka']:,}"
    )
    server = start_gunicorn(admin_url)
    try:
        token = auditor_token(admin_url)
        searches = {**SEARCHES, **{f"demo {k}": v for k, v in data_searches(admin_url).items()}}
        searches.update({f"{k}, 50 pages deep": deep_query(token, q) for k, q in searches.items()})
        runs: dict[str, list[dict[str, float]]] = {}
        for round_ in range(ROUNDS):
            log(f"round {round_ + 1} of {ROUNDS} ...")
            for label, query in searches.items():
                runs.setdefault(label, []).append(search_latency(token, query))
        print(f"\n{EVENTS:,} events, as the app role, medians of {ROUNDS} rounds:")
        print(f"{'search':<40} {'p50 ms':>8} {'p99 ms':>8}")
        for label, timings in runs.items():
            p50 = statistics.median(t["p50_ms"] for t in timings)
            p99 = statistics.median(t["p99_ms"] for t in timings)
            print(f"{label:<40} {p50:>8.2f} {p99:>8.2f}")
        _reads_beside_searches(dataset, token)
    finally:
        stop_gunicorn(server)


def _reads_beside_searches(dataset: dict[str, object], token: str) -> None:
    tokens = dataset["tokens"][:50]  # type: ignore[index]
    boards = dataset["dashboards"][:50]  # type: ignore[index]
    requests = [
        (f"{BASE}/dashboard/{board}/stats?days=30", viewer, "")
        for viewer, board in zip(tokens, boards, strict=False)
    ]
    script = lua_script("search-contention-reads", "GET", requests)
    alone = [wrk(script, 1)["p99_ms"] for _ in range(ROUNDS)]
    stop = threading.Event()

    def search_loop(word: str) -> None:
        url = f"{URL}{BASE}?{urllib.parse.urlencode({'q': word})}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        while not stop.is_set():
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()

    searchers = [
        threading.Thread(target=search_loop, args=(word,))
        for word in ("ledger", "update", "view", "analyst")
    ]
    for searcher in searchers:
        searcher.start()
    try:
        beside = [wrk(script, 1)["p99_ms"] for _ in range(ROUNDS)]
    finally:
        stop.set()
        for searcher in searchers:
            searcher.join()
    a, b = statistics.median(alone), statistics.median(beside)
    print(
        f"\ndashboard stats -c1 p99: {a:.2f} ms alone, {b:.2f} ms while 4 clients search common"
        f" words in a loop ({b / a:.2f}x)"
    )


if __name__ == "__main__":
    main()
