"""Builders shared by the tracer tests: the contract's example journeys, hop events at times
relative to ``T0``, and an order's owner killed between its store write and its commit. The tests
import them from here (``from tests.tracer.conftest import ...``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tracer.bus import Message, Record
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import Tracer
from tracer.events import validate
from tracer.fakebus import MemoryBus, MemoryConsumer
from tracer.journeys import Journeys, parse_journeys
from tracer.memstore import MemStore
from tracer.model import Finding, HopEvent
from tracer.processor import Processor

T0 = 1_795_000_000_000  # 2026-11-18T11:06:40.000Z
S = 1000
M = 60 * S

# CONTRACT §2, verbatim.
WEB_ORDER = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized:      {after: checkout.placed,    within: 30s}
      inventory.reserved:      {after: payment.authorized, within: 2m, stall_after: 20s}
      email.confirmation_sent: {after: payment.authorized, within: 5m, confirmation: true}
      fulfilment.shipped:      {after: inventory.reserved, within: 24h}
    complete: [fulfilment.shipped, email.confirmation_sent]
"""

CHECKOUT = "checkout.placed"
PAYMENT = "payment.authorized"
INVENTORY = "inventory.reserved"
EMAIL = "email.confirmation_sent"
SHIPPED = "fulfilment.shipped"


def web_order() -> Journeys:
    return parse_journeys(WEB_ORDER, "web.yaml")


def hop(order_id: str, name: str, at: int = 0, **fields: Any) -> HopEvent:
    """A validated hop event ``at`` milliseconds after T0; other fields as on the wire."""
    return validate({"order_id": order_id, "hop": name, "ts": T0 + at, **fields})


def feed(tracer: Tracer, *events: HopEvent) -> None:
    """Deliver events as a live partition would: the clock follows event time, never back."""
    for ev in events:
        tracer.advance(ev.ts)
        tracer.on_event(ev)


def latest(findings: list[Finding]) -> dict[tuple[str, str, str], Finding]:
    """The last emitted version of every finding, by (order, hop, kind)."""
    return {(f.order_id, f.hop, f.kind): f for f in findings}


def hop_message(order_id: str, name: str, at: int = 0, extra: str = "") -> Message:
    """The hops-topic record of a hop ``at`` milliseconds after T0; ``extra``: more JSON members."""
    return Message(order_id, f'{{"order_id": "{order_id}", "hop": "{name}", "ts": {T0 + at}{extra}}}'.encode())


class DiesBeforeCommit:
    """A consumer whose owner is killed after each store write, before the commit."""

    def __init__(self, consumer: MemoryConsumer) -> None:
        self._consumer = consumer

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        return self._consumer.poll(max_records, timeout_s)

    def commit(self, positions: Mapping[int, int]) -> None:
        pass

    def lag(self) -> dict[int, int]:
        return self._consumer.lag()


def complete_then_die(
    bus: MemoryBus,
    topic: str,
    store: MemStore,
    wall: ManualClock,
    order_id: str,
    partitions: Sequence[int],
    extra: str = "",
) -> None:
    """The owner of ``partitions`` (consumer group ``g``) reads a web order up to its inventory
    and commits; then it reads the shipment, which completes the order, stores that batch, and is
    killed before committing it."""
    owner = Processor(
        bus.consumer(topic, "g"), store, Tracer(web_order()), PartitionClock(wall, warmup_ms=0), partitions
    )
    steps = ((CHECKOUT, 0), (PAYMENT, S), (EMAIL, 2 * S), (INVENTORY, 3 * S))
    bus.produce_batch(topic, [hop_message(order_id, name, at, extra) for name, at in steps])
    owner.step()
    bus.produce_batch(topic, [hop_message(order_id, SHIPPED, 9 * S, extra)])
    Processor(DiesBeforeCommit(bus.consumer(topic, "g")), store, owner.tracer, owner.clock, partitions).step()
    record = store.order(order_id)
    assert record is not None and record.snapshot is not None and record.snapshot.status == "completed"
