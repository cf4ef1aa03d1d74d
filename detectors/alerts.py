"""Alerts: what the detectors tell people, and the sink role that delivers them (CONTRACT §7).

An ``Alert`` has a stable identity, its label set (``alertname``, ``journey``, ``hop``,
``severity``), so Alertmanager deduplicates what several ordertrail instances raise; one incident
or one degraded edge is one identity. ``firing`` says whether it is on; a resolved alert carries
``ends_at``. Times are epoch milliseconds of the wall clock (Alertmanager's time), not event time.

A sink is one verb, ``send(alerts)``; it may raise (the dispatcher counts the failure). ``resends``
says whether the sink wants every firing alert again at each refresh (Alertmanager expires alerts
it stops hearing about) or only the changes (a webhook, a log).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from tracer.model import MISSING, STALLED, UNCONFIRMED, format_ts

EDGE_DEGRADED: Final = "EdgeDegraded"
HOP_SILENT: Final = "HopSilent"
CONVERSION_DROP: Final = "ConversionDrop"
PIPELINE_DEGRADED: Final = "PipelineDegraded"
SCHEDULE_MISSED: Final = "ScheduleMissed"
ALERT_OF_KIND: Final = {
    MISSING: "OrderMissing",
    UNCONFIRMED: "ConfirmationMissing",
    STALLED: "OrderStalled",
    "failed": "HopFailing",
}
INFO: Final = "info"
WARNING: Final = "warning"
CRITICAL: Final = "critical"
SEVERITIES: Final = (INFO, WARNING, CRITICAL)


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    journey: str
    hop: str
    severity: str
    summary: str
    description: str
    starts_at: int
    firing: bool = True
    ends_at: int | None = None
    links: dict[str, str] = field(default_factory=dict)  # lookup, dashboard
    incident: str = ""
    schedule: str = ""  # a scheduled expectation's name: one more label, for ScheduleMissed

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.name, self.journey, self.hop, self.severity, self.schedule)

    def labels(self) -> dict[str, str]:
        out = {"alertname": self.name, "journey": self.journey, "hop": self.hop, "severity": self.severity}
        if self.schedule:
            out["schedule"] = self.schedule
        return out

    def annotations(self) -> dict[str, str]:
        out = {"summary": self.summary, "description": self.description, **self.links}
        if self.incident:
            out["incident"] = self.incident
        return out

    def to_wire(self) -> dict[str, object]:
        """JSON for webhooks and logs: the labels, annotations and state in one object."""
        return {
            "status": "firing" if self.firing else "resolved",
            "labels": self.labels(),
            "annotations": self.annotations(),
            "startsAt": format_ts(self.starts_at),
            "endsAt": None if self.ends_at is None else format_ts(self.ends_at),
        }


class AlertSink(Protocol):
    """Delivers alerts somewhere; raises when it could not."""

    name: str
    resends: bool

    def send(self, alerts: Sequence[Alert]) -> None: ...


class MemorySink:
    """A sink that keeps what it was sent, for tests (``fail`` makes the next sends raise)."""

    def __init__(self, name: str = "memory", *, resends: bool = False) -> None:
        self.name = name
        self.resends = resends
        self.sent: list[Alert] = []
        self.fail = 0

    def send(self, alerts: Sequence[Alert]) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise OSError("memory sink: injected failure")
        self.sent.extend(alerts)
