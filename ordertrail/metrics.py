"""Prometheus metrics of a running pipeline (``GET /metrics``), read from the components' own
counters at scrape time (a custom collector), so the hot path pays next to nothing for them.

Conventions: counters end in ``_total``, durations are seconds, no label is unbounded: never an
order, customer or trace id; ``hop`` and ``journey`` label values come from the journeys file, any
other name is reported as ``other`` (``none`` where there is none). docs/dashboards.md lists every
metric; dashboards/ and its tests rely on these names.

Where the numbers come from:

* the tracer's and processor's stats, the learned edges' transit histograms (``EdgeTransit``)
  and the open orders (``Tracer.waiting_by_step``, a scan of the open orders: refreshed at most every
  ``max(10 s, 20 × its cost)``, so it never takes more than ~5 % of a core, however big);
* ``MeteredSink``, the store as the processor sees it: write latency, errors, and the hop events
  written by hop and status (counted per batch, after the write succeeded);
* ``IngestStats``, what the HTTP ingest accepted and rejected.

This module is part of the composition root; it imports the tracer, never the reverse.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from collectors.otlp import OtlpStats
from tracer.engine import OrderSnapshot, Tracer
from tracer.journeys import Journeys
from tracer.model import FINDING_KINDS, STATUS_ERROR, STATUS_OK, Finding, HopEvent
from tracer.processor import Processor, Sink
from tracer.transit import BUCKETS_MS

OTHER: Final = "other"  # a hop or journey the journeys file does not name
NONE: Final = "none"  # no journey (yet), or no step awaited
# Store writes take milliseconds (chDB) to seconds (a loaded server): 1 ms to 10 s.
STORE_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GO_FLOAT: Final[Callable[[float], str]] = floatToGoString  # how prometheus_client writes `le` (untyped there)
_TRANSIT_LE: Final = (*(_GO_FLOAT(ms / 1000) for ms in BUCKETS_MS), "+Inf")
_HOP_STATUS: Final = attrgetter("hop", "status")


@dataclass(slots=True)
class IngestStats:
    accepted: int = 0
    rejected: int = 0  # failed validation, answered with their reasons
    unavailable: int = 0  # the bus could not make them durable: answered 503, to be retried


class MetricLabels:
    """The bounded label values: the journeys file's journeys and hops."""

    def __init__(self, journeys: Journeys) -> None:
        self.journeys = frozenset(journeys.journeys)
        self.hops = frozenset(hop for j in journeys.journeys.values() for hop in j.hops)

    def hop(self, hop: str) -> str:
        return hop if hop in self.hops else OTHER

    def journey(self, journey: str) -> str:
        if not journey:
            return NONE
        return journey if journey in self.journeys else OTHER


class HopCounts:
    """Hop events by (hop, status), hop names outside the journeys file folded into ``other``.
    One C-speed ``Counter`` pass per batch, then a merge per distinct (hop, status)."""

    def __init__(self, labels: MetricLabels) -> None:
        self._labels = labels
        # every known (hop, status) from the start: an error rate is 0 before the first error
        self.counts: dict[tuple[str, str], int] = {
            (hop, status): 0 for hop in (*sorted(labels.hops), OTHER) for status in (STATUS_OK, STATUS_ERROR)
        }

    def add(self, events: Sequence[HopEvent]) -> None:
        counts, label = self.counts, self._labels.hop
        for (hop, status), n in Counter(map(_HOP_STATUS, events)).items():
            key = (label(hop), status)
            counts[key] = counts.get(key, 0) + n


class MeteredSink:
    """The store as the processor sees it (``tracer.processor.Sink``), measured: how long each
    batch write takes, which calls fail, and the hop events written. Errors pass through
    unchanged: the processor decides what a failure means."""

    def __init__(self, sink: Sink, labels: MetricLabels, registry: CollectorRegistry) -> None:
        self._sink = sink
        self.hops = HopCounts(labels)
        self._latency = PromHistogram(
            "ordertrail_store_write_duration_seconds",
            "Time to write one batch (hop events, findings, order states) to the store",
            buckets=STORE_BUCKETS_S,
            registry=registry,
        )
        self._errors = PromCounter(
            "ordertrail_store_errors",
            "Failed store calls (writes are retried, nothing is committed until they succeed)",
            ["operation"],
            registry=registry,
        )
        for operation in ("write", "restore"):
            self._errors.labels(operation)

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        started = time.perf_counter()
        try:
            self._sink.write(events, findings, snapshots)
        except BaseException:
            self._errors.labels("write").inc()
            raise
        finally:
            self._latency.observe(time.perf_counter() - started)
        if events:
            self.hops.add(events)

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        try:
            return self._sink.open_orders(partitions)
        except BaseException:
            self._errors.labels("restore").inc()
            raise

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        try:
            return self._sink.closed_orders(order_ids)
        except BaseException:
            self._errors.labels("restore").inc()  # a part of the rebuild after a restore
            raise


