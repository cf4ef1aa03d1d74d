"""Benchmarks of issue 6's taps and stitching, in process (no store, no server):

* ``stitch``: the engine fed through the stitch stage, on orders whose payment is reported under a
  payment id (half of them before the event that links it), next to the same engine fed the same
  events already under their order ids — what stitching costs per event. A second row runs the
  ordinary example workload through an active stitcher whose keyed hops it never meets: the fast
  path every other event takes. Both sides run with the garbage collector set as ordertrail's
  streaming processes set it (``tracer.processor.tuned_gc``): the stitcher only ever runs inside a
  processor or a backtest, and the throughput and Kafka comparisons measure the same way.
* ``tap``: a tap's per-line work (JSON decode + ``Mapping.apply``, which ends in the contract's
  validation) next to decoding and validating the same events written as hop events already.

Each side runs ``scale.repeats`` times; the best run counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from bench import Context, Row, Section, Target
from collectors.taps.mapping import parse_mapping
from tracer.engine import Tracer
from tracer.events import decode_line, validate
from tracer.journeys import Journeys, load_journeys, parse_journeys
from tracer.model import HopEvent
from tracer.processor import GC_THRESHOLDS, tuned_gc
from tracer.stitch import Stitcher

STITCH_TARGET = Target("ratio", ">=", 0.7)
FAST_PATH_TARGET = Target("ratio", ">=", 0.9)
T0 = 1_795_000_000_000
KEYED_JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.requested:  {after: checkout.placed,    within: 30s}
      payment.authorized: {after: payment.requested, within: 30s}
      fulfilment.shipped: {after: payment.authorized, within: 1h}
    keys:
      payment_id: {steps: [payment.authorized], linked_by: [payment.requested]}
"""
MAPPING = """
order_id: order.id
hop: {field: type, map: {OrderPlaced: checkout.placed, PaymentOk: payment.authorized, Shipped: fulfilment.shipped}}
ts: {field: time, format: epoch_ms}
service: {value: legacy-shop}
attrs: [amount]
"""
_BATCH = 5_000  # events per processor cycle: the stitcher's per-cycle work runs this often


def keyed_orders(orders: int) -> list[HopEvent]:
    """Orders as sent: payments under their payment ids, half of them before their link."""
    sent: list[HopEvent] = []
    for i in range(orders):
        oid, pay, t = f"ord-{i:08d}", f"pay-{i:08d}", T0 + i * 10
        checkout = validate({"order_id": oid, "hop": "checkout.placed", "ts": t})
        link = validate({"order_id": oid, "hop": "payment.requested", "ts": t + 1, "attrs": {"payment_id": pay}})
        keyed = validate({"order_id": pay, "hop": "payment.authorized", "ts": t + 2})
        shipped = validate({"order_id": oid, "hop": "fulfilment.shipped", "ts": t + 3})
        sent += [checkout, keyed, link, shipped] if i % 2 else [checkout, link, keyed, shipped]
    return sent


def _engine(journeys: Journeys, events: list[HopEvent]) -> float:
    tracer = Tracer(journeys)
    on_event = tracer.on_event
    started = time.perf_counter()
    for ev in events:
        on_event(ev)
    return time.perf_counter() - started


def _stitched(journeys: Journeys, events: list[HopEvent], fed: list[HopEvent] | None = None) -> float:
    """Time the stitch stage and the engine; ``fed`` collects what the engine was given."""
    tracer = Tracer(journeys)
    stitcher = Stitcher(journeys)
    stitch = stitcher.stitch
    on_event = tracer.on_event if fed is None else lambda ev: (fed.append(ev), tracer.on_event(ev))[1]
    started = time.perf_counter()
    for start in range(0, len(events), _BATCH):
        for ev in events[start : start + _BATCH]:
            moved = stitch(ev)
            if moved is not None:
                on_event(moved)
        for ev in stitcher.drain_released():
            on_event(ev)
        stitcher.expire(events[min(start + _BATCH, len(events)) - 1].ts)
        stitcher.drain_changes()
    return time.perf_counter() - started


def _best_pair(repeats: int, ours: Callable[[], float], ref: Callable[[], float]) -> tuple[float, float]:
    """Best of alternating runs of both sides (at least 3 each: these runs are short, and the
    alternation keeps a change in machine load from landing on one side only)."""
    a, b = [], []
    for _ in range(max(repeats, 3)):
        a.append(ours())
        b.append(ref())
    return min(a), min(b)


