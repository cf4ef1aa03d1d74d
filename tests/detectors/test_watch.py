"""The detector engine's alert lifecycle over a real WaitingTracer in event time: one EdgeDegraded
before any deadline, then the order-level incident alert, both resolving after recovery; re-sends,
severity changes, inhibition by PipelineDegraded and by the edge alert, the findings-stream mode."""

from __future__ import annotations

import threading

from detectors.alerts import Alert, MemorySink
from detectors.dispatch import Dispatcher
from detectors.edges import EdgeWatch, TracerEdges
from detectors.health import HealthSettings, PipelineHealth
from detectors.incidents import IncidentBook, IncidentSettings
from detectors.schedules import ScheduleWatch
from detectors.watch import Watch, WatchSettings
from tests.detectors.conftest import T0, Shop, event
from tests.detectors.test_health import FakePipeline
from tracer.clock import ManualClock
from tracer.journeys import parse_journeys
from tracer.memstore import MemStore
from tracer.model import MISSING, Finding
from tracer.schedules import Cron, Schedule
from tracer.waiting import WaitingTracer

SHORT = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
      email.sent: {after: payment.authorized, within: 30s, confirmation: true}
"""


class Rig:
    def __init__(self, *, resend_ms: int = 30_000) -> None:
        self.tracer = WaitingTracer(parse_journeys(SHORT))
        self.shop = Shop(self.tracer)
        self.clock = ManualClock(T0)
        self.pipeline = FakePipeline()
        self.am = MemorySink("am", resends=True)
        self.hook = MemorySink("hook")
        self.health = PipelineHealth(self.pipeline, self.clock, HealthSettings(clear_ms=2_000, grace_ms=5_000))
        self.watch = Watch(
            IncidentBook(IncidentSettings(window_ms=20_000), lookup_url="http://lookup"),
            Dispatcher([self.am, self.hook]),
            self.clock,
            edges=EdgeWatch(TracerEdges(self.tracer, threading.Lock())),
            health=self.health,
            settings=WatchSettings(resend_ms=resend_ms, lookup_url="http://lookup"),
        )

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.shop.run(1)
            self.clock.ms = self.shop.now
            self.pipeline.cycle += 1
            self.pipeline.seen += 10
            self.watch.on_findings(self.tracer.drain_findings())
            self.watch.tick()

    def sent(self, sink: MemorySink) -> list[Alert]:
        self.watch.dispatcher.start()
        self.watch.dispatcher.stop()
        return sink.sent


def names(alerts: list[Alert], *, firing: bool = True) -> list[str]:
    return [a.name for a in alerts if a.firing is firing]


def test_a_break_pages_edge_degraded_once_before_any_deadline_then_the_incident_then_both_resolve() -> None:
    rig = Rig()
    rig.run(120)
    assert rig.sent(rig.hook) == []
    broke = rig.shop.now
    rig.shop.broken = True
    rig.run(40)
    fired = [a for a in rig.sent(rig.hook) if a.firing]
    assert [a.name for a in fired][:1] == ["EdgeDegraded"] and names(fired).count("EdgeDegraded") == 1
    assert fired[0].starts_at < broke + 30_000  # before the first order's deadline
    assert "OrderMissing" in names(fired) and "OrderStalled" not in names(fired)
    missing = next(a for a in fired if a.name == "OrderMissing")
    assert missing.incident.startswith("inc-") and missing.links["lookup"].startswith("http://lookup/?q=o")
    rig.shop.broken = False
    rig.run(60)
    sent = rig.sent(rig.hook)
    assert set(names(sent, firing=False)) >= {"EdgeDegraded", "OrderMissing"}
    assert all(a.ends_at is not None for a in sent if not a.firing)
    assert rig.watch.firing() == []


def test_firing_alerts_are_resent_to_alertmanager_only() -> None:
    rig = Rig(resend_ms=5_000)
    rig.run(120)
    rig.shop.broken = True
    rig.run(20)
    am = [a for a in rig.sent(rig.am) if a.name == "EdgeDegraded"]
    hook = [a for a in rig.sent(rig.hook) if a.name == "EdgeDegraded"]
    assert len(hook) == 1 and len(am) >= 2
    assert len({a.starts_at for a in am}) == 1  # a re-send keeps its start


def test_pipeline_degraded_holds_back_edge_and_order_alerts_and_says_why() -> None:
    rig = Rig()
    rig.run(120)
    rig.pipeline.lag = 60_000
    rig.shop.broken = True
    rig.run(40)
    sent = rig.sent(rig.hook)
    assert names(sent) == ["PipelineDegraded"]
    assert "held back" in sent[0].description and "ingest lag" in sent[0].description
    incidents = rig.watch.incident_views()
    assert incidents and all(v["pipeline_suspect"] for v in incidents)


def test_a_severity_change_resolves_the_old_identity_and_fires_the_new() -> None:
    clock = ManualClock(T0)
    sink = MemorySink()
    book = IncidentBook(IncidentSettings(critical_orders=3))
    watch = Watch(book, Dispatcher([sink]), clock)
    watch.on_findings([Finding("o1", "j", MISSING, "b", "a", T0, T0)])
    watch.tick()
    watch.on_findings([Finding(f"o{i}", "j", MISSING, "b", "a", T0, T0) for i in range(2, 4)])
    watch.tick()
    watch.dispatcher.start()
    watch.dispatcher.stop()
    assert [(a.severity, a.firing) for a in sink.sent] == [("warning", True), ("warning", False), ("critical", True)]


def test_findings_stream_mode_pages_incidents_without_a_tracer() -> None:
    clock = ManualClock(T0)
    sink = MemorySink()
    watch = Watch(IncidentBook(), Dispatcher([sink]), clock)
    watch.on_findings([Finding("o1", "j", "unconfirmed", "email", "a", T0, T0)])
    (alert,) = watch.tick()
    assert alert.labels() == {"alertname": "ConfirmationMissing", "journey": "j", "hop": "email", "severity": "warning"}
    assert watch.incident_of("o1") is not None


def test_a_missed_scheduled_expectation_fires_schedule_missed_and_a_late_event_resolves_it() -> None:
    hourly = Schedule("hourly_export", "export.done", Cron.parse("0 * * * *"))
    store = MemStore()
    tracer = WaitingTracer(parse_journeys(SHORT))
    clock = ManualClock(T0)
    sink = MemorySink()
    watch = Watch(
        IncidentBook(),
        Dispatcher([sink]),
        clock,
        edges=EdgeWatch(TracerEdges(tracer, threading.Lock())),
        schedules=ScheduleWatch([hourly], store),
        settings=WatchSettings(schedule_check_ms=0),
    )
    top = T0 - T0 % 3_600_000 + 3_600_000  # the next full hour after T0
    tracer.advance(top + 1000)
    watch.tick()
    (alert,) = watch.tick()
    assert alert.labels() == {
        "alertname": "ScheduleMissed",
        "journey": "",
        "hop": "export.done",
        "severity": "warning",
        "schedule": "hourly_export",
    }
    assert "hourly_export: export.done was due" in alert.description
    store.write([event("x1", "export.done", top - 60_000)], [], [])  # it ran after all, reported late
    assert watch.tick() == []
