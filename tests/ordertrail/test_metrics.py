"""The /metrics of a pipeline over fakes (memory bus, memory store, manual clock): names follow
the Prometheus conventions, labels stay bounded, and each metric counts what its help says."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from ordertrail.metrics import IngestStats, MeteredSink, MetricLabels, PipelineCollector, Throttled, render
from tests.tracer.conftest import T0, web_order
from tracer.bus import HOPS_TOPIC, Message
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError
from tracer.fakebus import MemoryBus
from tracer.memstore import MemStore
from tracer.model import Finding
from tracer.processor import Processor

JOURNEYS = web_order()  # CONTRACT §2's example


class Rig:
    """A processor over a memory bus and store, measured as ``ordertrail run`` measures it."""

    def __init__(self) -> None:
        self.wall = ManualClock(T0)
        self.bus = MemoryBus({HOPS_TOPIC: 1}, now_ms=self.wall.now_ms)
        self.store = MemStore()
        self.registry = CollectorRegistry(auto_describe=True)
        labels = MetricLabels(JOURNEYS)
        self.sink = MeteredSink(self.store, labels, self.registry)
        clock = PartitionClock(self.wall, in_flight_ms=0, warmup_ms=0)
        self.processor = Processor(
            self.bus.consumer(HOPS_TOPIC, "t"), self.sink, Tracer(JOURNEYS), clock, [0], max_records=1000
        )
        self.ingest = IngestStats()
        self.clock_s = 0.0
        waiting = Throttled(self.processor.tracer.waiting_by_step, clock=lambda: self.clock_s)
        self.registry.register(
            PipelineCollector(self.processor, self.ingest, labels=labels, hops=self.sink.hops, waiting=waiting)
        )

    def send(self, order_id: str, hop: str, at_ms: int, **fields: str) -> None:
        body = msgspec.json.encode({"order_id": order_id, "hop": hop, "ts": T0 + at_ms, **fields})
        self.bus.produce_batch(HOPS_TOPIC, [Message(order_id, body)])

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = render(self.registry).decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_counters_end_in_total_and_no_label_names_an_order_customer_or_trace(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0, customer_id="c-1")
    rig.processor.step()
    text = render(rig.registry).decode()
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("ordertrail_"), family.name
        for s in family.samples:
            if family.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name
            assert not {"order_id", "customer_id", "trace_id", "event_id"} & set(s.labels), s


def test_hop_events_are_counted_by_hop_and_status_and_unknown_hops_are_other(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.send("o-1", "payment.authorized", 1000, status="error")
    rig.send("o-2", "checkout.placed", 0)
    for i in range(3):
        rig.send(f"o-{i}", f"made.up.hop{i}", 0)  # three hop names nobody declared: one label value
    rig.processor.step()
    m = rig.scrape()
    assert value(m, "ordertrail_hop_events_total", hop="checkout.placed", status="ok") == 2
    assert value(m, "ordertrail_hop_events_total", hop="payment.authorized", status="error") == 1
    assert value(m, "ordertrail_hop_events_total", hop="other", status="ok") == 3
    assert value(m, "ordertrail_events_unmatched_total", reason="outside_journey") == 2  # o-1, o-2 know theirs


def test_hop_events_are_counted_only_once_the_store_has_them(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.store.fail_writes = 1
    with pytest.raises(StoreError):
        rig.processor.step()
    m = rig.scrape()
    assert value(m, "ordertrail_hop_events_total", hop="checkout.placed", status="ok") == 0
    assert value(m, "ordertrail_store_errors_total", operation="write") == 1
    rig.processor.step()  # the same batch, written again
    m = rig.scrape()
    assert value(m, "ordertrail_hop_events_total", hop="checkout.placed", status="ok") == 1
    assert value(m, "ordertrail_store_write_duration_seconds_count") == 2  # the failure is timed too
    assert value(m, "ordertrail_store_errors_total", operation="restore") == 0


def test_a_failed_restore_is_counted_and_raised(rig: Rig) -> None:
    class Down(MemStore):
        def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
            raise StoreError("store down")

        def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
            raise StoreError("store down")

    registry = CollectorRegistry()
    sink = MeteredSink(Down(), MetricLabels(JOURNEYS), registry)
    with pytest.raises(StoreError):
        sink.open_orders([0])
    with pytest.raises(StoreError):
        sink.closed_orders(["o-1"])  # the orders read again after a restore: a part of it
    assert registry.get_sample_value("ordertrail_store_errors_total", {"operation": "restore"}) == 2


def test_findings_are_counted_by_kind_as_raised_and_resolved(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.processor.step()
    rig.wall.advance(31_000)
    rig.processor.step()  # caught up: wall time moves the clock past the 30 s deadline
    m = rig.scrape()
    assert value(m, "ordertrail_findings_raised_total", kind="missing") == 1
    rig.send("o-1", "payment.authorized", 40_000)
    rig.processor.step()
    assert value(rig.scrape(), "ordertrail_findings_resolved_total", kind="missing") == 1


def test_edge_transit_histogram_counts_each_edge_in_seconds(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.send("o-1", "payment.authorized", 1_500)
    rig.send("o-2", "checkout.placed", 0)
    rig.send("o-2", "payment.authorized", 45_000)  # late, still a transit
    rig.processor.step()
    m = rig.scrape()
    edge = {"journey": "web_order", "hop": "payment.authorized"}
    assert value(m, "ordertrail_edge_transit_seconds_bucket", le="1.0", **edge) == 0
    assert value(m, "ordertrail_edge_transit_seconds_bucket", le="2.0", **edge) == 1
    assert value(m, "ordertrail_edge_transit_seconds_bucket", le="60.0", **edge) == 2
    assert value(m, "ordertrail_edge_transit_seconds_bucket", le="+Inf", **edge) == 2
    assert value(m, "ordertrail_edge_transit_seconds_count", **edge) == 2
    assert value(m, "ordertrail_edge_transit_seconds_sum", **edge) == pytest.approx(46.5)
    # every edge is there from the start, empty: rates and objectives need no first sample
    assert value(m, "ordertrail_edge_transit_seconds_count", journey="web_order", hop="inventory.reserved") == 0


def test_orders_waiting_are_counted_at_each_step_they_wait_for(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.send("o-2", "checkout.placed", 0)
    rig.send("o-2", "payment.authorized", 1000)  # now waits for two parallel steps
    rig.send("o-3", "somewhere.else", 0)  # no journey known
    rig.processor.step()
    m = rig.scrape()
    assert value(m, "ordertrail_open_orders") == 3
    assert value(m, "ordertrail_orders_waiting", journey="web_order", step="payment.authorized") == 1
    assert value(m, "ordertrail_orders_waiting", journey="web_order", step="inventory.reserved") == 1
    assert value(m, "ordertrail_orders_waiting", journey="web_order", step="email.confirmation_sent") == 1
    assert value(m, "ordertrail_orders_waiting", journey="none", step="none") == 1


def test_orders_waiting_is_refreshed_at_most_every_ten_seconds(rig: Rig) -> None:
    rig.send("o-1", "checkout.placed", 0)
    rig.processor.step()
    assert value(rig.scrape(), "ordertrail_orders_waiting", journey="web_order", step="payment.authorized") == 1
    rig.send("o-2", "checkout.placed", 0)
    rig.processor.step()
    rig.clock_s = 9.9
    assert value(rig.scrape(), "ordertrail_orders_waiting", journey="web_order", step="payment.authorized") == 1
    rig.clock_s = 10.0
    assert value(rig.scrape(), "ordertrail_orders_waiting", journey="web_order", step="payment.authorized") == 2


def test_throttled_waits_longer_when_the_reading_is_costly() -> None:
    now = [0.0]
    reads = [0]

    def costly() -> dict[tuple[str, str], int]:
        reads[0] += 1
        now[0] += 2.0  # the reading takes 2 s: the next one waits 20 x 2 s
        return {}

    t = Throttled(costly, clock=lambda: now[0])
    t.get()
    now[0] = 30.0
    t.get()
    assert reads[0] == 1
    now[0] = 42.0
    t.get()
    assert reads[0] == 2


def test_pipeline_lag_dead_letters_and_ingest_results_are_exposed(rig: Rig) -> None:
    rig.bus.produce_batch(HOPS_TOPIC, [Message("x", b"not json")])
    rig.ingest.accepted, rig.ingest.rejected, rig.ingest.unavailable = 5, 2, 1
    rig.processor.step()
    m = rig.scrape()
    assert value(m, "ordertrail_events_rejected_total") == 1
    assert value(m, "ordertrail_ingest_events_total", result="accepted") == 5
    assert value(m, "ordertrail_ingest_events_total", result="rejected") == 2
    assert value(m, "ordertrail_ingest_events_total", result="unavailable") == 1
    assert value(m, "ordertrail_pipeline_lag_records") == 0
    assert ("ordertrail_pipeline_lag_seconds", ()) in m


def test_every_metric_is_documented(rig: Rig) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "dashboards.md").read_text()
    for family in text_string_to_metric_families(render(rig.registry).decode()):
        if family.name.endswith("_created"):  # prometheus_client's creation times of its own metrics
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        assert f"| `{name}` |" in docs, f"{name} is not in docs/dashboards.md's table of metrics"


def test_a_role_without_a_tracer_exports_no_tracer_series() -> None:
    """Else ``OrdertrailNoEvents`` (no events processed while ready) fires for every ingest,
    lookup-server and detectors instance after 15 minutes."""
    rig = Rig()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(PipelineCollector(rig.processor, rig.ingest, tracing=False))
    names = {family.name for family in text_string_to_metric_families(render(registry).decode())}
    assert "ordertrail_ingest_events" in names and "ordertrail_ready" in names
    assert not names & {"ordertrail_events_processed", "ordertrail_open_orders", "ordertrail_pipeline_lag_seconds"}
