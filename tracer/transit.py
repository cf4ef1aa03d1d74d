"""Learned transit times of one edge (the ``after`` hop to a step), for the soft limit of steps
without an explicit ``stall_after`` (CONTRACT §2).

A ring of the most recent samples, and the same samples kept sorted (a bisect and a list insert
per sample, in C: cheaper than sorting the ring at each refresh); the percentile is re-read every
``refresh`` samples, so reading is O(1). The soft limit is ``percentile × factor``, never
below the floor; it is withheld until enough samples exist (no guessing on a cold edge).

Every sample is also counted in fixed buckets (``BUCKETS_MS``, one bisect per sample), the
cumulative transit-time histogram the Prometheus metrics read at scrape time: the ring forgets,
the histogram does not. Compiled (``tracer.native``), the searches are loops mypyc turns into C
over native ints; interpreted, ``bisect`` does them.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from typing import Final

from mypy_extensions import i64

from tracer.journeys import StallLearning

COMPILED: Final = not __file__.endswith(".py")  # built by mypyc (tracer.native)

# Upper bounds (inclusive) of the histogram buckets, in ms: 10 ms to a day, 1-2-5 steps up to a
# minute then the deadlines people write (2m, 5m, 10m, 30m, 1h, 2h, 6h, 24h); +Inf is implied.
BUCKETS_MS: Final = (
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000,
    120_000, 300_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 21_600_000, 86_400_000,
)  # fmt: skip
_BOUNDS: Final = list(BUCKETS_MS)  # a list: compiled, indexing it needs no type check


class EdgeTransit:
    __slots__ = (
        "_every",
        "_hist",
        "_learning",
        "_min_samples",
        "_pos",
        "_ring",
        "_since",
        "_size",
        "_sorted",
        "count",
        "limit_ms",
        "percentile_ms",
        "sum_ms",
    )

    def __init__(self, learning: StallLearning, size: int = 512, refresh: int = 32) -> None:
        if size <= 0 or refresh <= 0:
            raise ValueError(f"size {size!r} and refresh {refresh!r} must be positive numbers of samples")
        self._learning = learning
        self._every = refresh
        # Lists, not arrays: compiled, reading and writing a list item is a native operation
        # where an array's goes through the generic item protocol (and boxes the int).
        self._ring: list[int] = [0] * size
        self._size = size
        self._min_samples = learning.min_samples
        self._sorted: list[int] = []  # the samples in the ring, in order
        self._pos = 0
        self.count = 0
        self._since = refresh - 1  # the first refresh comes as soon as min_samples is reached
        self.percentile_ms: int | None = None
        self.limit_ms: int | None = None
        self._hist: list[int] = [0] * (len(BUCKETS_MS) + 1)  # the last bucket is +Inf
        self.sum_ms = 0

    def record(self, transit_ms: int) -> None:
        if transit_ms < 0:
            transit_ms = 0
        ring = self._ring
        pos = self._pos
        oldest = ring[pos]
        ring[pos] = transit_ms
        window = self._sorted
        count = self.count
        if COMPILED:  # the searches as loops over native ints: no comparison goes through Python
            self._hist[_first_at_least(_BOUNDS, transit_ms)] += 1
            if count >= self._size:  # the ring was full: the oldest sample leaves the window
                window.pop(_first_at_least(window, oldest))
            window.insert(_first_at_least(window, transit_ms + 1), transit_ms)
        else:  # the same, interpreted: bisect's C loop is the faster there
            self._hist[bisect_left(BUCKETS_MS, transit_ms)] += 1
            if count >= self._size:
                del window[bisect_left(window, oldest)]
            insort(window, transit_ms)
        self.sum_ms += transit_ms
        pos += 1
        self._pos = pos if pos < self._size else 0
        self.count = count = count + 1
        since = self._since + 1
        self._since = since
        if since >= self._every and count >= self._min_samples:
            self._refresh()

    def _refresh(self) -> None:
        self._since = 0
        window = self._sorted
        n = len(window)
        rank = max(0, math.ceil(n * self._learning.percentile / 100.0) - 1)  # nearest rank
        self.percentile_ms = window[rank]
        self.limit_ms = max(self._learning.floor_ms, int(window[rank] * self._learning.factor))

    def recent(self) -> list[int]:
        n = min(self.count, len(self._ring))
        return list(self._ring[:n])

    def histogram(self) -> list[int]:
        """Samples ever recorded at or below each of ``BUCKETS_MS``, then in all (+Inf):
        cumulative, as Prometheus histograms are. ``sum_ms`` is their total."""
        out, total = [], 0
        for n in self._hist:
            total += n
            out.append(total)
        return out


def _first_at_least(values: list[int], x: int) -> i64:
    """``bisect_left(values, x)``, for a compiled module: mypyc makes this loop C over native
    ints, where ``bisect`` compares Python objects (tests/tracer/test_transit.py checks they agree)."""
    lo: i64 = 0
    hi: i64 = len(values)
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo
