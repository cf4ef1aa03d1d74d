"""Learned transit times of one edge (the ``after`` hop to a step), for the soft limit of steps
without an explicit ``stall_after`` (CONTRACT §2).

A ring of the most recent samples; the percentile is recomputed every ``refresh`` samples, so
recording is O(1) amortised and reading is O(1). The soft limit is ``percentile × factor``, never
below the floor; it is withheld until enough samples exist (no guessing on a cold edge).
"""

from __future__ import annotations

import math
from array import array

from tracer.journeys import StallLearning


class EdgeTransit:
    __slots__ = ("_every", "_learning", "_pos", "_ring", "_since", "count", "limit_ms", "percentile_ms")

    def __init__(self, learning: StallLearning, size: int = 512, refresh: int = 32) -> None:
        if size <= 0 or refresh <= 0:
            raise ValueError(f"size {size!r} and refresh {refresh!r} must be positive numbers of samples")
        self._learning = learning
        self._every = refresh
        self._ring = array("q", [0]) * size
        self._pos = 0
        self.count = 0
        self._since = refresh - 1  # the first refresh comes as soon as min_samples is reached
        self.percentile_ms: int | None = None
        self.limit_ms: int | None = None

    def record(self, transit_ms: int) -> None:
        ring = self._ring
        ring[self._pos] = transit_ms if transit_ms > 0 else 0
        self._pos = (self._pos + 1) % len(ring)
        self.count += 1
        self._since += 1
        if self._since >= self._every and self.count >= self._learning.min_samples:
            self._refresh()

    def _refresh(self) -> None:
        self._since = 0
        n = min(self.count, len(self._ring))
        window = sorted(self._ring[:n])
        rank = max(0, math.ceil(n * self._learning.percentile / 100.0) - 1)  # nearest rank
        self.percentile_ms = window[rank]
        self.limit_ms = max(self._learning.floor_ms, int(window[rank] * self._learning.factor))

    def recent(self) -> list[int]:
        n = min(self.count, len(self._ring))
        return list(self._ring[:n])
