from __future__ import annotations

import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace
from importlib import resources

import pytest

from collectors.faults import DELAYED, DROPPED, FAILED, SILENCED, FaultSpecError, compare, parse_schedule
from collectors.simulator import Edge, Flow, Shop, Simulation, demo_shop, mismatches
from tracer.engine import Tracer
from tracer.events import validate
from tracer.journeys import load_journeys
from tracer.model import MISSING, UNCONFIRMED, Finding, HopEvent
from tracer.times import parse_ts

T0 = 1_795_334_400_000  # 2026-11-22T08:00:00Z
Event = dict[str, object]


def quiet_shop() -> Shop:
    """The demo shop without the errors it makes by itself, so every finding is an injected one."""
    flows = tuple(replace(f, edges=tuple(replace(e, error_rate=0.0) for e in f.edges)) for f in demo_shop().flows)
    return replace(demo_shop(), flows=flows)


def simulate(
    *faults: str, rate: float = 20, seconds: int = 60, seed: int = 7, shop: Shop | None = None, drain: bool = True
) -> tuple[Simulation, list[Event]]:
    sim = Simulation(shop or quiet_shop(), parse_schedule(faults), rate=rate, seed=seed)
    events: list[Event] = []
    sim.run_offline(events.append, start_ms=T0, duration_ms=seconds * 1000, drain=drain)
    return sim, events


