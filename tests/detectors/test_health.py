"""PipelineDegraded: lag, a stalled tracer, store errors, silent telemetry; one episode is one
alert; the inhibition lasts through a grace period."""

from __future__ import annotations

from dataclasses import dataclass

from detectors.health import HealthSettings, PipelineHealth
from tracer.clock import ManualClock

T0 = 1_795_000_000_000


@dataclass
class FakePipeline:
    lag: int = 0
    records: int = 0
    cycle: int = 0
    errors: int = 0
    seen: int = 0
    is_ready: bool = True

    def lag_ms(self) -> int:
        return self.lag

    def lag_records(self) -> int:
        return self.records

    def cycles(self) -> int:
        return self.cycle

    def store_errors(self) -> int:
        return self.errors

    def events(self) -> int:
        return self.seen

    def ready(self) -> bool:
        return self.is_ready


def healthy(p: FakePipeline, h: PipelineHealth, clock: ManualClock, seconds: int, rate: int = 10) -> None:
    for _ in range(seconds):
        clock.advance(1000)
        p.cycle += 10
        p.seen += rate
        h.tick([])


def setup() -> tuple[FakePipeline, PipelineHealth, ManualClock]:
    clock = ManualClock(T0)
    p = FakePipeline()
    return p, PipelineHealth(p, clock, HealthSettings(clear_ms=5_000, grace_ms=20_000)), clock


def test_a_healthy_pipeline_is_not_degraded() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 120)
    assert not h.degraded and not h.inhibits() and h.episodes == 0


def test_lag_degrades_then_clears_after_a_quiet_period_and_inhibits_through_the_grace() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 60)
    p.lag, p.records = 40_000, 900
    healthy(p, h, clock, 1)
    assert h.degraded and "ingest lag" in h.reasons[0] and "900 records" in h.reasons[0]
    p.lag = 0
    healthy(p, h, clock, 3)
    assert h.degraded  # not yet: it clears after clear_ms without any signal
    healthy(p, h, clock, 3)
    assert not h.degraded and h.inhibits()
    clock.advance(21_000)
    assert not h.inhibits()
    assert h.episodes == 1


def test_a_tracer_that_stops_cycling_is_a_stall() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 30)
    for _ in range(11):
        clock.advance(1000)
        h.tick([])
    assert h.degraded and any("not completed a cycle" in r for r in h.reasons)


def test_store_errors_degrade() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 30)
    p.errors += 1
    healthy(p, h, clock, 1)
    assert h.degraded and any("store" in r for r in h.reasons)


def test_no_events_at_all_while_they_usually_flow_is_silent_telemetry() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 180, rate=10)
    healthy(p, h, clock, 61, rate=0)
    assert h.degraded and any("no hop event at all" in r for r in h.reasons)


def test_a_hop_with_broken_telemetry_is_named() -> None:
    p, h, clock = setup()
    healthy(p, h, clock, 10)
    clock.advance(1000)
    p.cycle += 1
    p.seen += 1
    h.tick(["payment.authorized"])
    assert h.degraded and "payment.authorized" in h.reasons[0]
