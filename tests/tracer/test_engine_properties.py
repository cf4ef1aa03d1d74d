"""Properties of the engine over random shops (hypothesis): arrival order and duplication do not
change what it concludes (ARCHITECTURE "Time": out-of-order events are normal, late events
resolve findings).

1. A backtest-style replay — events sorted by (ts, order_id, hop, event_id), the clock moved to
   each event's time before it, then to ``until`` — gives the same final findings (the last
   version of each) for any permutation and duplication of the same events.
2. Feeding the events in any arrival order with the clock moved only at the end gives the same
   final findings as feeding them sorted.
3. With the clock following each event as it arrives (the running maximum), the findings still
   open at the end are the same whatever the arrival order.

The shops are realistic: per order, hops happen after the hop they wait for; some are never
reported (lost, or a telemetry gap when a later hop is), some are late, some fail and are retried
(every error at a hop comes before its success). Two journeys share their first hops, so some
orders wait to be told their journey; some events name it, some name one that does not exist.
Learned soft limits are switched off (``min_samples``): they depend, by design, on the order in
which transit times were seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.tracer.conftest import T0, WEB_ORDER
from tracer.engine import Tracer
from tracer.journeys import Journeys, parse_journeys
from tracer.model import OPEN, Finding, HopEvent, derive_event_id, derive_trace_id

# The contract's journey (shipping due within an hour rather than a day, to keep the times short),
# and a second journey that shares its first two hops.
JOURNEYS_TEXT = (
    WEB_ORDER.replace("within: 24h", "within: 1h")
    + """
  app_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed,    within: 1m, stall_after: 10s}
      app.packed:         {after: payment.authorized, within: 10m}
      app.delivered:      {after: app.packed,         within: 2h, stall_after: 1h}
