"""Shared fixtures of the detector tests: a small journey and a shop feeding a WaitingTracer in
event time (no wall clock, no threads)."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tracer.journeys import Journeys, parse_journeys
from tracer.model import HopEvent, derive_event_id, derive_trace_id
from tracer.waiting import WaitingTracer

JOURNEYS_YAML = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 5m}
      email.sent: {after: payment.authorized, within: 5m, confirmation: true}
"""
T0 = 1_795_000_000_000


def event(order_id: str, hop: str, ts: int, *, customer: str = "", attrs: dict[str, str] | None = None) -> HopEvent:
    return HopEvent(
        order_id,
        hop,
        ts,
        derive_event_id(order_id, hop, ts),
        derive_trace_id(order_id),
        customer_id=customer,
        attrs=attrs or {},
    )


@dataclass
class Shop:
    """Orders at ``rate`` per second; payment follows checkout after 300–2500 ms unless broken."""

    tracer: WaitingTracer
    rate: float = 5.0
    now: int = T0
    seq: int = 0
    broken: bool = False
    pending: list[tuple[int, str]] = field(default_factory=list)  # (due, order id) of payments to send
    rng: random.Random = field(default_factory=lambda: random.Random(3))

    def run(self, seconds: float, *, step_ms: int = 100) -> None:
        end = self.now + int(seconds * 1000)
        carry = 0.0
        while self.now < end:
            self.now += step_ms
            carry += self.rate * step_ms / 1000
            while carry >= 1:
                carry -= 1
                self.seq += 1
                oid = f"o{self.seq}"
                self.tracer.on_event(event(oid, "checkout.placed", self.now, customer=f"c{self.seq % 7}"))
                if not self.broken:
                    self.pending.append((self.now + self.rng.randint(300, 2500), oid))
            due = [p for p in self.pending if p[0] <= self.now]
            self.pending = [p for p in self.pending if p[0] > self.now]
            for ts, oid in due:
                self.tracer.on_event(event(oid, "payment.authorized", ts))
                self.tracer.on_event(event(oid, "email.sent", ts + 10))
            self.tracer.advance(self.now)


@pytest.fixture
def journeys() -> Journeys:
    return parse_journeys(JOURNEYS_YAML)


@pytest.fixture
def lock() -> threading.Lock:
    return threading.Lock()


class Receiver:
    """An HTTP server on loopback that records POSTs and answers with the statuses queued."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.received: list[tuple[float, bytes]] = []  # (wall time, body) of every POST
        self.statuses: list[int] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), body))
                outer.received.append((time.time(), body))
                self.send_response(outer.statuses.pop(0) if outer.statuses else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
