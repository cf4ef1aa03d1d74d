"""Prometheus metrics of a running pipeline, read from the components' own counters at scrape
time (a custom collector), so the hot path pays nothing for them. Names follow Prometheus
conventions: ``_total`` for counters, seconds as the base unit, no unbounded label (never an
order id): hops appear as labels only when the journeys file names them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tracer.engine import Tracer
from tracer.processor import Processor


@dataclass(slots=True)
class IngestStats:
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    per_hop: dict[tuple[str, str], int] = field(default_factory=dict)  # (hop, status) -> events


class PipelineCollector(Collector):
    def __init__(self, processor: Processor, ingest: IngestStats, extra: Callable[[], Iterator[Metric]] | None = None):
        self._processor = processor
        self._ingest = ingest
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        p = self._processor
        t: Tracer = p.tracer
        s = t.stats
        ingest = CounterMetricFamily("ordertrail_ingest_events", "Hop events received over HTTP", labels=["result"])
        ingest.add_metric(["accepted"], self._ingest.accepted)
        ingest.add_metric(["rejected"], self._ingest.rejected)
        yield ingest
        hops = CounterMetricFamily(
            "ordertrail_hop_events", "Hop events accepted, by hop and status", labels=["hop", "status"]
        )
        for (hop, status), n in sorted(self._ingest.per_hop.items()):
            hops.add_metric([hop, status], n)
        yield hops
        yield CounterMetricFamily("ordertrail_events_processed", "Hop events processed by the tracer", value=s.events)
        yield CounterMetricFamily("ordertrail_events_duplicate", "Duplicate hop events dropped", value=s.duplicates)
        yield CounterMetricFamily(
            "ordertrail_events_rejected", "Bus records rejected to the dead letters", value=p.stats.rejected
        )
        yield CounterMetricFamily(
            "ordertrail_orders_completed", "Orders that completed their journey", value=s.completed
        )
        raised = CounterMetricFamily("ordertrail_findings_raised", "Findings raised, by kind", labels=["kind"])
        for kind, n in sorted(s.raised.items()):
            raised.add_metric([kind], n)
        yield raised
        resolved = CounterMetricFamily(
            "ordertrail_findings_resolved", "Findings resolved by late hops", labels=["kind"]
        )
        for kind, n in sorted(s.resolved.items()):
            resolved.add_metric([kind], n)
        yield resolved
        yield GaugeMetricFamily("ordertrail_open_orders", "Orders held open by the tracer", value=len(t))
        yield GaugeMetricFamily(
            "ordertrail_pipeline_lag_records", "Bus records not yet processed", value=p.stats.lag_records
        )
        yield GaugeMetricFamily(
            "ordertrail_pipeline_lag_seconds",
            "How far the tracer's clock trails wall time",
            value=p.stats.lag_ms / 1000,
        )
        yield CounterMetricFamily(
            "ordertrail_store_errors", "Failed store writes (retried)", value=p.stats.store_errors
        )
        yield GaugeMetricFamily(
            "ordertrail_ready", "1 once open orders are restored and the pipeline runs", value=1 if p.stats.ready else 0
        )
        if self._extra is not None:
            yield from self._extra()


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
