"""Early warning at the edges: ``EdgeDegraded``, ``HopSilent`` and ``ConversionDrop``.

Each tick reads, per edge (the way from an ``after`` hop to a step), a ``Reading``: the tracer's
time, the orders waiting there bucketed by when they entered, monotonic counts of entries and
departures, and the learned transit times (``tracer.waiting``, ``Tracer.edge``). From it:

* ``EdgeDegraded`` — orders are waiting longer than this edge ever makes them wait. T is the
  edge's baseline p99 transit × ``factor`` (at least ``floor_ms``). The detector looks at the
  orders that entered in the slice [now − T − W, now − T]: with the edge healthy nearly all of them
  have left; when at least ``max(min_orders, 3 × expected)`` are still waiting, it fires. The slice
  ends T before now and W ≤ within − T, so those orders are still inside their deadlines: the alert
  comes before the first ``missing`` finding. With 5 orders/s and a p99 of a few seconds, a hard
  break fires about T + 1 s after it began. When the edge flows again, the slice fills with orders
  that left, and the alert resolves within T + W.
* ``HopSilent`` — the hop is not reported at all while orders keep entering its edge, for longer
  than ten of its usual gaps. Watched where volume tells sooner than transit time (T ≥ that window):
  slow edges with plenty of traffic. When orders reach later hops without this one (implied
  departures), it is not the hop but its telemetry: that is reported as ``telemetry_broken``,
  for ``PipelineDegraded``.
* ``ConversionDrop`` — of the orders that entered the edge over the last window, a share that
  left it well below the baseline share.

Baselines adapt and resist the failure they detect: p99 and conversion are medians of snapshots
taken while the edge is healthy (a snapshot a minute, the last fifteen), learning freezes while any
detector of the edge is firing and until the transit ring has turned over after recovery (the late
arrivals of an outage would otherwise inflate p99): an outage never becomes the new normal.

Imports the tracer's waiting view; no clock of its own (the tracer's time is the reference, so a
backlog replay never makes orders look old).
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from tracer.waiting import EdgeLoad, WaitingTracer

_UNSET: Final = -(2**63)


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    factor: float = 1.5  # T = baseline p99 × factor
    floor_ms: int = 1_000
    min_orders: int = 5  # stuck orders needed to fire EdgeDegraded
    min_slice_ms: int = 10_000
    silent_events: int = 10  # HopSilent after this many usual gaps without a report
    min_silent_ms: int = 10_000
    learn_every_ms: int = 60_000
    snapshots: int = 15
    min_samples: int = 100  # a p99 from fewer samples is a guess (an under-trained baseline pages on the tail)
    conversion_window_ms: int = 5 * 60_000
    conversion_min_entries: int = 20
    conversion_drop: float = 0.25  # fire when the share that left falls this far below baseline


@dataclass(frozen=True, slots=True)
class Reading:
    now_ms: int
    within_ms: int
    waiting: int
    entered: int
    left_seen: int
    left_implied: int
    samples: int  # transit samples learned so far (monotonic)
    recent: Sequence[int]  # recent transit times, ms
    stuck: int  # orders that entered in [now - T - W, now - T] and still wait (for the T, W asked)


class EdgeView(Protocol):
    """What the edge detectors read of the tracer."""

    def edges(self) -> list[tuple[str, str, str, int]]: ...  # (journey, after, hop, within_ms)
    def read(self, journey: str, hop: str, threshold_ms: int, slice_ms: int) -> Reading | None: ...


class TracerEdges:
    """``EdgeView`` over a live ``WaitingTracer``; takes the processor's lock for each read."""

    def __init__(self, tracer: WaitingTracer, lock: threading.Lock) -> None:
        self._tracer = tracer
        self._lock = lock

    def edges(self) -> list[tuple[str, str, str, int]]:
        return [(j.name, s.after, s.hop, s.within_ms) for j in self._tracer.journeys.journeys.values() for s in j.steps]

    def read(self, journey: str, hop: str, threshold_ms: int, slice_ms: int) -> Reading | None:
        with self._lock:
            now = self._tracer.now
            load: EdgeLoad | None = self._tracer.load(journey, hop)
            transit = self._tracer.edge(journey, hop)
            if now == _UNSET or load is None or transit is None:
                return None
            stuck = load.entered_between(now - threshold_ms - slice_ms, now - threshold_ms) if slice_ms else 0
            j = self._tracer.journeys.journeys[journey]
            step = j.step_at[j.index[hop]]
            return Reading(
                now,
                step.within_ms if step is not None else 0,
                load.waiting,
                load.entered,
                load.left_seen,
                load.left_implied,
                transit.count,
                transit.recent(),
                stuck,
            )


