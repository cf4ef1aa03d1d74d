"""The false-alarm test: the tracer pauses for two minutes while orders keep coming, then replays
the backlog. Nothing about the orders is wrong, so no order-level or edge alert may fire; the one
alert is PipelineDegraded. Runs the real processor, clock rule and detectors over an in-memory bus
and store with a manual wall clock (seconds, not minutes)."""

from __future__ import annotations

import msgspec

from detectors import Dispatcher, EdgeWatch, IncidentBook, PipelineHealth, TracerEdges, Watch
from detectors.alerts import MemorySink
from ordertrail.alerting import ProcessorView
from tests.detectors.conftest import T0, event
from tracer.bus import HOPS_TOPIC, Message
from tracer.clock import ManualClock, PartitionClock
from tracer.fakebus import MemoryBus
from tracer.journeys import parse_journeys
from tracer.memstore import MemStore
from tracer.model import event_to_wire
from tracer.processor import Processor
from tracer.waiting import WaitingTracer

JOURNEYS = parse_journeys(
    """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 20s}
"""
)


class Harness:
    def __init__(self) -> None:
        self.wall = ManualClock(T0)
        self.bus = MemoryBus({HOPS_TOPIC: 2}, now_ms=self.wall.now_ms)
        self.tracer = WaitingTracer(JOURNEYS)
        self.processor = Processor(
            self.bus.consumer(HOPS_TOPIC, "t"),
            MemStore(),
            self.tracer,
            PartitionClock(self.wall, in_flight_ms=250, warmup_ms=0),
            [0, 1],
            max_records=1000,
            poll_timeout_s=0,
        )
        self.sink = MemorySink()
        self.watch = Watch(
            IncidentBook(),
            Dispatcher([self.sink]),
            self.wall,
            edges=EdgeWatch(TracerEdges(self.tracer, self.processor.lock)),
            health=PipelineHealth(ProcessorView(self.processor), self.wall),
        )
        self.processor.add_listener(self.watch.on_findings)
        self.processor.stats.ready = True
        self.n = 0

    def shop(self, ms: int) -> None:
        """Five orders a second, each paid 1–2 s after checkout (in event time = wall time)."""
        for _ in range(ms // 200):
            self.wall.advance(200)
            self.n += 1
            now = self.wall.ms
            events = [event(f"o{self.n}", "checkout.placed", now)]
            if self.n > 7:
                events.append(event(f"o{self.n - 7}", "payment.authorized", now))
            enc = msgspec.json.encode
            self.bus.produce_batch(HOPS_TOPIC, [Message(e.order_id, enc(event_to_wire(e))) for e in events])

    def live(self, seconds: int, *, processing: bool = True) -> None:
        for _ in range(seconds):
            self.shop(1000)
            if processing:
                while self.processor.step():
                    pass
            self.watch.tick()


def test_a_paused_pipeline_replaying_its_backlog_raises_no_order_alert_and_one_pipeline_degraded() -> None:
    h = Harness()
    h.live(90)
    assert h.tracer.stats.raised == {} and h.watch.firing() == []
    h.live(120, processing=False)  # the tracer is paused; orders keep coming
    h.processor.step()  # resumes: the first batch of the backlog, its lag now known
    h.watch.tick()
    h.live(60)  # replays the rest and carries on
    h.watch.dispatcher.start()
    h.watch.dispatcher.stop()
    assert h.tracer.stats.raised == {}
    firing = [a for a in h.sink.sent if a.firing]
    assert [a.name for a in firing] == ["PipelineDegraded"]
    assert [a.name for a in h.sink.sent if not a.firing] == ["PipelineDegraded"]
    assert "held back" in firing[0].description
