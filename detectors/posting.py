"""Posting JSON over HTTP with retries: what the Alertmanager and webhook sinks share.

Network errors, 429 and 5xx are retried with exponential backoff (``backoff_s``, then doubling);
other 4xx are not (the request is wrong, sending it again will not help). The last error is
raised, naming the URL and the answer. Standard library only (``urllib``): the sinks run on their
own threads, so a blocking client is the simple, right tool.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Poster:
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep)

    def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        last: Exception | None = None
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            req = urllib.request.Request(
                url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
                return
            except urllib.error.HTTPError as exc:
                last = OSError(f"{url} answered {exc.code}: {exc.read()[:200].decode(errors='replace')}")
                if exc.code < 500 and exc.code != 429:
                    break
            except OSError as exc:
                last = OSError(f"{url}: {exc}")
        assert last is not None
        raise last
