"""The detectors' own Prometheus metrics, read at scrape time (a custom collector registered in the
pipeline's registry next to the pipeline's collector). Labels are bounded: journeys and hops of the
journeys file, alert names, sink names — never an order or incident id.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from detectors.watch import Watch


class DetectorCollector(Collector):
    def __init__(self, watch: Watch) -> None:
        self._watch = watch

    def collect(self) -> Iterator[Metric]:
        w = self._watch
        opened = GaugeMetricFamily(
            "ordertrail_incidents_open",
            "Open incidents, by journey, hop and kind",
            labels=["journey", "hop", "kind"],
        )
        orders = GaugeMetricFamily(
            "ordertrail_incident_orders",
            "Orders held open by open incidents (their blast radius), by journey, hop and kind",
            labels=["journey", "hop", "kind"],
        )
        counts: dict[tuple[str, str, str], tuple[int, int]] = {}
        for inc in w.incidents.open_incidents():
            n, o = counts.get(inc.key, (0, 0))
            counts[inc.key] = (n + 1, o + len(inc.open_orders))
        for key, (n, o) in sorted(counts.items()):
            opened.add_metric(list(key), n)
            orders.add_metric(list(key), o)
        yield opened
        yield orders
        yield CounterMetricFamily("ordertrail_incidents_opened", "Incidents opened", value=w.incidents.opened)
        firing = GaugeMetricFamily("ordertrail_alerts_firing", "Alerts firing now", labels=["alertname"])
        by_name: dict[str, int] = {}
        for a in w.firing():
            by_name[a.name] = by_name.get(a.name, 0) + 1
        for name, n in sorted(by_name.items()):
            firing.add_metric([name], n)
        yield firing
        sent = CounterMetricFamily("ordertrail_alerts_sent", "Alerts delivered, by sink", labels=["sink"])
        failed = CounterMetricFamily(
            "ordertrail_alerts_failed", "Alerts a sink could not deliver, by sink", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            "ordertrail_alerts_dropped", "Alerts dropped because a sink's queue was full", labels=["sink"]
        )
        for name, st in sorted(w.dispatcher.stats.items()):
            sent.add_metric([name], st.sent)
            failed.add_metric([name], st.failed)
            dropped.add_metric([name], st.dropped)
        yield sent
        yield failed
        yield dropped
        if w.health is not None:
            yield GaugeMetricFamily(
                "ordertrail_pipeline_degraded",
                "1 while PipelineDegraded fires",
                value=1 if w.health.degraded else 0,
            )
        if w.edges is not None:
            stuck = GaugeMetricFamily(
                "ordertrail_edge_stuck_orders",
                "Orders waiting at an edge longer than its learned limit, still inside their deadline",
                labels=["journey", "hop"],
            )
            limit = GaugeMetricFamily(
                "ordertrail_edge_stuck_limit_seconds",
                "The waiting time past which an order counts as stuck at an edge (baseline p99 x factor)",
                labels=["journey", "hop"],
            )
            for (journey, hop), edge in sorted(w.edges.states.items()):
                stuck.add_metric([journey, hop], edge.stuck)
                if edge.threshold_ms:
                    limit.add_metric([journey, hop], edge.threshold_ms / 1000)
            yield stuck
            yield limit