def stitch(ctx: Context) -> Section:
    scale = ctx.scale
    journeys = parse_journeys(KEYED_JOURNEYS)
    sent = keyed_orders(max(scale.throughput_events // 4, 1))
    plain: list[HopEvent] = []
    _stitched(journeys, sent, plain)  # what the engine sees: the same events, in the same order
    with tuned_gc():  # both sides, as a processor or a backtest runs the stitcher
        ours, ref = _best_pair(scale.repeats, lambda: _stitched(journeys, sent), lambda: _engine(journeys, plain))
    example = load_journeys(ctx.journeys)
    path, _ = ctx.workload(max(scale.throughput_events // 6, 1))
    events = []
    with path.open("rb") as f:
        for line in f:
            try:
                events.append(decode_line(line))
            except ValueError:
                continue
    keyed_elsewhere = parse_journeys(  # a journey with keys whose hops the example workload never has
        KEYED_JOURNEYS.replace("web_order", "marketplace")
        .replace("checkout.", "mp.checkout.")
        .replace("payment.", "mp.payment.")
        .replace("fulfilment.", "mp.fulfilment.")
    )
    merged = Journeys(
        {**example.journeys, **keyed_elsewhere.journeys},
        example.by_hop,
        example.shared_hops,
        example.learning,
        example.source,
    )
    with tuned_gc():
        fast, base = _best_pair(scale.repeats, lambda: _stitched(merged, events), lambda: _engine(merged, events))
    section = Section(
        reference="the same engine fed what the stitch stage hands it (payments already under their order ids, in "
        "the same order), without the stage"
    )
    section.rows.append(
        Row(
            f"stitch + engine, {len(sent):,} events, a quarter re-keyed (half of those before their link)",
            len(sent) / ours,
            "events/s",
            len(plain) / ref,
            STITCH_TARGET,
        )
    )
    section.rows.append(
        Row(
            f"stitch fast path + engine, the example workload ({len(events):,} events), no keyed hop met",
            len(events) / fast,
            "events/s",
            len(events) / base,
            FAST_PATH_TARGET,
        )
    )
    per = len(events) or 1
    section.notes.append(
        f"Per event: {ours / len(sent) * 1e6:.2f} µs with stitching against {ref / len(plain) * 1e6:.2f} µs "
        f"without; fast path {fast / per * 1e6:.2f} µs against {base / per * 1e6:.2f} µs."
    )
    section.notes.append(
        f"Both sides set the garbage collector as ordertrail's streaming processes do (`backtest`, `run`, "
        f"`tracer`: thresholds {GC_THRESHOLDS}, tracer.processor.tuned_gc), so the ratio compares the stage, "
        "not where the collector's full passes happen to fall."
    )
    return section


def tap(ctx: Context) -> Section:
    scale = ctx.scale
    n = max(scale.throughput_events // 2, 1)
    mapping = parse_mapping(MAPPING)
    kinds = ("OrderPlaced", "PaymentOk", "Shipped")
    hops = ("checkout.placed", "payment.authorized", "fulfilment.shipped")
    raw = [
        msgspec.json.encode({"order": {"id": i // 3}, "type": kinds[i % 3], "time": T0 + i, "amount": "12.50"})
        for i in range(n)
    ]
    ready = [
        msgspec.json.encode(
            {
                "order_id": str(i // 3),
                "hop": hops[i % 3],
                "ts": T0 + i,
                "service": "legacy-shop",
                "attrs": {"amount": "12.50"},
            }
        )
        for i in range(n)
    ]
    decode, apply = msgspec.json.decode, mapping.apply

    def mapped() -> float:
        started = time.perf_counter()
        for line in raw:
            apply(decode(line))
        return time.perf_counter() - started

    def validated() -> float:
        started = time.perf_counter()
        for line in ready:
            decode_line(line)
        return time.perf_counter() - started

    ours, ref = _best_pair(scale.repeats, mapped, validated)
    section = Section(reference="tracer.events.decode_line of the same events already written as hop events")
    section.rows.append(Row(f"JSON decode + Mapping.apply, {n:,} lines", n / ours, "lines/s", n / ref))
    section.notes.append(
        f"Per line: {ours / n * 1e6:.2f} µs mapped against {ref / n * 1e6:.2f} µs for a ready hop event. Delivery "
        "(HTTP, 2,000 events a request) and the fsync'd position are per batch, not per line."
    )
    return section
