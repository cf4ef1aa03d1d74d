"""Benchmark of the Prometheus metrics (issue 5): what one scrape of ``/metrics`` costs with many
open orders.

* ``scrape``: a fresh interpreter holds N open orders of the example web order, spread over its
  steps, in a processor measured as ``ordertrail run`` measures it (``ordertrail.metrics``), and
  renders ``/metrics`` twice per round: once refreshing ``ordertrail_orders_waiting`` (a scan of
  the open orders, ``Tracer.waiting_by_step``), once with that reading cached, which is what the
  other scrapes of a 10 s window pay; best of three rounds. The cached render is the reference:
  the difference is the scan, paid at most every ``max(10 s, 20 × its cost)``.

The child runs as ``python -m bench.metrics scrape --orders N --journeys FILE``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import Context, Row, Section, report, run_child, workload


def scrape(ctx: Context) -> Section:
    n = ctx.scale.memory_orders
    result = run_child("bench.metrics", "scrape", "--orders", str(n), "--journeys", str(ctx.journeys))
    ctx.log(f"  render {result['render_scan_ms']:.0f} ms with the scan, {result['render_cached_ms']:.1f} ms cached")
    section = Section(
        reference="the same render of /metrics with the open-orders reading cached (every scrape but one "
        "per 10 s window)"
    )
    section.rows.append(
        Row(
            f"render /metrics, {result['orders']:,} open orders, open-orders scan refreshed",
            result["render_scan_ms"],
            "ms",
            result["render_cached_ms"],
        )
    )
    section.rows.append(
        Row(f"Tracer.waiting_by_step at {result['orders']:,} open orders", result["scan_ms"], "ms"),
    )
    section.notes.append(
        f"{result['series']:,} series in the scrape ({result['bytes']:,} bytes). The scan runs at most every "
        f"max(10 s, 20 × {result['scan_ms'] / 1000:.2f} s), so it costs at most 5 % of a core. Half the orders "
        f"wait for payment, half for the {result['steps'] - 1} steps after it."
    )
    return section


def measure_scrape(orders: int, journeys_path: Path) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from ordertrail.metrics import IngestStats, MeteredSink, MetricLabels, PipelineCollector, Throttled, render
    from tracer.bus import HOPS_TOPIC
    from tracer.clock import ManualClock, PartitionClock
    from tracer.engine import Tracer
    from tracer.fakebus import MemoryBus
    from tracer.journeys import load_journeys
    from tracer.memstore import MemStore
    from tracer.model import HopEvent, derive_event_id, derive_trace_id
    from tracer.processor import Processor

    journeys = load_journeys(journeys_path)
    tracer = Tracer(journeys, track_snapshots=False)
    hops = [workload.CHECKOUT, workload.PAYMENT]
    start = workload.START_MS
    tracer.advance(start)
    for i in range(orders):
        order_id = f"ord-{workload.FIRST_ORDER + i:09d}"
        for k, hop in enumerate(hops[: 1 + i % len(hops)]):  # half wait for payment, half further on
            ts = start + 100 * k
            tracer.on_event(HopEvent(order_id, hop, ts, derive_event_id(order_id, hop, ts), derive_trace_id(order_id)))
    wall = ManualClock(start)
    bus = MemoryBus({HOPS_TOPIC: 1}, now_ms=wall.now_ms)
    registry = CollectorRegistry()
    labels = MetricLabels(journeys)
    sink = MeteredSink(MemStore(), labels, registry)
    clock = PartitionClock(wall, in_flight_ms=0, warmup_ms=0)
    processor = Processor(bus.consumer(HOPS_TOPIC, "bench"), sink, tracer, clock, [0])
    now = [0.0]
    waiting = Throttled(tracer.waiting_by_step, clock=lambda: now[0])
    registry.register(PipelineCollector(processor, IngestStats(), labels=labels, hops=sink.hops, waiting=waiting))
    scans, cached, renders = [], [], []
    for round_ in range(3):
        now[0] = 1000.0 * (round_ + 1)  # past the refresh interval: this render scans
        began = time.perf_counter()
        body = render(registry)
        scans.append(time.perf_counter() - began)
        began = time.perf_counter()
        render(registry)
        cached.append(time.perf_counter() - began)
        began = time.perf_counter()
        tracer.waiting_by_step()
        renders.append(time.perf_counter() - began)
    return {
        "orders": len(tracer),
        "render_scan_ms": min(scans) * 1000,
        "render_cached_ms": min(cached) * 1000,
        "scan_ms": min(renders) * 1000,
        "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "bytes": len(body),
        "steps": len(tracer.waiting_by_step()),
    }


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics", description=__doc__)
    parser.add_argument("what", choices=["scrape"], help="the one measurement of this module")
    parser.add_argument("--orders", type=int, required=True)
    parser.add_argument("--journeys", type=Path, required=True)
    args = parser.parse_args()
    report(measure_scrape(args.orders, args.journeys))


if __name__ == "__main__":
    _main()