stall_learning: {min_samples: 100000}
"""
)
JOURNEYS: Journeys = parse_journeys(JOURNEYS_TEXT, "properties.yaml")
SETTINGS = settings(max_examples=80, deadline=None)

# How long after its after hop a hop happens, as a share of its step's ``within``: early, at the
# soft limit, exactly due (on time), a little late, very late.
DELAYS = (0.1, 1 / 3, 0.5, 1.0, 1.2, 3.0)


@dataclass(frozen=True)
class OrderPlan:
    journey: str
    naming: str  # "none" | "all" | "some" | "unknown": how events carry the journey field
    present: tuple[bool, ...]  # per hop of the journey: reported ok
    delays: tuple[float, ...]  # per hop: share of within after its after hop
    errors: tuple[int, ...]  # per hop: error events before its (possible) success


@st.composite
def order_plans(draw: st.DrawFn) -> OrderPlan:
    name = draw(st.sampled_from(sorted(JOURNEYS.journeys)))
    n = len(JOURNEYS.journeys[name].hops)
    return OrderPlan(
        name,
        draw(st.sampled_from(("none", "all", "some", "unknown"))),
        tuple(draw(st.lists(st.sampled_from((True, True, True, True, False)), min_size=n, max_size=n))),
        tuple(draw(st.lists(st.sampled_from(DELAYS), min_size=n, max_size=n))),
        tuple(draw(st.lists(st.sampled_from((0, 0, 0, 1, 2)), min_size=n, max_size=n))),
    )


def events_of(k: int, plan: OrderPlan) -> list[HopEvent]:
    """The hop events of order ``k`` following ``plan``, times in event time."""
    j = JOURNEYS.journeys[plan.journey]
    oid = f"ord-{k:04d}"
    start = T0 + k * 7_001
    happened = [start] * len(j.hops)  # when each hop happened, reported or not
    for step in j.steps:
        happened[step.index] = happened[step.after_index] + max(1, int(step.within_ms * plan.delays[step.index]))
    out = []
    for i, hop in enumerate(j.hops):
        journey = {"none": "", "all": plan.journey, "some": plan.journey if i % 2 else "", "unknown": "mobile"}
        for e in range(plan.errors[i]):
            out.append(_event(oid, hop, happened[i] - 1 - 97 * (e + 1), "error", journey[plan.naming]))
        if plan.present[i]:
            out.append(_event(oid, hop, happened[i], "ok", journey[plan.naming]))
    return out


def _event(oid: str, hop: str, ts: int, status: str, journey: str) -> HopEvent:
    return HopEvent(oid, hop, ts, derive_event_id(oid, hop, ts), derive_trace_id(oid), status=status, journey=journey)


Shop = tuple[list[HopEvent], list[HopEvent], int]  # events, as they arrive (with duplicates), until


@st.composite
def shops(draw: st.DrawFn, *, errors_in_completed_orders: bool = True) -> Shop:
    """(the events, the same events permuted and some duplicated, until)."""
    plans = draw(st.lists(order_plans(), min_size=1, max_size=8))
    events: list[HopEvent] = []
    for k, plan in enumerate(plans):
        if not errors_in_completed_orders and any(plan.errors) and _completes(plan):
            plan = OrderPlan(plan.journey, plan.naming, (*plan.present[:-1], False), plan.delays, plan.errors)
        events.extend(events_of(k, plan))
    arrived = draw(st.permutations(events))
    duplicated = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    for ev in duplicated:
        arrived.insert(draw(st.integers(min_value=0, max_value=len(arrived))), ev)
    until = max((ev.ts for ev in events), default=T0) + 3 * 3_600_000
    return events, arrived, until


def _completes(plan: OrderPlan) -> bool:
    """Whether the order's reported hops cover every ``complete`` hop (it then leaves memory, and
    later events for it are history the tracer no longer judges)."""
    j = JOURNEYS.journeys[plan.journey]
    done = 0
    for i in range(len(j.hops)):
        if plan.present[i]:
            done |= 1 << i
            for a in j.ancestors[i]:
                done |= 1 << a
    return done & j.complete_mask == j.complete_mask


def replay_order(ev: HopEvent) -> tuple[int, str, str, str]:
    return ev.ts, ev.order_id, ev.hop, ev.event_id


def backtest(events: list[HopEvent], until: int) -> dict[str, Finding]:
    tracer = Tracer(JOURNEYS)
    final: dict[str, Finding] = {}
    for ev in sorted(events, key=replay_order):
        tracer.advance(ev.ts)
        tracer.on_event(ev)
    tracer.advance(until)
    for f in tracer.drain_findings():
        final[f.finding_id] = f
    return final


def clock_at_the_end(events: list[HopEvent], until: int) -> dict[str, Finding]:
    tracer = Tracer(JOURNEYS)
    for ev in events:
        tracer.on_event(ev)
    tracer.advance(until)
    return {f.finding_id: f for f in tracer.drain_findings()}


def clock_following_arrival(events: list[HopEvent], until: int) -> dict[str, Finding]:
    tracer = Tracer(JOURNEYS)
    for ev in events:
        tracer.advance(ev.ts)  # never back: the running maximum
        tracer.on_event(ev)
    tracer.advance(until)
    return {f.finding_id: f for f in tracer.drain_findings()}


def still_open(final: dict[str, Finding]) -> set[tuple[str, str, str]]:
    return {(f.order_id, f.hop, f.kind) for f in final.values() if f.status == OPEN}


@SETTINGS
@given(shops())
def test_a_replay_in_event_time_ignores_arrival_order_and_duplicates(
    shop: Shop,
) -> None:
    events, arrived, until = shop
    assert backtest(arrived, until) == backtest(events, until)


@SETTINGS
@given(shops(errors_in_completed_orders=False))
def test_any_arrival_order_with_the_clock_moved_at_the_end_gives_the_sorted_findings(
    shop: Shop,
) -> None:
    events, arrived, until = shop
    assert clock_at_the_end(arrived, until) == clock_at_the_end(sorted(events, key=replay_order), until)


@SETTINGS
@given(shops())
def test_the_findings_left_open_do_not_depend_on_arrival_order(
    shop: Shop,
) -> None:
    events, arrived, until = shop
    assert still_open(clock_following_arrival(arrived, until)) == still_open(backtest(events, until))


@SETTINGS
@given(shops())
def test_a_replay_raises_every_finding_before_resolving_it(shop: Shop) -> None:
    events, _, until = shop
    tracer = Tracer(JOURNEYS)
    for ev in sorted(events, key=replay_order):
        tracer.advance(ev.ts)
        tracer.on_event(ev)
    tracer.advance(until)
    seen_open: set[str] = set()
    for f in tracer.drain_findings():
        if f.status == OPEN:
            seen_open.add(f.finding_id)
            assert f.resolved_at is None and f.late_by_ms is None
        else:
            assert f.finding_id in seen_open or f.kind == "failed"
            assert f.resolved_at is not None and f.resolved_at >= f.detected_at >= f.due_at
            assert f.late_by_ms is None or f.late_by_ms >= 0
