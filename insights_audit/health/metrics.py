"""``GET /metrics``: the exposition of every worker's samples, and the sealing gauges.

The sealing gauges are read from the database at scrape time, so they are current whichever
worker answers: entries not sealed yet, and seconds since the newest checkpoint, over every
org that has API tokens (the orgs the service writes for; one short query per org).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from insights_audit import chain_order
from insights_audit.integrity.checkpoints import last_checkpoint, position_after
from insights_audit.models import ApiToken, AuditEntry
from insights_audit.unit_of_work import set_tenant


class SealingCollector(Collector):
    """The sealing gauges, read from the database when scraped."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:

        unsealed = 0
        newest = None
        with self._engine.connect() as connection:
            orgs = connection.scalars(select(ApiToken.org).distinct()).all()
            now = float(connection.scalar(select(func.extract("epoch", func.now()))) or 0)
            for org in orgs:
                set_tenant(connection, org)
                last = last_checkpoint(connection, org)
                unsealed += (
                    connection.scalar(
                        select(func.count()).where(
                            AuditEntry.org == org, chain_order.after(position_after(last))
                        )
                    )
                    or 0
                )
                if last is not None and (newest is None or last.sealed_at > newest):
                    newest = last.sealed_at
            connection.rollback()
        yield GaugeMetricFamily(
            "insights_audit_unsealed_entries",
            "Entries newer than their org's last checkpoint",
            value=unsealed,
        )
        if newest is not None:
            yield GaugeMetricFamily(
                "insights_audit_seconds_since_last_checkpoint",
                "Seconds since the newest checkpoint of any org was sealed",
                value=now - newest.timestamp(),
            )


def exposition(engine: Engine) -> bytes:
    """The text exposition of every metric: all workers' samples, then the sealing gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    sealing = CollectorRegistry(auto_describe=False)
    sealing.register(SealingCollector(engine))
    return generate_latest(registry) + generate_latest(sealing)
