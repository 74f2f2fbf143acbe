"""A realistic demo dataset: Zipf-popular dashboards and users, weekly and daily rhythm.

Entries are generated in time order, loaded with ``COPY`` and followed by the aggregates the
API would have produced (rebuilt from the loaded trail, the same way ``aggregates rebuild``
does), so reads answer at once.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine, text

from insights_audit.audit import aggregates
from insights_audit.db.unit_of_work import batch_transaction

COPY_ENTRIES = (
    "COPY audit_entries (id, org, type, action, target_id, user_id, user_email, details,"
    " created_at, request_id, ip, user_agent) FROM STDIN"
)
# Share of entries that are dashboard views; the rest are KPI and mapping changes.
VIEW_SHARE = 0.96
OTHER_ACTIONS = ("update", "update", "update", "create", "threshold.update", "sync", "delete")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Firefox/133.0",
    "insights-sdk/2.4 python/3.12",
)
# Weekend days see about a third of a weekday's traffic; office hours most of a day's.
WEEKDAY_WEIGHT = np.array([1.0, 1.0, 1.0, 1.0, 0.9, 0.35, 0.3])
HOUR_WEIGHT = np.array(
    [1, 1, 1, 1, 1, 2, 4, 7, 10, 12, 12, 11, 9, 11, 12, 11, 9, 7, 5, 4, 3, 2, 2, 1.0]
)
NAMES = (
    "Release velocity",
    "Quality gates",
    "Deployment frequency",
    "Lead time",
    "MTTR",
    "Change failure rate",
    "Pipeline health",
    "Security findings",
    "Test coverage",
    "Cloud spend",
)
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class SeedPlan:
    org: str
    events: int
    users: int
    dashboards: int
    days: int
    seed: int


def zipf_sampler(
    rng: np.random.Generator, n: int, exponent: float = 1.07
) -> Callable[[int], np.ndarray]:
    """Draws ranks 0..n-1 with P(rank k) proportional to 1 / (k + 1) ** exponent."""
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    cdf = np.cumsum(weights / weights.sum())

    def draw(size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, rng.random(size)), n - 1)

    return draw


def dashboard_ids(plan: SeedPlan) -> list[str]:
    """Stable dashboard ids of an org: the same plan always names the same dashboards."""
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"insights-audit-demo/{plan.org}")
    return [str(uuid.uuid5(namespace, f"dashboard-{n}")) for n in range(plan.dashboards)]


def _events_per_day(rng: np.random.Generator, plan: SeedPlan, first_day: datetime) -> np.ndarray:
    weekdays = [(first_day + timedelta(days=d)).weekday() for d in range(plan.days)]
    weights = WEEKDAY_WEIGHT[weekdays]
    return rng.multinomial(plan.events, weights / weights.sum())


def _users(plan: SeedPlan, first: Sequence[str] = ()) -> list[str]:
    """The plan's users, most active first; ``first`` names the most active ones."""
    return [*first, *(f"user-{n:05d}" for n in range(plan.users - len(first)))]


