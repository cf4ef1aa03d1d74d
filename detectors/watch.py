"""The detector engine: findings and tracer readings in, alerts out.

``Watch`` composes the parts and owns the alert lifecycle:

* ``on_findings`` — the processor's ``FindingListener`` (or a consumer of the
  ``ordertrail.findings`` topic): groups findings into incidents. Cheap; never blocks on a sink.
* ``tick`` — once a second on its own thread: pipeline health, then the edge detectors, then
  incidents (close those whose edge flows again, price their orders), then the set of alerts that
  should fire now, compared with what fires: new ones are sent, changed severities replace the old
  identity (resolved) with the new one, gone ones are resolved with ``endsAt``; every ``resend_ms``
  the firing set goes again to sinks that want it (Alertmanager).

It runs in-process with the tracer (``edges`` and ``health`` read the live tracer) or fed by a
findings stream alone (``edges=None, health=None``: incidents and their alerts only). Inhibition:
``PipelineDegraded`` holds back edge and order-level alerts (``PipelineHealth.inhibits``); an
``EdgeDegraded`` or ``HopSilent`` on an edge holds back ``OrderStalled`` there (the edge alert
already says orders are slow); incidents opened while ordertrail was degraded page only once a
finding joins them while it is healthy. Scheduled expectations (``detectors.schedules``) are judged
on the tracer's clock every ``schedule_check_ms``; each open miss is a ``ScheduleMissed`` alert
with a ``schedule`` label.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from detectors.alerts import (
    ALERT_OF_KIND,
    CONVERSION_DROP,
    EDGE_DEGRADED,
    HOP_SILENT,
    PIPELINE_DEGRADED,
    SCHEDULE_MISSED,
    WARNING,
    Alert,
)
from detectors.dispatch import Dispatcher
from detectors.edges import EdgeState, EdgeWatch
from detectors.health import PipelineHealth
from detectors.incidents import Incident, IncidentBook
from detectors.schedules import ScheduleWatch, WindowResult
from tracer.clock import Clock
from tracer.model import FAILED, STALLED, Finding, format_ts
from tracer.times import format_duration

log = logging.getLogger("ordertrail.detectors")

INHIBITION_NOTE = (
    "While ordertrail itself is degraded, order-level and edge alerts (OrderMissing, ConfirmationMissing, "
    "EdgeDegraded, HopSilent) are held back: orders look late when the pipeline is behind or blind, so those "
    "alerts would describe ordertrail, not the business. They fire once findings arrive with the pipeline healthy."
)


class AmountSource(Protocol):
    def amounts(self, order_ids: Sequence[str], attr: str = "amount") -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class WatchSettings:
    tick_ms: int = 1_000
    resend_ms: int = 30_000
    stalled_min_orders: int = 5  # an OrderStalled incident pages from this many orders
    failed_min_orders: int = 3  # a HopFailing incident too: a failure now and then is retried, not a problem
    schedule_check_ms: int = 10_000  # how often scheduled expectations are judged (store queries)
    # Order-level incident alerts. Off in a Kafka tracer instance: it sees only the orders of its
    # partitions, so the detectors role, reading every finding of an incident, alerts instead.
    incident_alerts: bool = True
    lookup_url: str = ""
    dashboard_url: str = ""


@dataclass(slots=True)
class WatchStats:
    ticks: int = 0
    tick_errors: int = 0
    fired: int = 0
    resolved: int = 0


class Watch:
    def __init__(
        self,
        incidents: IncidentBook,
        dispatcher: Dispatcher,
        wall: Clock,
        *,
        edges: EdgeWatch | None = None,
        health: PipelineHealth | None = None,
        amounts: AmountSource | None = None,
        schedules: ScheduleWatch | None = None,
        settings: WatchSettings | None = None,
    ) -> None:
        self.incidents = incidents
        self.dispatcher = dispatcher
        self.edges = edges
        self.health = health
        self.settings = settings or WatchSettings()
        self.stats = WatchStats()
        self._wall = wall
        self._amounts = amounts
        self.schedules = schedules if schedules else None
        self._last_schedule_check = -(2**62)
        self._firing: dict[tuple[str, str, str, str], Alert] = {}  # (alertname, journey, hop, schedule) -> alert
        self._last_refresh = -(2**62)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if health is not None:
            incidents.suspect = lambda: health.inhibits()

    # -- input ----------------------------------------------------------------------------------

    def on_findings(self, findings: list[Finding]) -> None:
        self.incidents.on_findings(findings)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.dispatcher.start()
        self._thread = threading.Thread(target=self._run, name="detectors", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.dispatcher.stop(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.tick_ms / 1000):
            try:
                self.tick()
            except Exception:  # the detectors must keep going; the tracer is not affected
                self.stats.tick_errors += 1
                log.exception("detector tick failed")

    # -- the tick -------------------------------------------------------------------------------

    def tick(self) -> list[Alert]:
        """Evaluate every detector and publish what changed; returns the alerts firing now."""
        self._price()  # store queries: outside the lock, so a scrape never waits for them
        self._check_schedules()
        with self._lock:
            self.stats.ticks += 1
            now = self._wall.now_ms()
            if self.edges is not None:
                self.edges.tick()
                self.incidents.close_flowing(self._event_now(now), self.edges.flowing_since)
            if self.health is not None:
                broken = (
                    [] if self.edges is None else [st.hop for st in self.edges.states.values() if st.telemetry_broken]
                )
                self.health.tick(broken)
            desired = {(a.name, a.journey, a.hop, a.schedule): a for a in self._desired(now)}
            changes: list[Alert] = []
            for ident, was in list(self._firing.items()):
                new = desired.get(ident)
                if new is None or new.severity != was.severity:
                    changes.append(_resolved(was, now))
                    del self._firing[ident]
                    self.stats.resolved += 1
            for ident, alert in desired.items():
                prev = self._firing.get(ident)
                if prev is None:
                    self._firing[ident] = alert
                    changes.append(alert)
                    self.stats.fired += 1
                else:
                    self._firing[ident] = _keep_start(alert, prev)
            refresh = now - self._last_refresh >= self.settings.resend_ms
            if refresh:
                self._last_refresh = now
            if changes or refresh:
                self.dispatcher.publish(changes, list(self._firing.values()) if refresh else ())
            return list(self._firing.values())

    def firing(self) -> list[Alert]:
        with self._lock:
            return list(self._firing.values())

    def _event_now(self, wall_now: int) -> int:
        t = self.edges.now_ms() if self.edges is not None else None
        return wall_now if t is None else t

    def _check_schedules(self) -> None:
        """Judge scheduled expectations on the tracer's clock (never the wall: a window is not
        missed while ordertrail is behind), at most every ``schedule_check_ms``. In-process only."""
        if self.schedules is None or self.edges is None:
            return
        now = self._wall.now_ms()
        if now - self._last_schedule_check < self.settings.schedule_check_ms:
            return
        t = self.edges.now_ms()
        if t is None:
            return  # the tracer has no time yet
        self._last_schedule_check = now
        try:
            self.schedules.check(t)
        except Exception as exc:  # a store error: judged again next time
            log.warning("could not judge scheduled expectations: %s", exc)

    def _price(self) -> None:
        if self._amounts is None:
            return
        pending = self.incidents.pending_amounts()
        if not pending:
            return
        try:
            found = self._amounts.amounts(pending)
        except Exception as exc:  # the value total is a nicety; never fail the tick on it
            log.debug("could not read order amounts: %s", exc)
            return
        self.incidents.set_amounts(pending, found)

    def _desired(self, now: int) -> list[Alert]:
        out: list[Alert] = []
        health = self.health
        if health is not None and health.degraded:
            out.append(self._pipeline_alert(health, now))
        inhibited = health is not None and health.inhibits(now)
        edge_alerted: set[tuple[str, str]] = set()
        if self.edges is not None and not inhibited:
            for st in self.edges.states.values():
                alert = self._edge_alert(st, now)
                if alert is not None:
                    out.append(alert)
                    edge_alerted.add((st.journey, st.hop))
        if inhibited:
            return out
        if self.schedules is not None:
            out.extend(self._schedule_alert(miss, now) for miss in self.schedules.open_misses())
        if not self.settings.incident_alerts:
            return out
        event_now = self._event_now(now)
        for inc in self.incidents.open_incidents():
            if inc.pipeline_suspect:
                continue
            if inc.kind == STALLED and (
                len(inc.open_orders) < self.settings.stalled_min_orders or (inc.journey, inc.hop) in edge_alerted
            ):
                continue
            if inc.kind == FAILED and len(inc.open_orders) < self.settings.failed_min_orders:
                continue
            out.append(self._incident_alert(inc, now, event_now))
        return out

    # -- wording --------------------------------------------------------------------------------

    def _links(self, example: str = "") -> dict[str, str]:
        base = self.settings.lookup_url
        return {
            "lookup": f"{base}/?q={example}" if example else f"{base}/v1/incidents",
            "dashboard": self.settings.dashboard_url or f"{base}/v1/incidents",
        }

    def _pipeline_alert(self, health: PipelineHealth, now: int) -> Alert:
        reasons = "; ".join(health.reasons) or "see the pipeline metrics"
        return Alert(
            PIPELINE_DEGRADED,
            "",
            "",
            WARNING,  # fixed: a changing severity would be a new alert identity mid-episode
            f"ordertrail itself is degraded: {health.reasons[0] if health.reasons else 'see metrics'}",
            f"{reasons}. {INHIBITION_NOTE}",
            health.since_ms,
            links=self._links(),
        )

    def _edge_alert(self, st: EdgeState, now: int) -> Alert | None:
        p99 = st.baseline_p99
        usual = f"usually at most {format_duration(p99)} (p99)" if p99 is not None else "not learned yet"
        edge = f"{st.after} → {st.hop}"
        r = st.last
        waiting = r.waiting if r is not None else 0
        if st.silent:
            quiet = (r.now_ms - st.last_report_ms) // 1000 * 1000 if r is not None else 0
            return Alert(
                HOP_SILENT,
                st.journey,
                st.hop,
                WARNING,
                f"{st.hop} has not been reported for {format_duration(quiet)} while orders arrive from {st.after}",
                f"Journey {st.journey}: no {st.hop} event for {format_duration(quiet)} (usually {st.rate:.2f}/s) while "
                f"orders still reach {st.after}; {waiting} orders wait at {edge}. The service sending {st.hop} is "
                f"down or stuck.",
                now,
                links=self._links(),
            )
        if st.degraded:
            return Alert(
                EDGE_DEGRADED,
                st.journey,
                st.hop,
                WARNING,
                f"{st.stuck} orders stuck at {edge} ({st.journey}), still inside their deadline",
                f"Journey {st.journey}: {st.stuck} orders entered {edge} more than {format_duration(st.threshold_ms)} "
                f"ago and {st.hop} has not happened; this edge takes {usual}. {waiting} orders wait there in all. "
                f"Their deadline ({format_duration(st.within_ms)}) has not passed yet: acting now keeps them from "
                f"going missing.",
                now,
                links=self._links(),
            )
        if st.conversion_low and st.conversion is not None:
            return Alert(
                CONVERSION_DROP,
                st.journey,
                st.hop,
                WARNING,
                f"fewer orders get from {st.after} to {st.hop} ({st.journey})",
                f"Journey {st.journey}: only {st.conversion:.0%} of the orders that reached {st.after} recently went "
                f"on to {st.hop}, well below usual.",
                now,
                links=self._links(),
            )
        return None

    def _schedule_alert(self, miss: WindowResult, now: int) -> Alert:
        return Alert(
            SCHEDULE_MISSED,
            "",
            miss.hop,
            WARNING,
            f"scheduled {miss.schedule} did not happen as due",
            miss.explanation(),
            now,
            links=self._links(),
            schedule=miss.schedule,
        )

    def _incident_alert(self, inc: Incident, now: int, event_now: int) -> Alert:
        name = ALERT_OF_KIND.get(inc.kind, "OrderProblem")
        n, customers = len(inc.open_orders), len(inc.customers)
        value = f", {inc.value:,.2f} in order value" if inc.priced else ""
        example = next(iter(inc.open_orders), "")
        what = {
            "missing": f"{inc.hop} did not happen in time",
            "unconfirmed": f"the confirmation {inc.hop} was not sent in time",
            "stalled": f"{inc.hop} is taking unusually long",
            "failed": f"{inc.hop} failed",
        }.get(inc.kind, inc.kind)
        return Alert(
            name,
            inc.journey,
            inc.hop,
            self.incidents.severity(inc, event_now),
            f"{n} {inc.journey} orders: {what} (after {inc.after})",
            f"Incident {inc.id} since {format_ts(inc.opened_at)}: {n} orders of {customers} customers{value} are "
            f"affected now ({inc.affected} in all): {what}. Example order: {example}.",
            now,
            links=self._links(example),
            incident=inc.id,
        )

    def incident_views(self) -> list[dict[str, Any]]:
        return self.incidents.views(self._event_now(self._wall.now_ms()))

    def incident_of(self, order_id: str) -> dict[str, Any] | None:
        return self.incidents.of_order(order_id, self._event_now(self._wall.now_ms()))


def _resolved(alert: Alert, now: int) -> Alert:
    return dataclasses.replace(alert, firing=False, ends_at=now)


def _keep_start(alert: Alert, old: Alert) -> Alert:
    """The alert as it reads now, with the start it fired at."""
    return alert if alert.starts_at == old.starts_at else dataclasses.replace(alert, starts_at=old.starts_at)
