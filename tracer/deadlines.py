"""The deadline index: which orders to look at when the clock reaches a time.

A bucketed timing index: deadlines are rounded *up* to a bucket of ``width_ms`` and a bucket is
a list of order ids. Only the first deadline of a bucket pushes onto the heap of bucket keys, so
arming a deadline is an append in the common case, not a heap push per event. Entries are never
removed: the caller keeps, per order, the bucket it is armed in and ignores stale entries.
A bucket fires once the clock is strictly past every deadline in it (``key * width > due``).
"""

from __future__ import annotations

import heapq


class DeadlineIndex:
    __slots__ = ("_buckets", "_heap", "width_ms")

    def __init__(self, width_ms: int = 100) -> None:
        if width_ms <= 0:
            raise ValueError(f"width_ms: {width_ms!r} must be a positive number of milliseconds")
        self.width_ms = width_ms
        self._buckets: dict[int, list[str]] = {}
        self._heap: list[int] = []

    def key_for(self, due_ms: int) -> int:
        """The bucket that fires once the clock is strictly past ``due_ms``."""
        return due_ms // self.width_ms + 1

    def arm(self, key: int, order_id: str) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = [order_id]
            heapq.heappush(self._heap, key)
        else:
            bucket.append(order_id)

    def pop_due(self, now_ms: int) -> tuple[int, list[str]] | None:
        """The earliest bucket whose time has come, removed from the index; None when none has."""
        heap = self._heap
        if heap and heap[0] * self.width_ms <= now_ms:
            key = heapq.heappop(heap)
            return key, self._buckets.pop(key)
        return None

    def next_key(self) -> int | None:
        return self._heap[0] if self._heap else None

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets.values())

    def clear(self) -> None:
        self._buckets.clear()
        self._heap.clear()
