"""Builders shared by the tracer tests: the contract's example journeys and hop events at times
relative to ``T0``. The tests import them from here (``from tests.tracer.conftest import ...``)."""

from __future__ import annotations

from typing import Any

from tracer.engine import Tracer
from tracer.events import validate
from tracer.journeys import Journeys, parse_journeys
from tracer.model import Finding, HopEvent

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