def entry_batches(
    plan: SeedPlan, now: datetime, users: Sequence[str]
) -> Iterator[tuple[int, bytes]]:
    """``COPY`` text of the plan's entries, oldest first, in batches of about a day."""
    rng = np.random.default_rng(plan.seed)
    emails = [f"{user}@{plan.org}.example.com" for user in users]
    dashboards = dashboard_ids(plan)
    others = [
        str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**63, size=max(2, plan.dashboards))
    ]
    draw_user = zipf_sampler(rng, plan.users)
    draw_dashboard = zipf_sampler(rng, plan.dashboards)
    draw_other = zipf_sampler(rng, len(others))
    hour_p = HOUR_WEIGHT / HOUR_WEIGHT.sum()

    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today - timedelta(days=plan.days - 1)
    first_second = int(first_day.timestamp())
    now_second = int(now.timestamp())
    org = plan.org
    for day, count in enumerate(_events_per_day(rng, plan, first_day)):
        if count == 0:
            continue
        start = first_second + day * DAY_SECONDS
        micros = (rng.choice(24, size=count, p=hour_p) * 3600 + rng.random(count) * 3600) * 1e6
        stamps = np.sort(start * 1_000_000 + micros.astype(np.int64))
        # Today's entries are squeezed into the hours already gone (in floating point: the
        # product of two microsecond spans overflows 64 bits).
        if start + DAY_SECONDS > now_second:
            share = (now_second - start) / DAY_SECONDS
            first_micro = start * 1_000_000
            stamps = first_micro + ((stamps - first_micro) * share).astype(np.int64)
        seconds = (stamps // 1_000_000).tolist()
        texts = np.datetime_as_string(stamps.astype("datetime64[us]")).tolist()
        who = draw_user(count).tolist()
        is_view = (rng.random(count) < VIEW_SHARE).tolist()
        what = draw_dashboard(count).tolist()
        other = draw_other(count).tolist()
        noise = rng.integers(0, 2**40, size=count).tolist()
        agent = rng.integers(0, len(USER_AGENTS), size=count).tolist()
        lines = []
        for n in range(count):
            u = who[n]
            if is_view[n]:
                kind, action, target = "dashboard", "view", dashboards[what[n]]
            else:
                kind = "kpi" if other[n] % 2 else "mapping"
                action, target = OTHER_ACTIONS[other[n] % len(OTHER_ACTIONS)], others[other[n]]
            lines.append(
                f"{seconds[n]:08x}{noise[n]:010x}{n % 16_777_216:06x}\t{org}\t{kind}\t{action}"
                f"\t{target}\t{users[u]}\t{emails[u]}\t{{}}\t{texts[n]}Z\t\\N"
                f"\t10.{u // 65536 % 256}.{u // 256 % 256}.{u % 256}\t{USER_AGENTS[agent[n]]}\n"
            )
        yield count, "".join(lines).encode()


def _name_entries(plan: SeedPlan, when: datetime) -> bytes:
    """One ``dashboard``/``create`` entry per dashboard, carrying its name, before any view."""
    second = int(when.timestamp())
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lines = []
    for n, dashboard in enumerate(dashboard_ids(plan)):
        name = f"{NAMES[n % len(NAMES)]} #{n + 1}"
        lines.append(
            f"{second:08x}{uuid.uuid4().hex[:16]}\t{plan.org}\tdashboard\tcreate\t{dashboard}"
            f'\tuser-00000\tuser-00000@{plan.org}.example.com\t{{"name": "{name}"}}\t{stamp}'
            "\t\\N\t\\N\tinsights-audit demo seed\n"
        )
    return "".join(lines).encode()


@dataclass(frozen=True)
class SeedReport:
    entries: int
    copy_seconds: float
    aggregate_seconds: float


def _copy_stream(engine: Engine, org: str, batches: queue.Queue[bytes | None]) -> None:
    """One COPY into audit_entries, fed from ``batches`` until a None, in its own transaction."""
    with batch_transaction(engine, org) as connection:
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(COPY_ENTRIES) as copy:
            while (batch := batches.get()) is not None:
                copy.write(batch)


def seed(
    engine: Engine,
    plan: SeedPlan,
    progress: Callable[[int], None],
    user_ids: Sequence[str] = (),
    streams: int = 2,
) -> SeedReport:
    """Load the plan's entries with ``streams`` parallel COPYs, then rebuild the org's aggregates.

    Each stream commits on its own: if one fails the seed raises, and entries of the others
    may remain (seed a fresh org again). ``user_ids`` are made the plan's most active users.
    """
    with engine.begin() as connection:
        now: datetime = connection.execute(text("SELECT now()")).scalar_one().astimezone(UTC)
        first_day = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=plan.days - 1
        )
        # A month partition for every month loaded (the trail is partitioned by month).
        connection.execute(
            text("SELECT audit_ensure_partitions(:first, :last)"),
            {"first": first_day.date(), "last": now.date()},
        )
    loaded = 0
    started = time.perf_counter()
    batches: queue.Queue[bytes | None] = queue.Queue(maxsize=2 * streams)
    with ThreadPoolExecutor(streams) as pool:
        workers = [pool.submit(_copy_stream, engine, plan.org, batches) for _ in range(streams)]

        def hand_over(batch: bytes | None) -> None:
            while True:
                try:
                    batches.put(batch, timeout=0.5)
                    return
                except queue.Full:
                    for worker in workers:
                        if worker.done():
                            worker.result()  # raises the stream's error

        try:
            hand_over(_name_entries(plan, first_day))
            for count, batch in entry_batches(plan, now, _users(plan, user_ids)):
                hand_over(batch)
                loaded += count
                progress(count)
        finally:
            for _ in workers:
                batches.put(None)
        for worker in workers:
            worker.result()
    copied = time.perf_counter()
    with batch_transaction(engine, plan.org) as connection:
        aggregates.rebuild(connection, plan.org)
    return SeedReport(
        entries=loaded + plan.dashboards,
        copy_seconds=copied - started,
        aggregate_seconds=time.perf_counter() - copied,
    )
