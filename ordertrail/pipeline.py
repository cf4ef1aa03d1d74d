"""The running pipeline of ``ordertrail run``: wires the bus, the tracer, the store and the HTTP
API together (the composition root's one stateful object).

    HTTP /v1/events ──▶ bus producer (durable) ──▶ processor thread: consumer → tracer → store
                                                         └─▶ finding listeners (log, detectors)
    HTTP lookups ◀── store (+ the tracer's learned transit times)

A lookup reads the order from the store (one point read) and its incident from memory; how many
orders wait at the same step comes from one answer about every step (``Store.waiting``), cached
for ``LOOKUP_CONTEXT_MAX_AGE_MS`` and refreshed in the background (``ordertrail.refresh``), so no
lookup pays for a scan of the open orders.

It implements ``ordertrail.server.Api``. The deployable roles use parts of it (``ordertrail.roles``):
without a ``source`` it runs no tracer (the ingest and lookup-server roles), without a ``store``
it answers no lookups (the ingest role), without a ``producer`` it takes no events (lookup-server).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from collectors.otlp import OtlpStats
from collectors.propagation import TRACEPARENT
from detectors import AlertSink, DetectorCollector
from ordertrail.alerting import build_watch
from ordertrail.config import RunConfig
from ordertrail.metrics import IngestStats, MeteredSink, MetricLabels, OtlpCollector, PipelineCollector, render
from ordertrail.page import render_page
from ordertrail.refresh import Refreshed
from tracer.bus import HOPS_TOPIC, Headers, InputRecord, KeyPartitioner, Message, Producer
from tracer.clickhouse import Store
from tracer.clock import Clock, PartitionClock
from tracer.engine import OrderSnapshot
from tracer.errors import TracerError
from tracer.journeys import Journeys
from tracer.lookup import build_order_view, explain_unknown, search_views
from tracer.model import Finding, HopEvent, event_to_wire
from tracer.processor import DeadLetterSink, FindingListener, Processor, Sink, Source
from tracer.stitch import Stitcher
from tracer.waiting import WaitingTracer

log = logging.getLogger("ordertrail.pipeline")
_ENCODE = msgspec.json.Encoder()
_RESTORE_LIMIT = 1_000_000
LOOKUP_CONTEXT_MAX_AGE_MS = 5_000  # how stale "orders waiting at the same step" may be


class Pipeline:
    def __init__(
        self,
        config: RunConfig,
        journeys: Journeys,
        *,
        producer: Producer | None,
        source: Source | None,
        store: Store | None,
        wall: Clock,
        partitions: Sequence[int],
        dead_letter: DeadLetterSink | None = None,
        listeners: Sequence[FindingListener] = (),
        sinks: list[AlertSink] | None = None,
        sink: Sink | None = None,
        headers: Callable[[HopEvent], Headers] | None = None,
        topic_partitions: int | None = None,
        role: str = "run",
    ) -> None:
        self.config = config
        self.journeys = journeys
        self._store = store
        self._producer = producer
        self._headers = headers  # record headers of an ingested event (trace context on Kafka)
        self._tracing = source is not None
        self._wall = wall
        self.tracer = WaitingTracer(journeys, retention_ms=config.retention_ms)
        self.clock = PartitionClock(wall, in_flight_ms=config.in_flight_ms, warmup_ms=config.warmup_ms)
        self.registry = CollectorRegistry(auto_describe=True)
        labels = MetricLabels(journeys)
        # The store as the tracer writes it (on Kafka: findings published first), timed and counted.
        sink = MeteredSink(sink or store or _IDLE, labels, self.registry)
        # Stitching re-keyed orders (docs/stitching.md): only when the journeys declare other keys.
        self.stitcher = Stitcher(journeys, lookup=store.key_links if store is not None else None)
        self.processor = Processor(
            source or _IDLE,
            sink,
            self.tracer,
            self.clock,
            partitions,
            dead_letter=dead_letter,
            listeners=listeners,
            stitcher=self.stitcher,
            stitch_store=store,
            partitioner=KeyPartitioner(topic_partitions or max(len(partitions), 1)),
            forward=self._forward,
        )
        self.role = role
        self.watch = build_watch(
            config, self.processor, self.tracer, self.processor.lock, wall, store=store, sinks=sinks, role=role
        )
        self.processor.add_listener(self.watch.on_findings)
        if not self._tracing:
            self.processor.stats.ready = True  # nothing to restore: lookups over the store
        self.ingest_stats = IngestStats()
        self.registry.register(
            PipelineCollector(self.processor, self.ingest_stats, labels=labels, hops=sink.hops, tracing=self._tracing)
        )
        self.otlp_stats = OtlpStats()  # the /v1/traces route counts into it
        self.registry.register(OtlpCollector(self.otlp_stats))
        self.registry.register(DetectorCollector(self.watch))
        self._waiting: Refreshed[dict[tuple[str, str], tuple[int, int]]] = Refreshed(
            store.waiting if store is not None else dict, wall, LOOKUP_CONTEXT_MAX_AGE_MS
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        if self._store is None:
            raise TracerError("the ingest role keeps no store: look orders up on `ordertrail lookup-server`")
        return self._store

    def start(self) -> None:
        if self._store is not None:
            self._restore_incidents()
            threading.Thread(target=self._warm_lookup_context, name="lookup-warmup", daemon=True).start()
        if self.role == "detectors":
            self.watch.start()  # fed by the findings topic (ordertrail.roles)
        if not self._tracing:
            return
        self._thread = threading.Thread(target=self.processor.run, args=(self._stop,), name="tracer", daemon=True)
        self._thread.start()
        self.watch.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.watch.stop()

    def _warm_lookup_context(self) -> None:
        """Load the cached lookup answers once at start, so that the first lookups do not wait."""
        try:
            self._waiting.get()
        except Exception as exc:  # the first lookup loads it again and reports the error
            log.info("lookup context not loaded at start: %s", exc)

    def _restore_incidents(self) -> None:
        """Incidents are in memory: rebuild them from the store's open findings (same ids)."""
        try:
            n = self.watch.incidents.restore(self.store.findings(status="open", limit=_RESTORE_LIMIT))
        except TracerError as exc:
            log.error("cannot restore incidents from the store's open findings (%s); starting empty", exc)
            return
        if n:
            log.info("restored %d open incidents", n)

    # -- server.Api -----------------------------------------------------------------------------

    def ingest(self, events: Sequence[HopEvent]) -> None:
        if self._producer is None:
            raise TracerError("this role takes no events: send them to `ordertrail ingest` or to the bus")
        encode = _ENCODE.encode
        headers = self._headers
        try:
            self._producer.produce_batch(
                HOPS_TOPIC,
                [Message(ev.order_id, encode(event_to_wire(ev)), headers(ev) if headers else ()) for ev in events],
            )
        except Exception:
            self.ingest_stats.unavailable += len(events)  # answered 503: the sender retries
            raise
        self.ingest_stats.accepted += len(events)

    def count_rejected(self, n: int) -> None:
        """Events of an ingest request that failed validation (answered with their reasons)."""
        self.ingest_stats.rejected += n

    def _forward(self, events: Sequence[HopEvent]) -> None:
        """Re-keyed events whose order another tracer owns: back to the bus under the order id."""
        encode = _ENCODE.encode
        if self._producer is None:
            raise TracerError("re-keyed events cannot be forwarded: this pipeline has no producer")
        self._producer.produce_batch(HOPS_TOPIC, [Message(ev.order_id, encode(event_to_wire(ev))) for ev in events])

    def order_view(self, order_id: str) -> dict[str, Any] | None:
        record = self.store.order(order_id)
        found_by = None
        if record is None and self.stitcher.active:
            link = self.store.order_for_key(order_id)  # another key of an order: a payment id, …
            if link is not None:
                record = self.store.order(link.order_id)
                found_by = {"key": link.key, "value": order_id}
        if record is None:
            return None
        view = build_order_view(
            record,
            self.journeys,
            now_ms=self._now(),
            waiting=self._waiting_at,
            transit=self.transit,
            incident=self.watch.incident_of(order_id),
        )
        if found_by is not None:
            view["found_by"] = found_by
        return view

    def unknown_order(self, order_id: str) -> dict[str, Any]:
        checked = ["every hop event received (by order id)"]
        keys = sorted({k.name for j in self.journeys.journeys.values() for k in j.keys})
        if keys:
            checked.append(f"the other keys of orders ({', '.join(keys)})")
        checked.append(f"the open orders of journeys {', '.join(sorted(self.journeys.journeys))}")
        return explain_unknown(order_id, checked)

    def search(self, *, customer_id: str | None, trace_id: str | None, limit: int) -> list[dict[str, Any]]:
        found = self.store.orders(customer_id=customer_id, trace_id=trace_id, limit=limit)
        return search_views(found, now_ms=self._now())

    def findings(self, *, status: str, kind: str | None, journey: str | None, limit: int) -> list[dict[str, Any]]:
        return [f.to_wire() for f in self.store.findings(status=status, kind=kind, journey=journey, limit=limit)]

    def incidents(self) -> list[dict[str, Any]]:
        return self.watch.incident_views()

    def metrics(self) -> tuple[bytes, str]:
        return render(self.registry), "text/plain; version=0.0.4; charset=utf-8"

    def ready(self) -> tuple[bool, dict[str, Any]]:
        s = self.processor.stats
        return s.ready, {
            "restored_orders": s.restored_orders,
            "lag_records": s.lag_records,
            "open_orders": len(self.tracer),
            "partitions": list(self.processor.partitions),
        }

    def page(self, query: str) -> str:
        if not query:
            return render_page(None, query="", error=None, searched=None)
        view = self.order_view(query)
        if view is not None:
            return render_page(view, query=query, error=None, searched=None)
        found = self.search(customer_id=query, trace_id=None, limit=50)
        if not found and len(query) == 32:
            found = self.search(customer_id=None, trace_id=query.lower(), limit=50)
        if found:
            return render_page(None, query=query, error=None, searched=found)
        return render_page(None, query=query, error=self.unknown_order(query)["explanation"], searched=None)

    # -- helpers --------------------------------------------------------------------------------

    def transit(self, journey: str, hop: str) -> tuple[int, int] | None:
        """The learned (p50, p99) transit time of the edge into ``hop``, if learned yet."""
        j = self.journeys.journeys.get(journey)
        if j is None or hop not in j.index:
            return None
        # No processor lock: a lookup must not wait for a batch. The edges are fixed at start and
        # recent() is one list slice, atomic under the GIL; a sample written meanwhile is harmless.
        edge = self.tracer.edge(journey, hop)
        samples = edge.recent() if edge is not None else []
        if len(samples) < 10:
            return None
        samples.sort()
        return samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]

    def _waiting_at(self, journey: str, hop: str) -> tuple[int, int | None]:
        """How many open orders wait at a step, from the cached answer for every step."""
        n, since = self._waiting.get().get((journey, hop), (0, 0))
        return n, (since if n else None)

    def _now(self) -> int:
        now = self.clock.now()
        return now if now is not None else self._wall.now_ms()


def trace_headers(ev: HopEvent) -> Headers:
    """W3C ``traceparent`` of a hop event, where its span is known (CONTRACT §6)."""
    span = ev.span_id or ev.parent_span_id
    if not span:
        return ()
    return ((TRACEPARENT, f"00-{ev.trace_id}-{span}-01".encode()),)


class _Idle:
    """Source and sink of a pipeline that runs no tracer: never polled, never written."""

    def poll(self, max_records: int, timeout_s: float) -> list[InputRecord]:
        return []

    def commit(self, positions: dict[int, int]) -> None:
        pass

    def lag(self) -> dict[int, int]:
        return {}

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        raise TracerError("this role runs no tracer")

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return [], []

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return []


_IDLE = _Idle()
