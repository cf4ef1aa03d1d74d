"""Detection lead time (issue 5): for each fault injected into a simulated run, when the first
alert about its hop fired versus when the first order's deadline at that hop passed.

The run is offline and in event time, so it is exact and quick: the simulator generates the shop's
events with the faults, they are fed in time order to a ``WaitingTracer``, and once per simulated
second the clock advances and the detectors (``Watch`` with its edge detectors, incidents and
pipeline health on a manual clock) tick. Two runs: the demo's shop and fault schedule on
``ordertrail/demo_journeys.yaml``, and the hard break of the issue — an edge carrying 6 orders/s
with a p99 transit of 2.5 s and a 5-minute deadline, broken for good — whose ``EdgeDegraded`` must
fire within 15 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import msgspec

from bench import Context, Row, Section, Target
from collectors.faults import parse_schedule
from collectors.simulator import Edge, Flow, Shop, Simulation, demo_shop
from detectors import Dispatcher, EdgeWatch, IncidentBook, PipelineHealth, TracerEdges, Watch
from detectors.health import PipelineView
from ordertrail.demo import DEFAULT_FAULTS
from tracer.clock import ManualClock
from tracer.events import decode_line
from tracer.journeys import Journeys, parse_journeys
from tracer.model import FAILED, OPEN, Finding
from tracer.waiting import WaitingTracer

T0 = 1_795_000_000_000
BREAK_JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 5m}
"""
BREAK_SHOP = Shop(
    (
        Flow(
            "web_order",
            "checkout.placed",
            "checkout",
            (Edge("payment.authorized", "checkout.placed", "payments", 800, 2500),),
        ),
    )
)
BREAK_FAULT = "drop:payment.authorized@2m"
BREAK_TARGET_MS = 15_000


@dataclass(frozen=True, slots=True)
class Lead:
    fault: str
    alert: str  # the first alert's name, "" when none fired
    alert_ms: int | None  # after the fault started
    deadline_ms: int | None  # the first deadline passed (for failures: the first failure), after the start


class _Steady:
    """The pipeline is healthy in this run: a view whose heartbeat moves with every tick."""

    def __init__(self, tracer: WaitingTracer) -> None:
        self._tracer = tracer
        self._cycles = 0

    def lag_ms(self) -> int:
        return 0

    def lag_records(self) -> int:
        return 0

    def cycles(self) -> int:
        self._cycles += 1
        return self._cycles

    def store_errors(self) -> int:
        return 0

    def events(self) -> int:
        return self._tracer.stats.events

    def ready(self) -> bool:
        return True


def simulate(journeys: Journeys, shop: Shop, faults: list[str], *, rate: float, duration_ms: int) -> list[Lead]:
    schedule = parse_schedule(faults)
    sim = Simulation(shop, schedule, rate=rate, seed=5)
    events: list[bytes] = []
    sim.run_offline(lambda e: events.append(msgspec.json.encode(e)), start_ms=T0, duration_ms=duration_ms)
    decoded = sorted((decode_line(e) for e in events), key=lambda e: e.ts)
    tracer = WaitingTracer(journeys)
    wall = ManualClock(T0)
    view: PipelineView = _Steady(tracer)
    watch = Watch(
        IncidentBook(),
        Dispatcher([]),
        wall,
        edges=EdgeWatch(TracerEdges(tracer, _NoLock())),
        health=PipelineHealth(view, wall),
    )
    fired: dict[str, list[tuple[int, str]]] = {}  # hop -> (time, alert name) of each alert as it fired
    firing: set[tuple[str, str]] = set()
    findings: list[Finding] = []
    i = 0
    end = decoded[-1].ts + 60_000 if decoded else T0
    for now in range(T0 + 1000, end, 1000):
        while i < len(decoded) and decoded[i].ts <= now:
            tracer.on_event(decoded[i])
            i += 1
        tracer.advance(now)
        wall.ms = now
        new = tracer.drain_findings()
        findings.extend(new)
        watch.on_findings(new)
        now_firing = {(a.name, a.hop) for a in watch.tick() if a.hop}
        for name, hop in now_firing - firing:
            fired.setdefault(hop, []).append((now, name))
        firing = now_firing
    leads = []
    for window in sim.ledger.windows():
        hop, start = window.fault.hop, window.start_ms
        dues = [
            f.due_at if f.kind != FAILED else f.detected_at
            for f in findings
            if f.status == OPEN and f.hop == hop and f.kind != "stalled" and f.due_at >= start
        ]
        alert = next((a for a in fired.get(hop, ()) if a[0] >= start), None)
        leads.append(
            Lead(
                window.fault.spec(),
                alert[1] if alert else "",
                alert[0] - start if alert else None,
                min(dues) - start if dues else None,
            )
        )
    return leads


class _NoLock:
    """The bench feeds the tracer and ticks the detectors on one thread: no lock needed."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def lead_time(ctx: Context) -> Section:
    section = Section(
        reference="the time from a fault's start to the first deadline it made pass at its hop (for failures: "
        "the first failed hop): when findings alone would have told; a ratio below 1 is an alert before that"
    )
    demo = parse_journeys(resources.files("ordertrail").joinpath("demo_journeys.yaml").read_text())
    runs = [
        ("demo", simulate(demo, demo_shop(), list(DEFAULT_FAULTS), rate=8.0, duration_ms=150_000)),
        (
            "hard break",
            simulate(parse_journeys(BREAK_JOURNEYS), BREAK_SHOP, [BREAK_FAULT], rate=6.0, duration_ms=480_000),
        ),
    ]
    for name, leads in runs:
        for lead in leads:
            hard = name == "hard break"
            ctx.log(
                f"  {lead.fault}: first alert {lead.alert or 'none'} at {lead.alert_ms} ms, "
                f"first deadline {lead.deadline_ms} ms"
            )
            target = None
            if lead.deadline_ms is not None and not lead.fault.startswith("fail"):
                target = Target("ratio", "<=", 1.0)
            section.rows.append(
                Row(
                    f"{name}: {lead.fault} — first alert ({lead.alert or 'none'}) after the fault started",
                    None if lead.alert_ms is None else float(lead.alert_ms),
                    "ms",
                    None if lead.deadline_ms is None else float(max(lead.deadline_ms, 1)),
                    target,
                    why="" if lead.alert_ms is not None else "no alert fired",
                )
            )
            if hard:
                section.rows.append(
                    Row(
                        "hard break at 6 orders/s, p99 2.5 s, 5-minute deadline: EdgeDegraded after the break",
                        None if lead.alert_ms is None else float(lead.alert_ms),
                        "ms",
                        target=Target("value", "<=", BREAK_TARGET_MS),
                    )
                )
                if lead.alert_ms is not None and lead.deadline_ms is not None:
                    section.notes.append(
                        f"Hard break: EdgeDegraded {lead.alert_ms / 1000:.1f} s after the break, "
                        f"{(lead.deadline_ms - lead.alert_ms) / 1000:.0f} s before the first order's deadline."
                    )
    section.notes.append(
        "Offline, in event time: the simulator's events (seed 5) fed in time order to the tracer; the detectors "
        "tick once per simulated second (as `ordertrail run` does on the wall clock), so alert times are exact to "
        "a second and do not depend on this machine's speed. Demo run: the shop and faults of `ordertrail demo` "
        "(8 orders/s, 150 s). A fault's first alert is the first alert naming its hop (EdgeDegraded, HopSilent, "
        "ConversionDrop or an incident's alert); `fail` faults have no deadline (a failure is reported at once), "
        "so their reference is the first failed hop and they carry no target."
    )
    return section
