"""Detectors: turn findings and tracer readings into incidents and alerts.

``Watch`` runs them (in-process with the tracer, or fed by a findings stream); ``IncidentBook``
groups findings; ``EdgeWatch`` (EdgeDegraded, HopSilent, ConversionDrop) and ``PipelineHealth``
(PipelineDegraded) read the tracer; ``Dispatcher`` delivers alerts to the sinks
(``AlertmanagerSink``, ``WebhookSink``, ``LogSink``) off the caller's thread.
"""

from detectors.alertmanager import AlertmanagerSink
from detectors.alerts import Alert, AlertSink, MemorySink
from detectors.dispatch import Dispatcher
from detectors.edges import EdgeSettings, EdgeView, EdgeWatch, Reading, TracerEdges
from detectors.health import HealthSettings, PipelineHealth, PipelineView
from detectors.incidents import Incident, IncidentBook, IncidentSettings
from detectors.logsink import LogSink
from detectors.metrics import DetectorCollector
from detectors.posting import Poster
from detectors.watch import Watch, WatchSettings
from detectors.webhook import WebhookSink

__all__ = [
    "Alert",
    "AlertSink",
    "AlertmanagerSink",
    "DetectorCollector",
    "Dispatcher",
    "EdgeSettings",
    "EdgeView",
    "EdgeWatch",
    "HealthSettings",
    "Incident",
    "IncidentBook",
    "IncidentSettings",
    "LogSink",
    "MemorySink",
    "PipelineHealth",
    "PipelineView",
    "Poster",
    "Reading",
    "TracerEdges",
    "Watch",
    "WatchSettings",
    "WebhookSink",
]
