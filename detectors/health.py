"""Pipeline self-health: ``PipelineDegraded`` when ordertrail itself is behind, blind or failing.

Signals, read at each tick from the processor's stats (``PipelineView``) and the edge detectors:

* ingest lag — the tracer's clock trails wall time by more than ``lag_ms`` (the clock rule of
  ``tracer.clock``: while behind, deadlines follow event time, so no order is accused; this says why
  nothing is being reported);
* stalled — the tracer has not completed a cycle for ``stall_ms`` (paused, stuck on a write);
* store errors — a store write failed in the last ``store_window_ms``;
* no telemetry — no hop event at all for the time ``silent_events`` usually take: a collector, the
  ingest path or the bus is down (a whole shop going quiet at once is far likelier to be us);
* a hop's telemetry broke — orders reach later hops while that hop sends nothing
  (``EdgeState.telemetry_broken``).

It fires on the first signal and clears only after ``clear_ms`` without any, so one episode is one
alert. While it fires, and for ``grace_ms`` after, order-level and edge alerts are held back
(``inhibits``): orders look late when ordertrail is behind or blind, and those alerts would describe
our pipeline, not the business. Incidents opened in that time stay visible in ``/v1/incidents`` but
page only once new findings arrive after the grace.

The wall clock is injected; nothing here reads time by itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from tracer.clock import Clock


@dataclass(frozen=True, slots=True)
class HealthSettings:
    lag_ms: int = 10_000
    stall_ms: int = 10_000
    store_window_ms: int = 30_000
    silent_events: int = 50
    min_silent_ms: int = 60_000  # a shop going quiet for less is not worth a page about our telemetry
    clear_ms: int = 10_000
    grace_ms: int = 30_000


class PipelineView(Protocol):
    """What pipeline health reads of the running tracer."""

    def lag_ms(self) -> int: ...
    def lag_records(self) -> int: ...
    def cycles(self) -> int: ...
    def store_errors(self) -> int: ...
    def events(self) -> int: ...
    def ready(self) -> bool: ...


@dataclass(slots=True)
class PipelineHealth:
    view: PipelineView
    wall: Clock
    settings: HealthSettings = field(default_factory=HealthSettings)
    degraded: bool = False
    since_ms: int = 0
    cleared_ms: int | None = None
    reasons: list[str] = field(default_factory=list)
    episodes: int = 0
    _last_cycles: int = -1
    _cycle_ms: int = 0
    _last_errors: int = 0
    _error_ms: int | None = None
    _last_events: int = 0
    _event_ms: int = 0
    _rate: float = 0.0
    _rate_at: int | None = None
    _healthy_since: int | None = None

    def tick(self, broken_hops: list[str]) -> None:
        """Look at the signals now; ``broken_hops`` are hops whose telemetry broke (edge detectors)."""
        now = self.wall.now_ms()
        v, s = self.view, self.settings
        reasons = []
        if not v.ready():
            self._cycle_ms = now
        lag = v.lag_ms()
        if lag >= s.lag_ms:
            reasons.append(f"ingest lag: the tracer is {lag / 1000:.0f} s behind ({v.lag_records()} records to read)")
        cycles = v.cycles()
        if cycles != self._last_cycles:
            self._last_cycles, self._cycle_ms = cycles, now
        elif now - self._cycle_ms >= s.stall_ms:
            reasons.append(f"the tracer has not completed a cycle for {(now - self._cycle_ms) / 1000:.0f} s")
        errors = v.store_errors()
        if errors > self._last_errors:
            self._last_errors, self._error_ms = errors, now
        if self._error_ms is not None and now - self._error_ms < s.store_window_ms:
            reasons.append("store writes are failing (retried; nothing is committed until they succeed)")
        reasons.extend(self._silence(now, v.events()))
        reasons.extend(
            f"hop {hop} sends no events while orders reach the hops after it: its telemetry is broken"
            for hop in broken_hops
        )
        self.reasons = reasons or self.reasons
        if reasons:
            self._healthy_since = None
            if not self.degraded:
                self.degraded, self.since_ms, self.episodes = True, now, self.episodes + 1
                self.reasons = reasons
        elif self.degraded:
            self._healthy_since = self._healthy_since or now
            if now - self._healthy_since >= s.clear_ms:
                self.degraded, self.cleared_ms = False, now

    def _silence(self, now: int, events: int) -> list[str]:
        s = self.settings
        if events != self._last_events:
            if self._rate_at is not None and not self.degraded and now > self._rate_at:
                inst = (events - self._last_events) / ((now - self._rate_at) / 1000)
                self._rate += min(1.0, (now - self._rate_at) / 60_000) * (inst - self._rate)
            self._last_events, self._event_ms, self._rate_at = events, now, now
            return []
        if self._rate_at is None:
            self._rate_at, self._event_ms = now, now
        if self._rate <= 0:
            return []
        window = max(s.min_silent_ms, int(s.silent_events / self._rate * 1000))
        quiet = now - self._event_ms
        if quiet < window:
            return []
        return [
            f"no hop event at all for {quiet / 1000:.0f} s (usually {self._rate:.1f}/s): "
            "a collector, the ingest path or the bus is down"
        ]

    def inhibits(self, now_ms: int | None = None) -> bool:
        """Whether order-level and edge alerts are held back now."""
        if self.degraded:
            return True
        if self.cleared_ms is None:
            return False
        now = self.wall.now_ms() if now_ms is None else now_ms
        return now - self.cleared_ms < self.settings.grace_ms
