"""The benchmark's data: seeded orgs, a sample of real ids, and the requests made from them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.settings import (
    BASE,
    BIG_ORG,
    BIG_SHAPE,
    CURSOR_KEY,
    DATA,
    DEEP_PAGE,
    OTHER_ORGS,
    OTHER_SHAPE,
    SAMPLE,
    log,
)
from insights_audit import create_app
from insights_audit.config import Settings
from insights_audit.db import schema_migrations
from insights_audit.db.unit_of_work import transaction
from insights_audit.dev import embedded
from insights_audit.trail.cursors import TrailPosition, encode_cursor
from insights_audit.web.tokens import create_token


@dataclass
class Dataset:
    """A seeded database and what the load needs from it."""

    url: str
    events: int
    tokens: list[str]
    dashboards: list[str]
    weights: list[float]
    audit_ids: list[str]
    deep_cursors: list[tuple[str, str]]


def build_dataset(server_url: str, events: int) -> Dataset:
    name = f"bench_{events}"
    manifest = DATA / f"{name}.json"
    url = embedded.database_url(server_url, name)
    if manifest.exists():
        log(f"reusing {name} ({events:,} events)")
        started = time.perf_counter()
        schema_migrations.upgrade(url)
        log(f"  migrations applied in {time.perf_counter() - started:.1f} s")
        return Dataset(url=url, **json.loads(manifest.read_text()))
    log(f"building {name}: {events:,} events ...")
    embedded.drop_database(server_url, name)
    embedded.ensure_database(server_url, name)
    schema_migrations.upgrade(url)
    big = events // 2
    plans = [(BIG_ORG, big, BIG_SHAPE)] + [
        (org, (events - big) // len(OTHER_ORGS), OTHER_SHAPE) for org in OTHER_ORGS
    ]
    started = time.perf_counter()
    for n, (org, count, shape) in enumerate(plans):
        seed_org(url, org, count, shape, n + 1)
    log(f"seeded {events:,} events in {time.perf_counter() - started:.0f} s")
    dataset = sample(url, events)
    fields = {k: v for k, v in dataset.__dict__.items() if k != "url"}
    manifest.write_text(json.dumps(fields))
    return dataset


def seed_org(url: str, org: str, events: int, shape: dict[str, int], seed: int = 1) -> None:
    """``insights-audit demo seed`` of one org into ``url``: ``events`` events of ``shape``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "insights_audit",
            "demo",
            "seed",
            "--org",
            org,
            "--events",
            str(events),
            "--users",
            str(shape["users"]),
            "--dashboards",
            str(shape["dashboards"]),
            "--days",
            str(shape["days"]),
            "--seed",
            str(seed),
        ],
        env={**os.environ, "DATABASE_URL": url},
        check=True,
    )


def sample(url: str, events: int) -> Dataset:
    """Tokens of real viewers, dashboards with their popularity, ids and deep cursors."""
    app = create_app(Settings(database_url=url, pool_size=1, max_overflow=0))
    with app.app_context(), transaction() as db:
        users = [
            r[0]
            for r in db.exec_driver_sql(
                "SELECT user_id FROM view_logs WHERE org = %(org)s GROUP BY user_id"
                " ORDER BY random() LIMIT 300",
                {"org": BIG_ORG},
            )
        ]
        tokens = [
            create_token(
                db,
                org=BIG_ORG,
                user_id=user,
                user_email=f"{user}@example.com",
                # Auditor too: the usage report is for the oversight roles.
                roles=["Users", "Auditor"],
                scopes=["api"],
                name="bench",
                expires_in_days=None,
            )[1]
            for user in users
        ]
        popular: list[tuple[str, int]] = [
            (row[0], row[1])
            for row in db.exec_driver_sql(
                "SELECT dashboard_id::text, view_count FROM dashboard_totals WHERE org = %(org)s"
                " ORDER BY view_count DESC",
                {"org": BIG_ORG},
            )
        ]
        audit_ids = [
            r[0]
            for r in db.exec_driver_sql(
                "SELECT id FROM audit_entries TABLESAMPLE SYSTEM (1)"
                " WHERE org = %(org)s LIMIT %(n)s",
                {"org": BIG_ORG, "n": SAMPLE},
            )
        ]
        deep: list[tuple[str, str]] = []
        for dashboard, _ in popular[:20]:
            row = db.exec_driver_sql(
                "SELECT created_at, id FROM audit_entries WHERE org = %(org)s"
                " AND type = 'dashboard' AND target_id = %(d)s"
                " ORDER BY created_at DESC, id DESC OFFSET %(skip)s LIMIT 1",
                {"org": BIG_ORG, "d": dashboard, "skip": 100 * (DEEP_PAGE - 1) - 1},
            ).first()
            if row:
                cursor = encode_cursor(TrailPosition(row[0], row[1]), BIG_ORG, CURSOR_KEY)
                deep.append((dashboard, cursor))
    return Dataset(
        url=url,
        events=events,
        tokens=tokens,
        dashboards=[d for d, _ in popular],
        weights=[float(c) for _, c in popular],
        audit_ids=audit_ids,
        deep_cursors=deep,
    )


