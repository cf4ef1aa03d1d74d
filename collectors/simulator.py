"""The shop simulator: services sending the hop events of customer orders, with injected faults.

A ``Shop`` is journeys (``Flow``) of hops; every hop but a journey's start is reached over an
``Edge`` from the hop before it, run by a service, with a log-normal transit time given by its
median and p99 (truncated at ``max_ms``) and an error rate (errors are mostly retried, as a
customer re-enters a card). Orders arrive as a Poisson stream at ``rate`` per second, from
customers of whom some order again; the start hop carries an ``amount``. ``demo_shop()`` is the
shop of ``ordertrail/demo_journeys.yaml``; ``mismatches`` checks a shop against a journeys file.

A ``Simulation`` runs a shop with a fault schedule (``collectors.faults``) and hands every event,
a CONTRACT §1 JSON object, to a sink ``emit(event) -> None`` (the SDK, a list, an HTTP poster):

* ``run_offline`` generates a simulated period as fast as it can, with synthetic event times
  from ``start_ms``, in event-time order; the same seed gives the same events.
* ``run_realtime`` sleeps until each hop is due and stamps it with the wall-clock time it is sent;
  it stops when its duration is over or promptly when the ``stop`` event is set.

Each hop's fate is decided when the hop before it happens (a heap of pending hops), and what the
faults did is written to the run's ``Ledger``. Imports only the standard library, the tracer's
model and ``collectors.faults``; the clock is injected.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from collectors.faults import (
    DELAYED,
    DROPPED,
    FAILED,
    SILENCED,
    BreakConfirmations,
    DropAtEdge,
    Effect,
    FailHop,
    Fault,
    FaultSpecError,
    Ledger,
    SlowEdge,
    StopHop,
)
from tracer.journeys import Journeys
from tracer.model import format_ts

Emit = Callable[[dict[str, object]], None]
_Z99: Final = 2.3263478740408408  # the standard normal quantile of 0.99


@dataclass(frozen=True, slots=True)
class Edge:
    """The way from ``after`` to ``hop``: who sends ``hop`` and how long it takes."""

    hop: str
    after: str
    service: str
    median_ms: float
    p99_ms: float
    max_ms: float | None = None  # transit times above it are drawn again; default 2 × p99
    error_rate: float = 0.0  # share of orders whose hop reports status error
    retry_share: float = 1.0  # of those, the share retried successfully
    retry_after_ms: float = 3000.0  # median time to the retry
    confirmation: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.median_ms <= self.p99_ms:
            raise ValueError(f"edge {self.hop}: median_ms {self.median_ms} must be > 0 and at most p99_ms")
        if not 0.0 <= self.error_rate <= 1.0 or not 0.0 <= self.retry_share <= 1.0:
            raise ValueError(f"edge {self.hop}: error_rate and retry_share must be between 0 and 1")

    @property
    def mu(self) -> float:
        return math.log(self.median_ms)

    @property
    def sigma(self) -> float:
        return math.log(self.p99_ms / self.median_ms) / _Z99

    @property
    def cap_ms(self) -> float:
        return self.max_ms if self.max_ms is not None else 2.0 * self.p99_ms


@dataclass(frozen=True, slots=True)
class Flow:
    """One journey of the shop: its start hop and the edges after it (each after its ``after``)."""

    journey: str
    start: str
    service: str
    edges: tuple[Edge, ...]
    share: float = 1.0  # relative share of arriving orders
    code: str = "W"  # order ids look like W-1a2b3c-0000042

    def hops(self) -> tuple[str, ...]:
        return (self.start, *(e.hop for e in self.edges))


@dataclass(frozen=True, slots=True)
class Shop:
    flows: tuple[Flow, ...]
    repeat_customers: float = 0.3  # share of orders from a customer who ordered before
    amount_median: float = 45.0

    def hops(self) -> dict[str, Flow]:
        return {hop: flow for flow in self.flows for hop in flow.hops()}

    def edge(self, hop: str) -> Edge | None:
        for flow in self.flows:
            for e in flow.edges:
                if e.hop == hop:
                    return e
        return None

    def check(self, schedule: Iterable[Fault]) -> None:
        """Raise FaultSpecError for a fault that names no hop of this shop or cannot act on it."""
        hops = self.hops()
        starts = {f.start for f in self.flows}
        confirmations = [e.hop for f in self.flows for e in f.edges if e.confirmation]
        for fault in schedule:
            spec = fault.spec()
            if isinstance(fault, BreakConfirmations) and not fault.hop:
                if not confirmations:
                    raise FaultSpecError(spec, "the shop has no confirmation hop to break")
                continue
            if fault.hop not in hops:
                raise FaultSpecError(spec, f"hop {fault.hop!r} is not in the shop; its hops: {', '.join(hops)}")
            if fault.hop in starts:
                raise FaultSpecError(
                    spec, f"hop {fault.hop!r} starts a journey; faults act on the hops after it, reached over an edge"
                )
            if isinstance(fault, BreakConfirmations) and fault.hop not in confirmations:
                raise FaultSpecError(
                    spec, f"hop {fault.hop!r} is not a confirmation; confirmation hops: {', '.join(confirmations)}"
                )


def demo_shop() -> Shop:
    """The shop of ``ordertrail/demo_journeys.yaml``: every transit well inside its demo deadline."""
    web = Flow(
        "web_order",
        "checkout.placed",
        "checkout",
        (
            Edge("payment.authorized", "checkout.placed", "payments", 600, 2500, error_rate=0.005),
            Edge("inventory.reserved", "payment.authorized", "inventory", 1000, 4000),
            Edge("email.confirmation_sent", "payment.authorized", "email", 2000, 8000, confirmation=True),
            Edge("fulfilment.shipped", "inventory.reserved", "warehouse", 8000, 25000, max_ms=45000),
        ),
        share=0.9,
        code="W",
    )
    refund = Flow(
        "refund",
        "refund.requested",
        "support",
        (
            Edge("refund.approved", "refund.requested", "support", 1500, 5000, max_ms=7000),
            Edge("refund.paid", "refund.approved", "payments", 3000, 10000),
            Edge("refund.email_sent", "refund.paid", "email", 2000, 8000, confirmation=True),
        ),
        share=0.1,
        code="R",
    )
    return Shop((web, refund))


def mismatches(shop: Shop, journeys: Journeys) -> list[str]:
    """Where the shop does not fit the journeys file (hops, edges, confirmations, caps past deadlines)."""
    problems = []
    for flow in shop.flows:
        j = journeys.journeys.get(flow.journey)
        if j is None:
            problems.append(f"journey {flow.journey!r} of the shop is not in {journeys.source}")
            continue
        if j.start != flow.start:
            problems.append(f"journey {flow.journey!r}: the shop starts at {flow.start!r}, the file at {j.start!r}")
        steps = {s.hop: s for s in j.steps}
        for e in flow.edges:
            step = steps.pop(e.hop, None)
            if step is None:
                problems.append(f"journey {flow.journey!r}: hop {e.hop!r} of the shop is not a step of the file")
                continue
            if step.after != e.after:
                problems.append(f"journey {flow.journey!r}, step {e.hop!r}: after {step.after!r}, shop {e.after!r}")
            if step.confirmation != e.confirmation:
                problems.append(f"journey {flow.journey!r}, step {e.hop!r}: confirmation differs from the shop")
            if e.cap_ms >= step.within_ms:
                problems.append(
                    f"journey {flow.journey!r}, step {e.hop!r}: transit up to {e.cap_ms:g} ms reaches the "
                    f"deadline of {step.within_ms} ms; healthy orders would be reported"
                )
        problems.extend(f"journey {flow.journey!r}: step {hop!r} is never sent by the shop" for hop in steps)
    return problems


@dataclass(slots=True)
class RunStats:
    started_ms: int = 0
    first_ts: int | None = None
    last_ts: int | None = None
    events: int = 0
    orders: dict[str, int] = field(default_factory=dict)  # journey -> orders started
    errors: int = 0  # hop events with status error the shop sent by itself (not injected)


class Simulation:
    """A shop, a fault schedule and an arrival rate; each run writes ``ledger`` afresh."""

    def __init__(
        self,
        shop: Shop,
        schedule: Sequence[Fault] = (),
        *,
        rate: float,
        seed: int | None = None,
        id_prefix: str | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate {rate!r} must be more than 0 orders per second")
        shop.check(schedule)
        self.shop = shop
        self.rate = rate
        self.seed = seed
        self.id_prefix = id_prefix
        self.ledger = Ledger(schedule)

    def run_offline(self, emit: Emit, *, start_ms: int, duration_ms: int, drain: bool = True) -> RunStats:
        """Orders arriving for ``duration_ms`` from ``start_ms``, as fast as possible. With ``drain``
        the orders in flight at the end run to their end; without, no event is at or after the end."""
        run = _Run(self, start_ms, start_ms + duration_ms, drain)
        run.advance(math.inf, emit, None)
        return run.stats

    def run_realtime(
        self,
        emit: Emit,
        *,
        stop: threading.Event,
        duration_ms: int | None = None,
        drain: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> RunStats:
        """Send each hop when it is due, stamped with ``clock()`` (epoch seconds), until the duration
        is over and, with ``drain``, the orders in flight have ended (without, the tracer sees them
        stop mid-way: stalls and missing hops) — or at once when ``stop`` is set."""
        start = int(clock() * 1000)
        run = _Run(self, start, None if duration_ms is None else start + duration_ms, drain)
        while not stop.is_set():
            now = int(clock() * 1000)
            run.advance(now, emit, now)
            due = run.next_due()
            if due is None:
                break
            stop.wait(min(max(due - int(clock() * 1000), 0) / 1000, 0.5))
        return run.stats


class _Order:
    __slots__ = ("customer_id", "flow", "order_id", "trace_id")

    def __init__(self, order_id: str, flow: _FlowPlan, customer_id: str, trace_id: str) -> None:
        self.order_id = order_id
        self.flow = flow
        self.customer_id = customer_id
        self.trace_id = trace_id


class _FlowPlan:
    """A flow with its edges indexed by the hop they leave from, and the faults on each hop."""

    __slots__ = ("children", "flow", "service")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.service = flow.service
        self.children: dict[str, list[tuple[Edge, float, float, float]]] = {}
        for e in flow.edges:
            self.children.setdefault(e.after, []).append((e, e.mu, e.sigma, e.cap_ms))


# A pending hop: (due ms, sequence, order, hop, service, error, parent span, edge or None for a start).
_Pending = tuple[int, int, _Order, str, str, bool, str, Edge | None]


class _Run:
    """One run's state: the next arrival, the heap of pending hops, the random stream, the ledger."""

    def __init__(self, sim: Simulation, start_ms: int, end_ms: int | None, drain: bool) -> None:
        self.rng = random.Random(sim.seed)
        self.start = start_ms
        self.end = end_ms
        self.drain = drain
        self.rate_per_ms = sim.rate / 1000.0
        self.shop = sim.shop
        self.ledger = sim.ledger
        self.ledger.begin(start_ms)
        self.stats = RunStats(started_ms=start_ms)
        self.plans = [_FlowPlan(f) for f in sim.shop.flows]
        total = sum(f.share for f in sim.shop.flows)
        self.cumulative = list(itertools.accumulate([f.share / total for f in sim.shop.flows]))
        self.prefix = sim.id_prefix if sim.id_prefix is not None else f"{self.rng.getrandbits(24):06x}"
        self.faults: dict[str, list[tuple[int, Fault]]] = {}
        confirmations = [e.hop for f in sim.shop.flows for e in f.edges if e.confirmation]
        for i, fault in enumerate(sim.ledger.schedule):
            for hop in [fault.hop] if fault.hop else confirmations:
                self.faults.setdefault(hop, []).append((i, fault))
        self.heap: list[_Pending] = []
        self._second = -1
        self._second_text = ""
        self.seq = 0
        self.orders = 0
        self.customers = 0
        self.next_arrival = start_ms + self._gap()

    def _gap(self) -> float:
        return self.rng.expovariate(self.rate_per_ms)

    def next_due(self) -> int | None:
        """When something next happens, or None when the run is over."""
        arrival = self.next_arrival if self.end is None or self.next_arrival < self.end else None
        pending = (
            self.heap[0][0] if self.heap and (self.drain or self.end is None or self.heap[0][0] < self.end) else None
        )
        if arrival is None:
            return pending
        return math.ceil(arrival) if pending is None else min(math.ceil(arrival), pending)

    def advance(self, now: float, emit: Emit, wall: int | None) -> None:
        """Everything due at or before ``now``; events are stamped ``wall``, else their due time."""
        heap = self.heap
        end = self.end
        while True:
            arrival = self.next_arrival
            if end is not None and arrival >= end:
                arrival = math.inf
            if heap and heap[0][0] <= arrival:
                due = heap[0][0]
                if due > now or (not self.drain and end is not None and due >= end):
                    return
                self._send(heapq.heappop(heap), emit, wall)
            elif arrival <= now and arrival < math.inf:
                self._arrive(int(arrival))
                self.next_arrival = arrival + self._gap()
            else:
                return

    def _arrive(self, t: int) -> None:
        rng = self.rng
        r = rng.random()
        plan = self.plans[-1]
        for p, c in zip(self.plans, self.cumulative, strict=True):
            if r < c:
                plan = p
                break
        self.orders += 1
        flow = plan.flow
        self.stats.orders[flow.journey] = self.stats.orders.get(flow.journey, 0) + 1
        if self.customers and rng.random() < self.shop.repeat_customers:
            customer = rng.randint(1, self.customers)
        else:
            self.customers += 1
            customer = self.customers
        order = _Order(f"{flow.code}-{self.prefix}-{self.orders:07d}", plan, f"C-{customer:06d}", _hex(rng, 128))
        self._push(t, order, flow.start, plan.service, False, "", None)

    def _push(self, t: int, order: _Order, hop: str, service: str, error: bool, parent: str, edge: Edge | None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, order, hop, service, error, parent, edge))

    def _stamp(self, ts: int) -> str:
        """``format_ts``, reusing the formatted second: consecutive events share it."""
        second = ts - ts % 1000
        if second != self._second:
            self._second = second
            self._second_text = format_ts(second)[:-4]
        return f"{self._second_text}{ts % 1000:03d}Z"

    def _send(self, pending: _Pending, emit: Emit, wall: int | None) -> None:
        due, _, order, hop, service, error, parent, edge = pending
        ts = due if wall is None else wall
        span = _hex(self.rng, 64)
        event: dict[str, object] = {
            "order_id": order.order_id,
            "hop": hop,
            "ts": self._stamp(ts),
            "service": service,
            "trace_id": order.trace_id,
            "span_id": span,
        }
        if parent:
            event["parent_span_id"] = parent
        if edge is None:
            event["customer_id"] = order.customer_id
            amount = self.rng.lognormvariate(math.log(self.shop.amount_median), 0.7)
            event["attrs"] = {"amount": f"{amount:.2f}", "currency": "EUR"}
        if error:
            event["status"] = "error"
        stats = self.stats
        stats.events += 1
        if stats.first_ts is None:
            stats.first_ts = ts
        stats.last_ts = ts
        emit(event)
        if not error:
            for child in order.flow.children.get(hop, ()):
                self._schedule(order, child, ts, span)

    def _schedule(self, order: _Order, child: tuple[Edge, float, float, float], t_up: int, parent: str) -> None:
        """Decide the fate of a hop for an order whose hop before it happened at ``t_up``."""
        rng = self.rng
        edge, mu, sigma, cap = child
        transit = rng.lognormvariate(mu, sigma)
        for _ in range(8):
            if transit <= cap:
                break
            transit = rng.lognormvariate(mu, sigma)
        t = t_up + int(min(transit, cap))
        faults = self.faults.get(edge.hop, ())
        journey = order.flow.flow.journey

        def note(i: int, fault: Fault, effect: str, at: int, until: int | None) -> None:
            self.ledger.record(Effect(order.order_id, journey, edge.hop, i, fault.kind, effect, at, until))

        for i, fault in faults:
            if isinstance(fault, SlowEdge) and fault.active(t_up - self.start):
                slowed = t_up + int((t - t_up) * fault.factor) + fault.extra_ms
                note(i, fault, DELAYED, t, slowed)
                t = slowed
        for i, fault in faults:
            if not fault.active(t - self.start):
                continue
            if isinstance(fault, DropAtEdge) and (fault.share >= 1.0 or rng.random() < fault.share):
                note(i, fault, DROPPED, t, None)
                return
            if isinstance(fault, BreakConfirmations) and edge.confirmation:
                note(i, fault, DROPPED, t, None)
                return
            if isinstance(fault, StopHop):
                end = fault.end_ms()
                released = None if fault.lose or end is None else self.start + end
                note(i, fault, SILENCED, t, released)
                if released is None:
                    return
                t = released
        for i, fault in faults:
            if not isinstance(fault, FailHop) or not fault.active(t - self.start):
                continue
            if fault.share >= 1.0 or rng.random() < fault.share:
                retry = None if fault.retry_ms is None else t + fault.retry_ms
                note(i, fault, FAILED, t, retry)
                self._push(t, order, edge.hop, edge.service, True, parent, edge)
                if retry is not None:
                    self._push(retry, order, edge.hop, edge.service, False, parent, edge)
                return
        if edge.error_rate and rng.random() < edge.error_rate:
            self.stats.errors += 1
            self._push(t, order, edge.hop, edge.service, True, parent, edge)
            if rng.random() < edge.retry_share:
                delay = edge.retry_after_ms * rng.uniform(0.5, 1.5)
                self._push(t + int(delay), order, edge.hop, edge.service, False, parent, edge)
            return
        self._push(t, order, edge.hop, edge.service, False, parent, edge)


def _hex(rng: random.Random, bits: int) -> str:
    return f"{rng.getrandbits(bits) | 1:0{bits // 4}x}"


__all__ = ["Edge", "Emit", "Flow", "RunStats", "Shop", "Simulation", "demo_shop", "mismatches"]
