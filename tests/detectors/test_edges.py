"""The edge detectors over a real WaitingTracer driven in event time: EdgeDegraded fires on a hard
break while the stuck orders are inside their deadline, resolves when the edge flows again, and its
baseline survives the outage; HopSilent and broken telemetry on a slow edge; ConversionDrop."""

from __future__ import annotations

import threading

from detectors.edges import EdgeSettings, EdgeWatch, TracerEdges
from tests.detectors.conftest import JOURNEYS_YAML, T0, Shop, event
from tracer.journeys import parse_journeys
from tracer.waiting import WaitingTracer

EDGE = ("web_order", "payment.authorized")


def watched(yaml: str = JOURNEYS_YAML, settings: EdgeSettings | None = None) -> tuple[Shop, EdgeWatch]:
    tracer = WaitingTracer(parse_journeys(yaml))
    return Shop(tracer), EdgeWatch(TracerEdges(tracer, threading.Lock()), settings)


def run(shop: Shop, watch: EdgeWatch, seconds: int) -> list[bool]:
    states = []
    for _ in range(seconds):
        shop.run(1)
        watch.tick()
        states.append(watch.states[EDGE].degraded)
    return states


def test_a_healthy_edge_learns_its_p99_and_never_fires() -> None:
    shop, watch = watched()
    assert not any(run(shop, watch, 180))
    st = watch.states[EDGE]
    assert st.baseline_p99 is not None and 2000 <= st.baseline_p99 <= 2500
    assert st.threshold_ms == int(st.baseline_p99 * 1.5)


def test_a_hard_break_fires_edge_degraded_within_15s_and_long_before_the_deadline() -> None:
    shop, watch = watched()
    run(shop, watch, 120)
    shop.broken = True
    states = run(shop, watch, 15)
    assert True in states
    first = states.index(True) + 1
    assert first <= 15
    st = watch.states[EDGE]
    assert st.stuck >= 5
    oldest = shop.tracer.loads[EDGE].oldest_ms()
    assert oldest is not None and shop.now - oldest < 5 * 60_000  # every stuck order is inside its 5m deadline


def test_edge_degraded_resolves_when_the_edge_flows_again() -> None:
    shop, watch = watched()
    run(shop, watch, 120)
    shop.broken = True
    run(shop, watch, 20)
    shop.broken = False
    states = run(shop, watch, 30)
    assert states[-1] is False
    assert not watch.states[EDGE].firing


def test_an_outage_does_not_become_the_new_normal() -> None:
    shop, watch = watched()
    run(shop, watch, 120)
    before = watch.states[EDGE].baseline_p99
    shop.broken = True
    run(shop, watch, 60)
    # the stuck orders arrive late all at once: huge transit times in the tracer's ring
    for ts_due, oid in [(shop.now, f"o{i}") for i in range(shop.seq - 250, shop.seq)]:
        shop.tracer.on_event(event(oid, "payment.authorized", ts_due))
    shop.broken = False
    run(shop, watch, 120)
    after = watch.states[EDGE].baseline_p99
    assert before is not None and after is not None and after < before * 1.2  # the late transits were ~60 s


def test_edges_without_a_learned_baseline_do_not_fire() -> None:
    shop, watch = watched()
    shop.broken = True
    assert not any(run(shop, watch, 60))


SLOW = """
journeys:
  batch:
    start: placed
    steps:
      picked: {after: placed, within: 1h}
      shipped: {after: picked, within: 1h}
"""


def slow_shop(seconds: int, watch: EdgeWatch, tracer: WaitingTracer, t: list[int], *, picked: bool, shipped: bool):
    """5 orders/s; each picked 90 s after placed (a transit well past HopSilent's window)."""
    for _ in range(seconds):
        for _ in range(5):
            t[0] += 200
            n = t[0] // 200
            tracer.on_event(event(f"s{n}", "placed", t[0]))
            old = f"s{n - 450}"  # placed 90 s ago
            if picked:
                tracer.on_event(event(old, "picked", t[0]))
            if shipped:
                tracer.on_event(event(old, "shipped", t[0] + 5))
        tracer.advance(t[0])
        watch.tick()


def test_hop_silent_fires_on_a_slow_busy_edge_when_the_hop_stops() -> None:
    tracer = WaitingTracer(parse_journeys(SLOW))
    watch = EdgeWatch(TracerEdges(tracer, threading.Lock()))
    t = [T0]
    slow_shop(200, watch, tracer, t, picked=True, shipped=False)
    st = watch.states[("batch", "picked")]
    assert not st.silent and st.rate > 3
    slow_shop(12, watch, tracer, t, picked=False, shipped=False)
    assert st.silent and not st.degraded and not st.telemetry_broken


def test_a_hop_whose_later_hops_still_arrive_has_broken_telemetry_not_silence() -> None:
    tracer = WaitingTracer(parse_journeys(SLOW))
    watch = EdgeWatch(TracerEdges(tracer, threading.Lock()))
    t = [T0]
    slow_shop(200, watch, tracer, t, picked=True, shipped=True)
    slow_shop(12, watch, tracer, t, picked=False, shipped=True)
    st = watch.states[("batch", "picked")]
    assert st.telemetry_broken and not st.silent


def test_conversion_drop_fires_when_a_share_of_orders_stop_going_on() -> None:
    shop, watch = watched(settings=EdgeSettings(conversion_window_ms=60_000, min_orders=10_000))
    run(shop, watch, 300)
    st = watch.states[EDGE]
    assert st.conversion is not None and st.conversion > 0.9 and not st.conversion_low
    rng_lost = iter(range(10**9))
    original = shop.run

    def lossy(seconds: float, *, step_ms: int = 100) -> None:
        original(seconds, step_ms=step_ms)
        shop.pending = [p for p in shop.pending if next(rng_lost) % 2]  # half the payments never come

    shop.run = lossy  # type: ignore[method-assign]
    run(shop, watch, 90)
    assert st.conversion_low
