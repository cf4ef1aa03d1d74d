"""The deadline index: which orders to look at when the clock passes a time.

``arm(due_ms, order_id)`` asks for ``order_id`` once the clock is strictly past ``due_ms``;
``pop_due(now_ms)`` hands over, earliest first, the orders whose time has come. Exact to the
millisecond, without a heap push per deadline: deadlines wait in coarse windows of ``width_ms``
(an append to a list; only the first deadline of a window pushes onto the heap of windows). Once
the clock enters a window its deadlines move to per-millisecond buckets, at most ``width_ms`` of
them, which fire exactly. Entries are never removed: the caller keeps, per order, the deadline it
is armed for and ignores stale entries.

This module imports only the standard library.
"""

from __future__ import annotations

import heapq
from array import array
from typing import Final

_NEVER: Final = 2**63 - 1
# Final: compiled (tracer.native), a C static instead of a module-attribute lookup per call.
_PUSH: Final = heapq.heappush
_POP: Final = heapq.heappop


class DeadlineIndex:
    __slots__ = ("_fine", "_fine_heap", "_now", "_windows", "_windows_heap", "earliest", "width_ms")

    def __init__(self, width_ms: int = 100) -> None:
        if width_ms <= 0:
            raise ValueError(f"width_ms: {width_ms!r} must be a positive number of milliseconds")
        self.width_ms = width_ms
        self._windows: dict[int, tuple[list[str], array[int]]] = {}  # window -> order ids, their dues
        self._windows_heap: list[int] = []
        self._now = -(2**63)  # the latest time asked about: windows that began before it are open
        self._fine: dict[int, list[str]] = {}  # due ms -> order ids
        self._fine_heap: list[int] = []
        # No deadline armed is before this (a lower bound): a clock not past it has nothing to
        # pop, and the caller may skip ``pop_due`` (the clock's move then waits for the next call).
        self.earliest = _NEVER

    def arm(self, due_ms: int, order_id: str) -> None:
        if due_ms < self.earliest:
            self.earliest = due_ms
        window = due_ms // self.width_ms
        if window * self.width_ms < self._now:  # the clock is inside (or past) this window
            self._arm_fine(due_ms, order_id)
            return
        entries = self._windows.get(window)
        if entries is None:
            self._windows[window] = ([order_id], array("q", (due_ms,)))
            _PUSH(self._windows_heap, window)
        else:
            entries[0].append(order_id)
            entries[1].append(due_ms)

    def _arm_fine(self, due_ms: int, order_id: str) -> None:
        bucket = self._fine.get(due_ms)
        if bucket is None:
            self._fine[due_ms] = [order_id]
            _PUSH(self._fine_heap, due_ms)
        else:
            bucket.append(order_id)

    def pop_due(self, now_ms: int) -> list[tuple[int, list[str]]]:
        """Every deadline strictly before ``now_ms`` with its orders, earliest first, removed from
        the index (empty when none has passed). Deadlines armed from now on are not before
        ``now_ms`` (the caller arms what is not yet due), so one call per clock move is enough."""
        if now_ms > self._now:
            self._now = now_ms
        windows = self._windows_heap
        if windows and windows[0] * self.width_ms < now_ms:
            self._open_windows(now_ms)
        fine = self._fine_heap
        if not fine or fine[0] >= now_ms:
            self._bound()
            return []
        out = []
        buckets = self._fine
        while fine and fine[0] < now_ms:
            due = _POP(fine)
            out.append((due, buckets.pop(due)))
        self._bound()
        return out

    def _bound(self) -> None:
        fine = self._fine_heap
        windows = self._windows_heap
        earliest = fine[0] if fine else _NEVER
        if windows and windows[0] * self.width_ms < earliest:
            earliest = windows[0] * self.width_ms
        self.earliest = earliest

    def _open_windows(self, now_ms: int) -> None:
        """Move the deadlines of every window the clock has entered to the exact buckets."""
        windows = self._windows_heap
        width = self.width_ms
        while windows and windows[0] * width < now_ms:
            order_ids, dues = self._windows.pop(_POP(windows))
            for k, order_id in enumerate(order_ids):  # compiled, a C loop (zip(strict=) is not)
                self._arm_fine(dues[k], order_id)

    def next_due(self) -> int | None:
        """A lower bound of the earliest deadline armed (exact once its window is entered)."""
        candidates = []
        if self._fine_heap:
            candidates.append(self._fine_heap[0])
        if self._windows_heap:
            candidates.append(self._windows_heap[0] * self.width_ms)
        return min(candidates) if candidates else None

    def __len__(self) -> int:
        return sum(len(ids) for ids, _ in self._windows.values()) + sum(len(b) for b in self._fine.values())

    def clear(self) -> None:
        self.earliest = _NEVER
        self._windows.clear()
        self._windows_heap.clear()
        self._fine.clear()
        self._fine_heap.clear()
