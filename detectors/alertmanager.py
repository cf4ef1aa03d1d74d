"""The Alertmanager sink: ``POST /api/v2/alerts`` (CONTRACT §7).

Alertmanager keeps an alert while it hears about it and resolves it at ``endsAt``: a firing alert
is sent with ``endsAt`` a few refresh intervals ahead (as Prometheus does), so if ordertrail dies
its alerts expire by themselves; it is re-sent at every refresh while it fires, and sent once more
with ``endsAt`` = the time it resolved. Label sets are stable (``Alert.labels``), so several
ordertrail instances raising the same problem make one alert. A failed post is retried
(``detectors.posting``), then raised: the dispatcher counts it and the next refresh sends again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from detectors.alerts import Alert
from detectors.posting import Poster
from tracer.model import format_ts


class AlertmanagerSink:
    resends = True

    def __init__(
        self,
        url: str,
        *,
        expire_ms: int = 120_000,
        poster: Poster | None = None,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        name: str = "alertmanager",
    ) -> None:
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self._expire_ms = expire_ms
        self._poster = poster or Poster()
        self._now_ms = now_ms

    def payload(self, alerts: Sequence[Alert]) -> list[dict[str, object]]:
        now = self._now_ms()
        out = []
        for a in alerts:
            ends = a.ends_at if not a.firing and a.ends_at is not None else now + self._expire_ms
            item: dict[str, object] = {
                "labels": a.labels(),
                "annotations": a.annotations(),
                "startsAt": format_ts(a.starts_at),
                "endsAt": format_ts(ends),
            }
            if "lookup" in a.links:
                item["generatorURL"] = a.links["lookup"]
            out.append(item)
        return out

    def send(self, alerts: Sequence[Alert]) -> None:
        body = json.dumps(self.payload(alerts)).encode()
        self._poster.post(self.url, body)