@dataclass(slots=True)
class EdgeState:
    """What one edge's detectors know and decide."""

    journey: str
    after: str
    hop: str
    within_ms: int
    p99s: deque[int] = field(default_factory=lambda: deque(maxlen=15))
    conversions: deque[float] = field(default_factory=lambda: deque(maxlen=15))
    over_share: float = 0.0  # share of healthy transits above T, for the expected stuck count
    last_learn_ms: int = _UNSET
    frozen_until_samples: int = 0
    rate: float = 0.0  # reports per second (seen departures), learned while healthy
    entry_rate: float = 0.0
    rate_updates: int = 0
    last: Reading | None = None
    last_report_ms: int = _UNSET  # tracer time of the last seen departure
    entered_at_report: int = 0
    implied_at_report: int = 0
    history: deque[tuple[int, int, int]] = field(default_factory=deque)  # (now, entered, departed)
    degraded: bool = False
    silent: bool = False
    telemetry_broken: bool = False
    conversion_low: bool = False
    stuck: int = 0
    threshold_ms: int = 0
    conversion: float | None = None
    since_ms: int = 0  # tracer time the current alert state began

    @property
    def baseline_p99(self) -> int | None:
        return int(statistics.median(self.p99s)) if self.p99s else None

    @property
    def firing(self) -> bool:
        return self.degraded or self.silent or self.conversion_low or self.telemetry_broken