class Throttled:
    """A costly reading, taken again only when the last one is older than ``max(min_age_s,
    spread × what it cost)``: its share of a core stays under ``1 / spread``."""

    def __init__(
        self,
        read: Callable[[], dict[tuple[str, str], int]],
        *,
        min_age_s: float = 10.0,
        spread: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._min_age_s = min_age_s
        self._spread = spread
        self._clock = clock
        self._value: dict[tuple[str, str], int] = {}
        self._at: float | None = None
        self._cost = 0.0

    def get(self) -> dict[tuple[str, str], int]:
        now = self._clock()
        if self._at is None or now - self._at >= max(self._min_age_s, self._spread * self._cost):
            self._value = self._read()
            self._at = self._clock()
            self._cost = self._at - now
        return self._value


class PipelineCollector(Collector):
    def __init__(
        self,
        processor: Processor,
        ingest: IngestStats,
        extra: Callable[[], Iterator[Metric]] | None = None,
        *,
        labels: MetricLabels | None = None,
        hops: HopCounts | None = None,
        waiting: Throttled | None = None,
        tracing: bool = True,
    ):
        self._processor = processor
        self._tracing = tracing  # a role without a tracer exports no tracer series (no NoEvents alert)
        self._ingest = ingest
        self._extra = extra
        self._labels = labels if labels is not None else MetricLabels(processor.tracer.journeys)
        self._hops = hops
        self._waiting = waiting if waiting is not None else Throttled(processor.tracer.waiting_by_step)

    def describe(self) -> Iterator[Metric]:
        """What ``collect`` yields, without the costly reading: the registry calls this once when
        the collector is registered (to refuse duplicate names)."""
        return self._families(describing=True)

    def collect(self) -> Iterator[Metric]:
        return self._families(describing=False)

    def _families(self, *, describing: bool) -> Iterator[Metric]:
        p = self._processor
        t: Tracer = p.tracer
        s = t.stats
        ingest = CounterMetricFamily(
            "ordertrail_ingest_events", "Hop events received over HTTP, by result", labels=["result"]
        )
        ingest.add_metric(["accepted"], self._ingest.accepted)
        ingest.add_metric(["rejected"], self._ingest.rejected)
        ingest.add_metric(["unavailable"], self._ingest.unavailable)
        yield ingest
        if not self._tracing:
            yield self._ready()
            if self._extra is not None:
                yield from self._extra()
            return
        if self._hops is not None:
            hops = CounterMetricFamily(
                "ordertrail_hop_events",
                "Hop events the tracer processed and stored, by hop and status (re-deliveries included)",
                labels=["hop", "status"],
            )
            for (hop, status), n in sorted(self._hops.counts.items()):
                hops.add_metric([hop, status], n)
            yield hops
        yield CounterMetricFamily("ordertrail_events_processed", "Hop events processed by the tracer", value=s.events)
        yield CounterMetricFamily(
            "ordertrail_events_duplicate", "Duplicate hop events dropped (same event id)", value=s.duplicates
        )
        yield CounterMetricFamily(
            "ordertrail_events_rejected", "Bus records rejected to the dead letters", value=p.stats.rejected
        )
        unmatched = CounterMetricFamily(
            "ordertrail_events_unmatched",
            "Hop events stored but used for no deadline, by reason",
            labels=["reason"],
        )
        unmatched.add_metric(["outside_journey"], s.outside_journey)
        unmatched.add_metric(["unknown_journey"], s.unknown_journey)
        unmatched.add_metric(["after_close"], s.after_close)
        yield unmatched
        yield CounterMetricFamily("ordertrail_batches", "Batches processed and stored", value=p.stats.batches)
        yield CounterMetricFamily(
            "ordertrail_batches_fenced",
            "Batches dropped unstored: the tracer had left the consumer group (its partitions moved on) before "
            "it could store them",
            value=p.stats.fenced,
        )
        yield CounterMetricFamily(
            "ordertrail_orders_completed", "Orders that completed their journey", value=s.completed
        )
        yield CounterMetricFamily(
            "ordertrail_orders_retired",
            "Orders no longer held: nothing awaited for the retention period",
            value=s.retired,
        )
        raised = CounterMetricFamily("ordertrail_findings_raised", "Findings raised, by kind", labels=["kind"])
        for kind in FINDING_KINDS:  # every kind from the start: rate() needs no first finding
            raised.add_metric([kind], s.raised.get(kind, 0))
        yield raised
        resolved = CounterMetricFamily(
            "ordertrail_findings_resolved",
            "Findings resolved (the hop arrived late, or a failure superseded them), by kind",
            labels=["kind"],
        )
        for kind in FINDING_KINDS:
            resolved.add_metric([kind], s.resolved.get(kind, 0))
        yield resolved
        yield GaugeMetricFamily("ordertrail_open_orders", "Orders held open by the tracer", value=len(t))
        yield self._waiting_family(describing)
        yield self._transit_family(t)
        yield GaugeMetricFamily(
            "ordertrail_pipeline_lag_records", "Bus records not yet processed", value=p.stats.lag_records
        )
        yield GaugeMetricFamily(
            "ordertrail_pipeline_lag_seconds",
            "How far the tracer's clock trails wall time",
            value=p.stats.lag_ms / 1000,
        )
        yield self._ready()
        if p.stitcher is not None:
            st = p.stitcher.stats
            stitched = CounterMetricFamily(
                "ordertrail_stitch_events", "Events reported under another key of their order", labels=["result"]
            )
            for result, n in (("rekeyed", st.rekeyed), ("waited", st.waited), ("unlinked", st.unlinked)):
                stitched.add_metric([result], n)
            yield stitched
            yield CounterMetricFamily(
                "ordertrail_stitch_links", "Links learned between keys and orders", value=st.linked
            )
            yield GaugeMetricFamily(
                "ordertrail_stitch_waiting", "Events waiting for the event that links their key", value=len(p.stitcher)
            )
        if self._extra is not None:
            yield from self._extra()

    def _ready(self) -> GaugeMetricFamily:
        ready = 1 if self._processor.stats.ready else 0
        return GaugeMetricFamily(
            "ordertrail_ready", "1 once open orders are restored and the pipeline runs", value=ready
        )

    def _waiting_family(self, describing: bool) -> GaugeMetricFamily:
        waiting = GaugeMetricFamily(
            "ordertrail_orders_waiting",
            "Open orders by journey and the step they wait for (at both of two parallel steps; "
            'step="none": waiting for nothing). Refreshed at most every 10 s',
            labels=["journey", "step"],
        )
        merged: dict[tuple[str, str], int] = {}
        for (journey, step), n in ({} if describing else self._waiting.get()).items():
            key = (self._labels.journey(journey), self._labels.hop(step) if step else NONE)
            merged[key] = merged.get(key, 0) + n
        for (journey, step), n in sorted(merged.items()):
            waiting.add_metric([journey, step], n)
        return waiting

    def _transit_family(self, t: Tracer) -> HistogramMetricFamily:
        transit = HistogramMetricFamily(
            "ordertrail_edge_transit_seconds",
            "Event-time transit of each edge of a journey: from the step's after hop to the step's hop",
            labels=["journey", "hop"],
        )
        for journey, hop, edge in t.edges():
            cumulative = edge.histogram()
            transit.add_metric(
                [journey, hop],
                buckets=list(zip(_TRANSIT_LE, cumulative, strict=True)),
                sum_value=edge.sum_ms / 1000,
            )
        return transit


class OtlpCollector(Collector):
    """The ``/v1/traces`` route: spans by what became of them, refused requests by HTTP status."""

    def __init__(self, stats: OtlpStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield CounterMetricFamily("ordertrail_otlp_requests", "OTLP trace export requests received", value=s.requests)
        yield _labelled(
            "ordertrail_otlp_spans",
            "OTLP spans received: hop (carried the order attribute), ignored (did not), rejected (unusable)",
            "result",
            (("hop", s.hops), ("ignored", s.ignored), ("rejected", s.rejected)),
        )
        yield _labelled(
            "ordertrail_otlp_refused_requests",
            "OTLP export requests answered with an error",
            "code",
            ((str(code), n) for code, n in sorted(s.refused.items())),
        )


def _labelled(name: str, documentation: str, label: str, values: Iterable[tuple[str, float]]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, n in values:
        family.add_metric([value], n)
    return family


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
