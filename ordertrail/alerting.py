"""Wiring of the detectors into a running pipeline: the sinks the configuration asks for, the
tracer and processor views the detectors read, and the ``Watch`` that ties them together."""

from __future__ import annotations

import threading
from typing import Protocol

from detectors import (
    AlertmanagerSink,
    AlertSink,
    Dispatcher,
    EdgeSettings,
    EdgeWatch,
    HealthSettings,
    IncidentBook,
    IncidentSettings,
    LogSink,
    PipelineHealth,
    TracerEdges,
    Watch,
    WatchSettings,
    WebhookSink,
)
from detectors.schedules import HopQuery, ScheduleWatch
from detectors.watch import AmountSource
from ordertrail.config import RunConfig
from tracer.clock import Clock
from tracer.processor import Processor
from tracer.waiting import WaitingTracer


class DetectorStore(AmountSource, HopQuery, Protocol):
    """What the detectors ask of the store: order amounts and scheduled hop counts."""


class ProcessorView:
    """``PipelineView`` over the processor's stats (plain reads of counters: no lock needed)."""

    def __init__(self, processor: Processor) -> None:
        self._p = processor

    def lag_ms(self) -> int:
        return self._p.stats.lag_ms

    def lag_records(self) -> int:
        return self._p.stats.lag_records

    def cycles(self) -> int:
        return self._p.stats.cycles

    def store_errors(self) -> int:
        return self._p.stats.store_errors

    def events(self) -> int:
        return self._p.tracer.stats.events

    def ready(self) -> bool:
        return self._p.stats.ready


def sinks_of(config: RunConfig) -> list[AlertSink]:
    """The log sink always; Alertmanager and the webhook when configured."""
    sinks: list[AlertSink] = [LogSink()]
    if config.alertmanager:
        sinks.append(AlertmanagerSink(config.alertmanager, expire_ms=4 * config.alert_resend_ms))
    if config.webhook:
        sinks.append(WebhookSink(config.webhook, secret=config.webhook_secret))
    return sinks


def build_watch(
    config: RunConfig,
    processor: Processor,
    tracer: WaitingTracer,
    lock: threading.Lock,
    wall: Clock,
    *,
    store: DetectorStore | None = None,
    sinks: list[AlertSink] | None = None,
    role: str = "run",
) -> Watch:
    """The in-process detectors of ``ordertrail run``: incidents, edges, pipeline health and, with
    a store to ask, the value of incident orders and scheduled expectations."""
    incidents = IncidentBook(IncidentSettings(window_ms=config.incident_window_ms), lookup_url=config.lookup_url)
    edges: EdgeWatch | None = EdgeWatch(TracerEdges(tracer, lock), EdgeSettings())
    health: PipelineHealth | None = PipelineHealth(ProcessorView(processor), wall, HealthSettings())
    schedules = ScheduleWatch(tracer.journeys.schedules, store) if store is not None else None
    if role == "detectors":
        # Fed by the findings topic (every finding of an incident, whichever tracer raised it):
        # incidents and their alerts. Edges, pipeline health and schedules need a tracer's state
        # and clock; the tracer instances judge those (identical label sets: Alertmanager dedupes).
        edges = health = schedules = None
    return Watch(
        incidents,
        Dispatcher(sinks if sinks is not None else sinks_of(config)),
        wall,
        edges=edges,
        health=health,
        amounts=store,
        schedules=schedules,
        settings=WatchSettings(
            resend_ms=config.alert_resend_ms,
            lookup_url=config.lookup_url,
            dashboard_url=config.dashboard_url,
            incident_alerts=role != "tracer",
        ),
    )
