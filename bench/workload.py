"""A deterministic generator of realistic hop events (CONTRACT §1) for the benchmarks.

Orders of the ``web_order`` journey of examples/journeys.yaml arrive as a Poisson stream in event
time, from a customer base where people order more than once. Each order goes checkout.placed →
payment.authorized → inventory.reserved and email.confirmation_sent → fulfilment.shipped, with
skewed (log-normal) transit times: seconds for payment and stock, tens of seconds for the email,
hours for shipping. A few percent of orders carry what a real day has:

* a hop that never happens, and with it every hop that would follow it;
* a payment error, most of them retried successfully a few seconds later;
* a hop past its deadline (a finding that resolves itself when the hop arrives);
* an event delivered out of order, tens of seconds after later hops of other orders;
* a re-sent event (a duplicate, byte for byte).

About 60 % of orders come from instrumented services (trace and span ids, explicit event ids,
``status: ok``), the rest from plain JSON producers (ids derived by ordertrail). Lines come out in
arrival order, as a log or a topic holds them. The same ``Spec`` gives the same bytes on every
machine and Python version (``random.Random`` with a seed).

Imports only the standard library, msgspec and the tracer's model (for the wire format).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

import msgspec

from tracer.model import format_ts

JOURNEY: Final = "web_order"
CHECKOUT: Final = "checkout.placed"
PAYMENT: Final = "payment.authorized"
INVENTORY: Final = "inventory.reserved"
EMAIL: Final = "email.confirmation_sent"
SHIPPED: Final = "fulfilment.shipped"
HOPS: Final = (CHECKOUT, PAYMENT, INVENTORY, EMAIL, SHIPPED)
START_MS: Final = 1_795_334_400_000  # 2026-11-22T08:00:00Z
FIRST_ORDER: Final = 100_000

_SERVICE: Final = {
    CHECKOUT: "web-checkout",
    PAYMENT: "payments",
    INVENTORY: "inventory",
    EMAIL: "notifier",
    SHIPPED: "warehouse",
}
_AFTER: Final = {PAYMENT: CHECKOUT, INVENTORY: PAYMENT, EMAIL: PAYMENT, SHIPPED: INVENTORY}
_WITHIN_MS: Final = {PAYMENT: 30_000, INVENTORY: 120_000, EMAIL: 300_000}
# Transit time from the hop before: log-normal with this median (ms) and sigma.
_TRANSIT: Final = {PAYMENT: (1_500, 0.6), INVENTORY: (4_000, 0.7), EMAIL: (20_000, 0.8), SHIPPED: (10_800_000, 0.5)}
# Which hops vanish with a lost hop, and how often each hop is the lost one.
_LOST_WITH: Final = {
    PAYMENT: (PAYMENT, INVENTORY, EMAIL, SHIPPED),
    INVENTORY: (INVENTORY, SHIPPED),
    EMAIL: (EMAIL,),
    SHIPPED: (SHIPPED,),
}
_LOST_WEIGHTS: Final = (20, 35, 30, 15)
_ENCODE: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Spec:
    """What to generate. Rates are shares of orders; ``customers`` defaults to a third of the orders."""

    orders: int
    seed: int = 20261122
    start_ms: int = START_MS
    orders_per_s: float = 50.0
    customers: int = 0
    missing: float = 0.03
    errors: float = 0.01
    late: float = 0.02
    out_of_order: float = 0.02
    duplicates: float = 0.01

    def __post_init__(self) -> None:
        if self.orders < 1:
            raise ValueError(f"orders: {self.orders!r} must be at least 1")
        if self.orders_per_s <= 0:
            raise ValueError(f"orders_per_s: {self.orders_per_s!r} must be positive")
        total = self.missing + self.errors + self.late + self.out_of_order + self.duplicates
        if not 0 <= total <= 1:
            raise ValueError(f"fault shares add up to {total!r}; they must add up to at most 1")


@dataclass(slots=True)
class Summary:
    """What a generated stream holds, counted while it was written."""

    orders: int = 0
    events: int = 0
    bytes: int = 0
    missing_hop: int = 0
    errors: int = 0
    retried: int = 0
    late: int = 0
    out_of_order: int = 0
    duplicates: int = 0


def orders_for_events(events: int) -> int:
    """How many orders give about ``events`` events (a complete order has five hops)."""
    return max(1, round(events / 4.95))


def lines(spec: Spec, summary: Summary | None = None) -> Iterator[bytes]:
    """The NDJSON lines (without newline) of ``spec``, in arrival order."""
    summary = summary if summary is not None else Summary()
    rng = random.Random(spec.seed)
    customers = spec.customers or max(100, spec.orders // 3)
    pending: list[tuple[int, int, bytes]] = []  # (arrival ms, sequence, line)
    seq = 0
    start = float(spec.start_ms)
    for n in range(spec.orders):
        start += rng.expovariate(spec.orders_per_s) * 1000
        opened = int(start)
        while pending and pending[0][0] < opened:  # nothing generated from now on arrives earlier
            line = heapq.heappop(pending)[2]
            summary.events += 1
            summary.bytes += len(line) + 1
            yield line
        summary.orders += 1
        for arrival, line in _order(rng, FIRST_ORDER + n, opened, customers, spec, summary):
            seq += 1
            heapq.heappush(pending, (arrival, seq, line))
    while pending:
        line = heapq.heappop(pending)[2]
        summary.events += 1
        summary.bytes += len(line) + 1
        yield line


def write(path: Path, spec: Spec) -> Summary:
    """Write ``spec`` as an NDJSON file; returns what it holds."""
    summary = Summary()
    with path.open("wb") as out:
        chunk: list[bytes] = []
        for line in lines(spec, summary):
            chunk.append(line)
            if len(chunk) >= 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    return summary


def _order(
    rng: random.Random, number: int, opened: int, customers: int, spec: Spec, summary: Summary
) -> list[tuple[int, bytes]]:
    """The events of one order as (arrival ms, line)."""
    order_id = f"ord-{number:09d}"
    customer = f"cus-{_customer(rng, customers):07d}"
    fault = rng.random()
    lost: tuple[str, ...] = ()
    late_hop = ""
    error = out_of_order = duplicate = False
    edge = spec.missing
    if fault < edge:
        lost = _LOST_WITH[rng.choices((PAYMENT, INVENTORY, EMAIL, SHIPPED), _LOST_WEIGHTS)[0]]
        summary.missing_hop += 1
    elif fault < (edge := edge + spec.errors):
        error = True
        summary.errors += 1
    elif fault < (edge := edge + spec.late):
        late_hop = rng.choice((PAYMENT, INVENTORY, EMAIL))
        summary.late += 1
    elif fault < (edge := edge + spec.out_of_order):
        out_of_order = True
        summary.out_of_order += 1
    elif fault < edge + spec.duplicates:
        duplicate = True
        summary.duplicates += 1

    times = {CHECKOUT: opened}
    for hop in (PAYMENT, INVENTORY, EMAIL, SHIPPED):
        median, sigma = _TRANSIT[hop]
        transit = int(rng.lognormvariate(0.0, sigma) * median)
        if hop == late_hop:
            transit = int(_WITHIN_MS[hop] * rng.uniform(1.05, 3.0))
        times[hop] = times[_AFTER[hop]] + transit
    failed_at = 0
    if error:
        failed_at = times[PAYMENT]
        if rng.random() < 0.7:
            summary.retried += 1
            retry = rng.randint(2_000, 20_000)
            for hop in (PAYMENT, INVENTORY, EMAIL, SHIPPED):
                times[hop] += retry
        else:
            lost = _LOST_WITH[PAYMENT]

    instrumented = rng.random() < 0.6
    trace_id = f"{rng.getrandbits(128):032x}" if instrumented else ""
    parent = ""
    out: list[tuple[int, bytes]] = []

    def emit(hop: str, ts: int, status: str, attrs: dict[str, str]) -> None:
        nonlocal parent
        event: dict[str, object] = {"order_id": order_id, "hop": hop, "ts": _format(ts), "service": _SERVICE[hop]}
        if instrumented:
            span = f"{rng.getrandbits(64):016x}"
            event["event_id"] = f"{rng.getrandbits(128):032x}"
            event["trace_id"] = trace_id
            event["span_id"] = span
            if parent:
                event["parent_span_id"] = parent
            parent = span
        if status != "ok" or instrumented:
            event["status"] = status
        if hop in (CHECKOUT, PAYMENT):
            event["customer_id"] = customer
            event["journey"] = JOURNEY
        if attrs:
            event["attrs"] = attrs
        out.append((ts + int(rng.expovariate(1 / 40)), _ENCODE.encode(event)))

    emit(CHECKOUT, opened, "ok", _checkout_attrs(rng))
    if error:
        emit(PAYMENT, failed_at, "error", {"error.type": rng.choice(("card_declined", "psp_timeout", "fraud_check"))})
    for hop in (PAYMENT, INVENTORY, EMAIL, SHIPPED):
        if hop not in lost:
            emit(hop, times[hop], "ok", _attrs(rng, hop))
    if out_of_order:
        i = rng.randrange(1, len(out)) if len(out) > 1 else 0
        arrival, line = out[i]
        out[i] = (arrival + rng.randint(5_000, 120_000), line)
    if duplicate:
        arrival, line = rng.choice(out)
        out.append((arrival + rng.randint(200, 30_000), line))
    return out


def _customer(rng: random.Random, customers: int) -> int:
    """Regulars order often: a fifth of the customers place half of the orders."""
    if rng.random() < 0.5:
        return rng.randrange(max(1, customers // 5))
    return rng.randrange(customers)


def _checkout_attrs(rng: random.Random) -> dict[str, str]:
    return {
        "channel": rng.choice(("web", "web", "app")),
        "amount": f"{rng.lognormvariate(3.8, 0.7):.2f}",
        "currency": "EUR",
    }


def _attrs(rng: random.Random, hop: str) -> dict[str, str]:
    if hop == PAYMENT:
        return {"psp": rng.choice(("adyen", "stripe")), "method": rng.choice(("card", "card", "paypal", "klarna"))}
    if hop == INVENTORY:
        return {"warehouse": rng.choice(("ams-1", "ams-2", "fra-1"))}
    if hop == SHIPPED:
        return {"carrier": rng.choice(("dhl", "ups", "postnl")), "parcels": str(rng.randint(1, 3))}
    return {}


@lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return format_ts(seconds * 1000)[:-4]


def _format(ms: int) -> str:
    """``format_ts`` with the date part cached per second (the generator's hot path)."""
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"