# Dashboards and viewers asked for again in the "-kept" plans (answers kept for a minute).
KEPT_ASKED = 20


def request_plans(
    data: Dataset, rng: random.Random
) -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """Per endpoint: the method and a list of (path, token, body) to draw from at random."""

    def tokens(n: int = SAMPLE) -> list[str]:
        return [rng.choice(data.tokens) for _ in range(n)]

    zipf = rng.choices(data.dashboards, weights=data.weights, k=SAMPLE)
    top = data.dashboards[0]
    get = "GET"
    return {
        "healthz": (get, [("/healthz", t, "") for t in tokens(1)]),
        "recently-viewed": (get, [(f"{BASE}/dashboard/recently-viewed", t, "") for t in tokens()]),
        "most-viewed": (get, [(f"{BASE}/dashboard/most-viewed", t, "") for t in tokens()]),
        "most-viewed-30d": (
            get,
            [(f"{BASE}/dashboard/most-viewed?days=30", t, "") for t in tokens()],
        ),
        "stats-30d": (get, [(f"{BASE}/dashboard/{top}/stats?days=30", t, "") for t in tokens()]),
        "dashboard-logs": (
            get,
            [(f"{BASE}/dashboard/{d}", t, "") for d, t in zip(zipf, tokens(), strict=True)],
        ),
        "dashboard-logs-deep": (
            get,
            [
                (f"{BASE}/dashboard/{d}?cursor={c}", t, "")
                # A small dataset may have no dashboard 50 pages deep: then its first pages.
                for (d, c), t in zip(
                    rng.choices(data.deep_cursors or [(d, "") for d in zipf[:20]], k=SAMPLE),
                    tokens(),
                    strict=True,
                )
            ],
        ),
        "trending": (get, [(f"{BASE}/dashboard/trending", t, "") for t in tokens()]),
        "related": (
            get,
            [(f"{BASE}/dashboard/{d}/related", t, "") for d, t in zip(zipf, tokens(), strict=True)],
        ),
        "recommended": (get, [(f"{BASE}/dashboard/recommended", t, "") for t in tokens()]),
        "related-kept": (
            get,
            [
                (f"{BASE}/dashboard/{rng.choice(data.dashboards[:KEPT_ASKED])}/related", t, "")
                for t in tokens()
            ],
        ),
        "recommended-kept": (
            get,
            [
                (f"{BASE}/dashboard/recommended", rng.choice(data.tokens[:KEPT_ASKED]), "")
                for _ in range(SAMPLE)
            ],
        ),
        "usage-report": (get, [(f"{BASE}/reports/usage", t, "") for t in tokens(20)]),
        "audit-log": (
            get,
            [(f"{BASE}/{i}", t, "") for i, t in zip(data.audit_ids, tokens(), strict=False)],
        ),
        "view": (
            "POST",
            [(f"{BASE}/dashboard/{d}/view", t, "") for d, t in zip(zipf, tokens(), strict=True)],
        ),
        "view-hot": ("POST", [(f"{BASE}/dashboard/{top}/view", t, "") for t in tokens()]),
    }
