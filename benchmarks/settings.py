"""What every part of the benchmark shares: paths, sizes, the measured orgs and endpoints."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from insights_audit.audit.keys import derive_cursor_key, signing_key
from insights_audit.config import Settings
from insights_audit.web.api import BASE_PATH

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data" / "bench"
RESULTS = ROOT / "benchmarks" / "results" / "latest.json"
EVENTS = int(os.environ.get("BENCH_EVENTS", "10000000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
# The smaller database that p50s are compared with (the scaling ratios).
SMALL_EVENTS = int(os.environ.get("BENCH_SMALL_EVENTS", str(max(EVENTS // 10, 10_000))))
PORT = int(os.environ.get("BENCH_PORT", "8100"))
BASE = BASE_PATH
URL = f"http://127.0.0.1:{PORT}"
BIG_ORG = "bench-org-0"
# gunicorn (run from ROOT) and this script sign with one key: cursors and checkpoints agree.
os.environ.setdefault("AUDIT_SIGNING_KEY_FILE", str(ROOT / ".data" / "audit-signing.key"))
CURSOR_KEY = derive_cursor_key(signing_key(Settings.from_env()))
OTHER_ORGS = [f"bench-org-{n}" for n in range(1, 10)]
# The measured org: 20,000 users, 5,000 dashboards, a year; the nine others are smaller.
BIG_SHAPE = {"users": 20_000, "dashboards": 5_000, "days": 365}
OTHER_SHAPE = {"users": 2_000, "dashboards": 500, "days": 365}
# Database settings for a machine with RAM to spare; documented in BENCHMARKS.md.
SERVER_SETTINGS = {
    "shared_buffers": "2GB",
    "effective_cache_size": "8GB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "max_connections": "200",
}
SAMPLE = 2_000
DEEP_PAGE = 50
READS = (
    "recently-viewed",
    "most-viewed",
    "most-viewed-30d",
    "stats-30d",
    "dashboard-logs",
    "dashboard-logs-deep",
    "audit-log",
    "trending",
    "related",
    "recommended",
    # The same, asked again within the minute an answer is kept: the 20 most viewed
    # dashboards, 20 viewers (the first asks of the -c 16 run compute them).
    "related-kept",
    "recommended-kept",
    "usage-report",
)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
