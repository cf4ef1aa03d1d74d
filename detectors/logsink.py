"""The log sink: each alert that fires, changes or resolves as one structured log line (structlog
over the standard library's ``ordertrail.alerts`` logger, rendered as JSON), so log pipelines can
pick alerts up without another integration."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import structlog

from detectors.alerts import Alert


class LogSink:
    name = "log"
    resends = False

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log: Any = structlog.wrap_logger(
            logger or logging.getLogger("ordertrail.alerts"),
            processors=[structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.JSONRenderer()],
            wrapper_class=structlog.stdlib.BoundLogger,
        )

    def send(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            level = "warning" if a.firing else "info"
            getattr(self._log, level)(
                "alert",
                status="firing" if a.firing else "resolved",
                **a.labels(),
                summary=a.summary,
                incident=a.incident or None,
            )
