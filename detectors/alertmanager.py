"""The Alertmanager sink: ``POST /api/v2/alerts`` (CONTRACT §7).

Alertmanager keeps an alert while it hears about it and resolves it at ``endsAt``: a firing alert
is sent with ``endsAt`` a few refresh intervals ahead (as Prometheus does), so if ordertrail dies
its alerts expire by themselves; it is re-sent at every refresh while it fires, and sent once more
with ``endsAt`` = the time it resolved. Label sets are stable (``Alert.labels``), so several
ordertrail instances raising the same problem make one alert. Retries a failed post a few times
with backoff, then raises (the dispatcher counts it; the next refresh sends again).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Sequence

from detectors.alerts import Alert
from tracer.model import format_ts


class AlertmanagerSink:
    resends = True

    def __init__(
        self,
        url: str,
        *,
        expire_ms: int = 120_000,
        timeout_s: float = 5.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        sleep: Callable[[float], None] = time.sleep,
        name: str = "alertmanager",
    ) -> None:
        self.name = name
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self._expire_ms = expire_ms
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._now_ms = now_ms
        self._sleep = sleep

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
        post_with_retries(self.url, body, {}, self._timeout_s, self._attempts, self._backoff_s, self._sleep)


def post_with_retries(
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    attempts: int,
    backoff_s: float,
    sleep: Callable[[float], None],
) -> None:
    """POST JSON; retry on errors and 5xx with exponential backoff; raise the last error."""
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        req = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                resp.read()
            return
        except urllib.error.HTTPError as exc:
            last = OSError(f"{url} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}")
            if exc.code < 500 and exc.code != 429:
                break  # the request is wrong; sending it again will not help
        except OSError as exc:
            last = OSError(f"{url}: {exc}")
    assert last is not None
    raise last