class EdgeWatch:
    """Runs the three detectors over every edge of an ``EdgeView`` at each ``tick``."""

    def __init__(self, view: EdgeView, settings: EdgeSettings | None = None) -> None:
        self.view = view
        self.settings = settings or EdgeSettings()
        self.states = {(j, h): EdgeState(j, a, h, w) for j, a, h, w in view.edges()}
        for st in self.states.values():
            st.p99s = deque(maxlen=self.settings.snapshots)
            st.conversions = deque(maxlen=self.settings.snapshots)

    def tick(self) -> None:
        for st in self.states.values():
            self._tick_edge(st)

    def flowing_since(self, journey: str, hop: str, t_ms: int) -> bool:
        """Whether ``hop`` has been reported after ``t_ms`` (tracer time) — the edge flows."""
        st = self.states.get((journey, hop))
        return st is not None and st.last_report_ms > t_ms

    def now_ms(self) -> int | None:
        for st in self.states.values():
            if st.last is not None:
                return st.last.now_ms
        return None

    def _thresholds(self, st: EdgeState) -> tuple[int, int] | None:
        p99 = st.baseline_p99
        if p99 is None:
            return None
        s = self.settings
        t = max(s.floor_ms, int(p99 * s.factor))
        if t >= st.within_ms:
            return None  # the deadline comes first: findings tell, not this detector
        rate = st.entry_rate
        want = 2 * s.min_orders / rate * 1000 if rate > 0 else math.inf
        slice_ms = int(min(max(want, s.min_slice_ms), st.within_ms - t))
        return t, slice_ms

    def _tick_edge(self, st: EdgeState) -> None:
        s = self.settings
        limits = self._thresholds(st)
        t, slice_ms = limits if limits is not None else (st.within_ms, 0)
        r = self.view.read(st.journey, st.hop, t, slice_ms)
        if r is None:
            return
        prev = st.last
        st.last = r
        if prev is not None and r.now_ms > prev.now_ms:
            self._rates(st, prev, r)
        if prev is None or r.left_seen > prev.left_seen:
            st.last_report_ms = r.now_ms
            st.entered_at_report = r.entered
            st.implied_at_report = r.left_implied
        st.history.append((r.now_ms, r.entered, r.left_seen + r.left_implied))
        while len(st.history) > 2 and st.history[1][0] <= r.now_ms - s.conversion_window_ms:
            st.history.popleft()
        was = st.firing
        self._degraded(st, r, limits)
        self._silent(st, r, t)
        self._conversion(st, r)
        if st.firing != was:
            st.since_ms = r.now_ms
            if was:  # recovered: learn again only once the outage's transits left the ring
                st.frozen_until_samples = r.samples + len(r.recent)
        if not st.firing and r.samples >= st.frozen_until_samples:
            self._learn(st, r)

    def _rates(self, st: EdgeState, prev: Reading, r: Reading) -> None:
        if st.firing:
            return
        dt = (r.now_ms - prev.now_ms) / 1000
        st.rate_updates += 1
        alpha = min(1.0, max(dt / 60, 1 / st.rate_updates))  # a plain mean at first, then about a minute
        st.rate += alpha * ((r.left_seen - prev.left_seen) / dt - st.rate)
        st.entry_rate += alpha * ((r.entered - prev.entered) / dt - st.entry_rate)

    def _degraded(self, st: EdgeState, r: Reading, limits: tuple[int, int] | None) -> None:
        if limits is None:
            st.degraded = False
            return
        t, slice_ms = limits
        expected = st.entry_rate * slice_ms / 1000 * st.over_share
        need = max(self.settings.min_orders, math.ceil(3 * expected))
        st.stuck, st.threshold_ms = r.stuck, t
        st.degraded = r.stuck >= need if not st.degraded else r.stuck >= max(1, need // 2)

    def _silent(self, st: EdgeState, r: Reading, t: int) -> None:
        s = self.settings
        if st.rate <= 0 or st.last_report_ms == _UNSET:
            st.silent = st.telemetry_broken = False
            return
        window = max(s.min_silent_ms, int(s.silent_events / st.rate * 1000))
        quiet = r.now_ms - st.last_report_ms >= window and r.entered - st.entered_at_report >= s.silent_events
        implied = r.left_implied - st.implied_at_report
        st.telemetry_broken = quiet and implied >= 3
        st.silent = quiet and not st.telemetry_broken and (t >= window or st.baseline_p99 is None)

    def _conversion(self, st: EdgeState, r: Reading) -> None:
        s = self.settings
        first = st.history[0]
        entered, departed = r.entered - first[1], r.left_seen + r.left_implied - first[2]
        full = r.now_ms - first[0] >= s.conversion_window_ms * 0.9
        if not full or entered < s.conversion_min_entries:
            st.conversion = None
            st.conversion_low = False
            return
        st.conversion = min(1.0, departed / entered)
        base = statistics.median(st.conversions) if st.conversions else None
        st.conversion_low = base is not None and st.conversion < base - s.conversion_drop

    def _learn(self, st: EdgeState, r: Reading) -> None:
        s = self.settings
        if len(r.recent) < s.min_samples:
            return
        if st.p99s and r.now_ms - st.last_learn_ms < s.learn_every_ms:
            return
        st.last_learn_ms = r.now_ms
        window = sorted(r.recent)
        st.p99s.append(window[max(0, math.ceil(len(window) * 0.99) - 1)])
        t = max(s.floor_ms, int((st.baseline_p99 or 0) * s.factor))
        st.over_share = sum(1 for x in window if x > t) / len(window)
        if st.conversion is not None:
            st.conversions.append(st.conversion)
