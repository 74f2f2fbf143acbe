"""``GET /metrics``: the exposition of every worker's samples, and the sealing gauges.

The sealing gauges (entries not sealed yet, seconds since the newest checkpoint, across
orgs) are measured by the background job after each sealing pass and kept in the database,
so they are the same whichever worker or host answers, and a scrape costs one small read
whether there are 10 orgs or 10,000.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from insights_audit.models import NEWEST_CHECKPOINT, UNSEALED_ENTRIES, ServiceGauge


class SealingCollector(Collector):
    """The sealing gauges, as the background job last measured them: one small read per
    scrape, however many orgs there are."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        with self._engine.connect() as connection:
            now = float(connection.scalar(select(func.extract("epoch", func.now()))) or 0)
            measured = {
                row.name: row.value
                for row in connection.execute(select(ServiceGauge.name, ServiceGauge.value))
            }
            connection.rollback()
        yield GaugeMetricFamily(
            "insights_audit_unsealed_entries",
            "Entries newer than their org's last checkpoint (as of the last sealing pass)",
            value=measured.get(UNSEALED_ENTRIES, 0),
        )
        newest = measured.get(NEWEST_CHECKPOINT)
        if newest is not None:
            yield GaugeMetricFamily(
                "insights_audit_seconds_since_last_checkpoint",
                "Seconds since the newest checkpoint of any org was sealed",
                value=now - newest,
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