def hop_times(events: list[Event]) -> dict[str, dict[str, int]]:
    """order id -> hop -> time of its first ok event."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for ev in events:
        if ev.get("status") != "error":
            out[str(ev["order_id"])].setdefault(str(ev["hop"]), parse_ts(ev["ts"]))
    return out


def transits(events: list[Event], edge: Edge) -> list[int]:
    return [t[edge.hop] - t[edge.after] for t in hop_times(events).values() if edge.hop in t and edge.after in t]


def test_transit_times_match_each_edges_median_and_stay_under_its_cap() -> None:
    shop = quiet_shop()
    _, events = simulate(rate=40, seconds=120, shop=shop)
    for flow in shop.flows:
        for edge in flow.edges:
            samples = transits(events, edge)
            assert len(samples) > 200, edge.hop
            assert statistics.median(samples) == pytest.approx(edge.median_ms, rel=0.15), edge.hop
            assert max(samples) <= edge.cap_ms, edge.hop


def test_orders_arrive_at_the_rate_and_some_customers_order_again() -> None:
    sim, events = simulate(rate=20, seconds=120)
    starts = [ev for ev in events if ev["hop"] in ("checkout.placed", "refund.requested")]
    assert len(starts) == pytest.approx(20 * 120, rel=0.1)
    customers = Counter(str(ev["customer_id"]) for ev in starts)
    assert max(customers.values()) >= 2
    assert all("amount" in ev["attrs"] for ev in starts)  # type: ignore[operator]
    assert Counter(f.journey for f in sim.shop.flows) == Counter(("web_order", "refund"))


def test_every_event_is_a_valid_hop_event_with_one_trace_per_order() -> None:
    _, events = simulate("fail:payment.authorized:0.1:retry=2s", seconds=20)
    traces: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        hop = validate(ev)
        traces[hop.order_id].add(hop.trace_id)
    assert all(len(t) == 1 for t in traces.values())


def test_offline_runs_are_deterministic_for_a_seed() -> None:
    faults = ("drop:payment.authorized:0.3@5s+10s", "fail:inventory.reserved:0.2@0s+20s")
    first, a = simulate(*faults, seconds=30, seed=3)
    second, b = simulate(*faults, seconds=30, seed=3)
    _, c = simulate(*faults, seconds=30, seed=4)
    assert a == b
    assert first.ledger.effects() == second.ledger.effects()
    assert a != c


def test_offline_events_come_in_event_time_order_and_stop_at_the_end_without_drain() -> None:
    _, events = simulate(seconds=30, drain=False)
    times = [parse_ts(ev["ts"]) for ev in events]
    assert times == sorted(times)
    assert times[-1] < T0 + 30_000
    _, drained = simulate(seconds=30)
    assert parse_ts(drained[-1]["ts"]) > T0 + 30_000


def test_drop_loses_that_share_of_orders_at_the_hop_and_every_hop_after_it() -> None:
    sim, events = simulate("drop:payment.authorized:0.5@10s+20s", seconds=40)
    dropped = sim.ledger.effects(effect=DROPPED)
    assert {(e.hop, e.kind, e.fault) for e in dropped} == {("payment.authorized", "drop", 0)}
    assert all(T0 + 10_000 <= e.at_ms < T0 + 30_000 for e in dropped)
    times = hop_times(events)
    for e in dropped:
        assert list(times[e.order_id]) == ["checkout.placed"]
    in_window = [
        oid for oid, t in times.items() if oid.startswith("W-") and T0 + 12_000 <= t["checkout.placed"] < T0 + 28_000
    ]
    assert len([oid for oid in in_window if "payment.authorized" not in times[oid]]) == pytest.approx(
        len(in_window) / 2, rel=0.3
    )


def test_slow_stretches_the_transit_of_orders_entering_the_edge_in_the_window() -> None:
    sim, events = simulate("slow:inventory.reserved:4x@0s+10s", "slow:refund.paid:+20s@0s+10s", seconds=20)
    delayed = sim.ledger.effects(effect=DELAYED)
    assert {e.hop for e in delayed} == {"inventory.reserved", "refund.paid"}
    times = hop_times(events)
    for e in delayed:
        assert e.until_ms == times[e.order_id][e.hop]
        before = times[e.order_id]["payment.authorized" if e.hop == "inventory.reserved" else "refund.approved"]
        assert before < T0 + 10_000
        if e.hop == "inventory.reserved":
            assert e.until_ms - before == pytest.approx(4 * (e.at_ms - before), abs=4)
        else:
            assert e.until_ms - e.at_ms == 20_000


def test_break_never_sends_the_confirmation_hops_in_the_window() -> None:
    sim, events = simulate("break@5s+10s", seconds=30)
    broken = sim.ledger.effects(effect=DROPPED)
    assert {e.hop for e in broken} == {"email.confirmation_sent", "refund.email_sent"}
    times = hop_times(events)
    for e in broken:
        assert e.hop not in times[e.order_id]
        assert T0 + 5_000 <= e.at_ms < T0 + 15_000
    sent = [parse_ts(ev["ts"]) for ev in events if ev["hop"] == "email.confirmation_sent"]
    assert not [t for t in sent if T0 + 5_000 <= t < T0 + 15_000]
    assert any("fulfilment.shipped" in times[e.order_id] for e in broken if e.hop == "email.confirmation_sent")


def test_stop_silences_the_hop_and_sends_what_it_held_when_the_window_ends() -> None:
    sim, events = simulate("stop:inventory.reserved@10s+15s", seconds=40)
    silenced = sim.ledger.effects(effect=SILENCED)
    assert silenced
    reserved = [parse_ts(ev["ts"]) for ev in events if ev["hop"] == "inventory.reserved"]
    assert not [t for t in reserved if T0 + 10_000 <= t < T0 + 25_000]
    times = hop_times(events)
    for e in silenced:
        assert e.until_ms == T0 + 25_000 == times[e.order_id]["inventory.reserved"]
        assert times[e.order_id]["fulfilment.shipped"] > T0 + 25_000


def test_stop_with_lose_never_sends_what_the_hop_held() -> None:
    sim, events = simulate("stop:inventory.reserved:lose@10s+15s", seconds=40)
    silenced = sim.ledger.effects(effect=SILENCED)
    assert silenced and all(e.until_ms is None for e in silenced)
    times = hop_times(events)
    assert all("inventory.reserved" not in times[e.order_id] for e in silenced)


def test_fail_reports_an_error_then_the_retry_or_stops_the_order_there() -> None:
    sim, events = simulate("fail:payment.authorized:retry=4s@5s+5s", "fail:refund.paid@0s+30s", seconds=30)
    failed = sim.ledger.effects(effect=FAILED)
    errors = {(str(ev["order_id"]), str(ev["hop"])) for ev in events if ev.get("status") == "error"}
    assert {(e.order_id, e.hop) for e in failed} == errors
    times = hop_times(events)
    for e in failed:
        if e.hop == "payment.authorized":
            assert e.until_ms == e.at_ms + 4000 == times[e.order_id]["payment.authorized"]
            assert "fulfilment.shipped" in times[e.order_id]
        else:
            assert e.until_ms is None
            assert list(times[e.order_id]) == ["refund.requested", "refund.approved"]


def test_the_shop_makes_errors_by_itself_and_mostly_retries_them() -> None:
    flows = (Flow("web", "a.placed", "web", (Edge("b.done", "a.placed", "b", 100, 300, error_rate=0.5),)),)
    sim = Simulation(Shop(flows), rate=50, seed=1)
    events: list[Event] = []
    stats = sim.run_offline(events.append, start_ms=T0, duration_ms=10_000)
    errors = [ev for ev in events if ev.get("status") == "error"]
    assert stats.errors == len(errors) == pytest.approx(250, rel=0.25)
    times = hop_times(events)
    assert all("b.done" in times[str(ev["order_id"])] for ev in errors)
    assert not sim.ledger.effects()


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("drop:payment.captured", "'payment.captured' is not in the shop"),
        ("break:inventory.reserved", "not a confirmation; confirmation hops: email.confirmation_sent"),
        ("fail:checkout.placed", "starts a journey"),
    ],
)
def test_a_schedule_that_does_not_fit_the_shop_is_refused_naming_the_hop(spec: str, says: str) -> None:
    with pytest.raises(FaultSpecError, match=says):
        Simulation(demo_shop(), parse_schedule([spec]), rate=1)


def test_the_demo_shop_matches_the_bundled_demo_journeys() -> None:
    path = resources.files("ordertrail").joinpath("demo_journeys.yaml")
    with resources.as_file(path) as file:
        journeys = load_journeys(file)
    assert mismatches(demo_shop(), journeys) == []
    slow = replace(demo_shop().flows[0], edges=(replace(demo_shop().flows[0].edges[0], p99_ms=9000),))
    problems = mismatches(Shop((slow,)), journeys)
    assert any("reaches the deadline" in p for p in problems)
    assert any("'inventory.reserved' is never sent" in p for p in problems)


def test_realtime_stamps_events_with_the_wall_clock_and_stops_promptly() -> None:
    sim = Simulation(quiet_shop(), rate=200, seed=1)
    events: list[Event] = []
    stop = threading.Event()
    runner = threading.Thread(target=lambda: sim.run_realtime(events.append, stop=stop))
    began = time.time()
    runner.start()
    time.sleep(0.4)
    stop.set()
    asked = time.monotonic()
    runner.join(timeout=5)
    assert not runner.is_alive()
    assert time.monotonic() - asked < 0.3
    assert len(events) > 20
    stamps = [parse_ts(ev["ts"]) / 1000 for ev in events]
    assert began - 0.01 <= min(stamps) and max(stamps) <= time.time() + 0.01


def test_realtime_ends_by_itself_after_its_duration() -> None:
    sim = Simulation(quiet_shop(), rate=100, seed=1)
    events: list[Event] = []
    began = time.monotonic()
    stats = sim.run_realtime(events.append, stop=threading.Event(), duration_ms=300, drain=False)
    assert 0.25 < time.monotonic() - began < 1.5
    assert stats.events == len(events) > 0
    assert max(parse_ts(ev["ts"]) for ev in events) < stats.started_ms + 300


def test_realtime_drains_the_orders_in_flight_after_its_duration() -> None:
    flow = Flow(
        "web", "a.placed", "web", (Edge("b.done", "a.placed", "b", 150, 300), Edge("c.done", "b.done", "c", 150, 300))
    )
    sim = Simulation(Shop((flow,)), rate=100, seed=1)
    events: list[Event] = []
    stats = sim.run_realtime(events.append, stop=threading.Event(), duration_ms=300)
    times = hop_times(events)
    assert all(list(t) == ["a.placed", "b.done", "c.done"] for t in times.values())
    assert max(parse_ts(ev["ts"]) for ev in events) > stats.started_ms + 300


def replay(events: list[Event], journeys_file: str, tail_ms: int) -> list[Finding]:
    """Backtest-style: every event in event time, then the clock past every deadline."""
    tracer = Tracer(load_journeys(journeys_file))
    hops: list[HopEvent] = sorted((validate(ev) for ev in events), key=lambda h: h.ts)
    for hop in hops:
        tracer.advance(hop.ts)
        tracer.on_event(hop)
    tracer.advance(hops[-1].ts + tail_ms)
    final: dict[tuple[str, str, str], Finding] = {}
    for f in tracer.drain_findings():
        final[f.order_id, f.hop, f.kind] = f
    return list(final.values())


def test_the_tracer_finds_every_dropped_order_at_its_hop_and_no_other_missing_order() -> None:
    sim, events = simulate(
        "drop:payment.authorized:0.3@10s+20s",
        "drop:inventory.reserved:0.5@30s+10s",
        "break:email.confirmation_sent@40s+10s",
        seconds=60,
    )
    with resources.as_file(resources.files("ordertrail").joinpath("demo_journeys.yaml")) as file:
        findings = replay(events, str(file), tail_ms=120_000)
    dropped = {(e.order_id, e.hop) for e in sim.ledger.effects(effect=DROPPED)}
    assert len(dropped) > 50
    missing = {(f.order_id, f.hop) for f in findings if f.kind in (MISSING, UNCONFIRMED)}
    assert missing == dropped
    outcome = compare(sim.ledger, findings)
    assert [r.missed for r in outcome.reports] == [[], [], []]
    assert all(r.detection_delay_ms is not None and r.detection_delay_ms < 30_000 for r in outcome.reports)
