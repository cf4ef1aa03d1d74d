"""A value read from the store at most every ``max_age_ms``, refreshed off the caller's path.

The lookup of one order also tells how many orders wait at the same step and which incident it
belongs to. Both are answers about every open order (a scan of the store), the same for every
lookup within a few seconds. ``Refreshed.get()`` returns the last answer at once; when it is
older than ``max_age_ms`` it starts one background refresh (never two at a time) and still
returns the old answer, so no lookup waits for a scan except the very first one. A refresh that
fails keeps the old answer and is logged; the next ``get`` tries again.

Stdlib only; the clock and the way a refresh is started are injected (tests run it inline).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from tracer.clock import Clock

log = logging.getLogger("ordertrail.refresh")
T = TypeVar("T")


def _in_thread(fn: Callable[[], None]) -> None:
    threading.Thread(target=fn, name="lookup-refresh", daemon=True).start()


class Refreshed(Generic[T]):
    """``load()`` cached for ``max_age_ms``, refreshed in the background once stale."""

    def __init__(
        self,
        load: Callable[[], T],
        clock: Clock,
        max_age_ms: int,
        *,
        spawn: Callable[[Callable[[], None]], None] = _in_thread,
    ) -> None:
        self._load = load
        self._clock = clock
        self._max_age_ms = max_age_ms
        self._spawn = spawn
        self._lock = threading.Lock()
        self._value: tuple[int, T] | None = None  # (loaded at, value)
        self._refreshing = False

    def get(self) -> T:
        """The latest answer; the first call loads it (errors propagate), later calls never wait."""
        current = self._value
        if current is None:
            return self._refresh_now()
        if self._clock.now_ms() - current[0] >= self._max_age_ms:
            with self._lock:
                start = not self._refreshing
                self._refreshing = True
            if start:
                self._spawn(self._refresh_quietly)
        return current[1]

    def _refresh_now(self) -> T:
        loaded_at = self._clock.now_ms()
        value = self._load()
        self._value = (loaded_at, value)
        return value

    def _refresh_quietly(self) -> None:
        try:
            self._refresh_now()
        except Exception:  # the old answer stays; a lookup must not fail for a refresh
            log.exception("refreshing a cached lookup answer failed; keeping the previous one")
        finally:
            with self._lock:
                self._refreshing = False
