"""The generic webhook sink: alerts as JSON to any URL, signed.

Body: ``{"version": "1", "sender": "ordertrail", "alerts": [Alert.to_wire(), ...]}``, sent when an
alert fires, changes severity or resolves (not re-sent while firing). With a secret, two headers
let the receiver check it came from us and is fresh: ``X-Ordertrail-Timestamp`` (epoch seconds)
and ``X-Ordertrail-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed by the
secret>``. Retries with exponential backoff on network errors, 429 and 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence

from detectors.alerts import Alert
from detectors.posting import Poster

SIGNATURE_HEADER = "X-Ordertrail-Signature"
TIMESTAMP_HEADER = "X-Ordertrail-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookSink:
    resends = False

    def __init__(
        self,
        url: str,
        *,
        secret: str = "",
        poster: Poster | None = None,
        now_s: Callable[[], float] = time.time,
        name: str = "webhook",
    ) -> None:
        self.name = name
        self.url = url
        self._secret = secret
        self._poster = poster or Poster(attempts=4)
        self._now_s = now_s

    def send(self, alerts: Sequence[Alert]) -> None:
        body = json.dumps({"version": "1", "sender": "ordertrail", "alerts": [a.to_wire() for a in alerts]}).encode()
        headers = {}
        if self._secret:
            ts = str(int(self._now_s()))
            headers = {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(self._secret, ts, body)}
        self._poster.post(self.url, body, headers)
