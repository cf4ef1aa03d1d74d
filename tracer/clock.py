"""The clock that fires deadlines in a live runner (ARCHITECTURE "Time").

Event time alone stalls when a broken hop sends nothing; wall-clock time alone accuses hops while
ordertrail itself is behind. So each partition has a time of its own:

* the latest event time read from it, always;
* the wall clock (less a small allowance for events still in flight) only while that partition
  is caught up — its consumer has read to the end of the log — and the runner has been up for a
  warm-up period (producers that buffered while we were down are still catching up).

The engine's time is the minimum over the owned partitions (a low watermark), so a partition read
slower than the others holds the clock back instead of making its orders look late. A partition
that is behind and has not yet yielded an event holds the clock entirely (we cannot know its time).
The result never goes backwards. ``lag_ms`` says how far behind wall time the slowest partition is,
for the ``PipelineDegraded`` signal.

The wall clock is injected (``Clock`` protocol); tests use ``ManualClock``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock tests move by hand."""

    def __init__(self, start_ms: int = 0) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        self.ms += ms


@dataclass(slots=True)
class _Partition:
    latest_event_ms: int | None = None
    caught_up: bool = False


class PartitionClock:
    """Per-partition event time plus wall time while caught up; the engine reads ``now()``."""

    def __init__(self, wall: Clock, *, in_flight_ms: int = 250, warmup_ms: int = 5_000) -> None:
        if in_flight_ms < 0 or warmup_ms < 0:
            raise ValueError("in_flight_ms and warmup_ms must be >= 0")
        self._wall = wall
        self._in_flight_ms = in_flight_ms
        self._warm_at = wall.now_ms() + warmup_ms
        self._parts: dict[int, _Partition] = {}
        self._last: int | None = None

    def assign(self, partitions: list[int] | set[int] | range) -> None:
        for p in partitions:
            self._parts.setdefault(p, _Partition())

    def revoke(self, partitions: list[int] | set[int] | range) -> None:
        for p in partitions:
            self._parts.pop(p, None)

    def restart(self, partitions: list[int] | set[int] | range) -> None:
        """Own exactly ``partitions``, none of them read yet, and forget the time reached (a
        rebuild after a rebalance: see ``tracer.ownership``). The warm-up keeps its start."""
        self._parts = {p: _Partition() for p in partitions}
        self._last = None

    def observe(self, partition: int, event_ms: int) -> None:
        """An event of ``partition`` with event time ``event_ms`` has been read."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        if part.latest_event_ms is None or event_ms > part.latest_event_ms:
            part.latest_event_ms = event_ms

    def set_caught_up(self, partition: int, caught_up: bool) -> None:
        """Whether the consumer has read ``partition`` to its end (no lag)."""
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition()
        part.caught_up = caught_up

    def now(self) -> int | None:
        """The engine's time, or None while it cannot be known yet."""
        if not self._parts:
            return self._last
        wall = self._wall.now_ms()
        warm = wall >= self._warm_at
        low: int | None = None
        for part in self._parts.values():
            t = part.latest_event_ms
            if part.caught_up and warm:
                w = wall - self._in_flight_ms
                t = w if t is None or w > t else t
            if t is None:
                return self._last  # a partition behind with no event read yet holds the clock
            if low is None or t < low:
                low = t
        if low is not None and (self._last is None or low > self._last):
            self._last = low
        return self._last

    def lag_ms(self) -> int:
        """How far the engine's time trails the wall clock (0 when caught up everywhere)."""
        now = self.now()
        if now is None:
            return 0
        return max(0, self._wall.now_ms() - self._in_flight_ms - now)

    def behind(self) -> list[int]:
        return sorted(p for p, part in self._parts.items() if not part.caught_up)
