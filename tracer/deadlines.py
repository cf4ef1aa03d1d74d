"""The deadline index: which orders to look at when the clock passes a time.

``arm(due_ms, order_id)`` asks for ``order_id`` once the clock is strictly past ``due_ms``;
``pop_due(now_ms)`` hands over, earliest first, the orders whose time has come. Exact to the
millisecond, without a heap push per deadline: a two-level timing wheel.

* Deadlines wait in coarse windows of ``width_ms``: an append of the order id, and of the
  deadline's offset in its window, to the window's two lists (an offset is a small int, shared by
  the interpreter: no allocation). Only the first deadline of a window pushes onto the heap of
  windows.
* When the clock enters a window it becomes the *current* one: its deadlines are dealt into one
  slot per millisecond (``width_ms`` slots, reused window after window), and a cursor walks the
  slots as the clock moves. A deadline armed inside the current window goes straight to its slot.
* A deadline armed for a time the index has already passed (the engine never does: it arms what
  is not yet due) waits in exact per-millisecond buckets on a heap, and fires at the next call.

Entries are never removed: the caller keeps, per order, the deadline it is armed for and ignores
stale entries. Compiled (``tracer.native``), the window arithmetic is on native 64-bit ints.

This module imports only the standard library (and mypy_extensions' native int type).
"""

from __future__ import annotations

import heapq
from typing import Final

from mypy_extensions import i64

_NEVER: Final = 2**63 - 1
_NO_WINDOW: Final[i64] = -(2**63)
# Final: compiled (tracer.native), a C static instead of a module-attribute lookup per call.
_PUSH: Final = heapq.heappush
_POP: Final = heapq.heappop


class DeadlineIndex:
    __slots__ = (
        "_count",
        "_cursor",
        "_done",
        "_fine",
        "_fine_heap",
        "_slots",
        "_start",
        "_windows",
        "_windows_heap",
        "earliest",
        "width_ms",
    )

    def __init__(self, width_ms: int = 100) -> None:
        if width_ms <= 0:
            raise ValueError(f"width_ms: {width_ms!r} must be a positive number of milliseconds")
        self.width_ms: i64 = width_ms
        # window -> the order ids armed in it and their deadlines' offsets from its start
        self._windows: dict[i64, tuple[list[str], list[int]]] = {}
        self._windows_heap: list[i64] = []
        # The current window: it starts at _start (_NO_WINDOW: none), its slot k holds the orders
        # due at _start + k. Slots below _done are popped; none below _cursor holds an order.
        self._start: i64 = _NO_WINDOW
        self._slots: list[list[str] | None] = [None] * width_ms
        self._count: i64 = 0  # orders in the slots
        self._done: i64 = 0
        self._cursor: i64 = 0
        self._fine: dict[int, list[str]] = {}  # due ms -> order ids armed for a time already passed
        self._fine_heap: list[int] = []
        # No deadline armed is before this (a lower bound): a clock not past it has nothing to
        # pop, and the caller may skip ``pop_due`` (the clock's move then waits for the next call).
        self.earliest = _NEVER

    def arm(self, due_ms: int, order_id: str) -> None:
        if due_ms < self.earliest:
            self.earliest = due_ms
        due: i64 = due_ms
        width = self.width_ms
        start = self._start
        if start != _NO_WINDOW:
            off = due - start
            if off < self._done:  # a time the current window has passed, or one before it
                self._arm_fine(due_ms, order_id)
                return
            if off < width:
                slot = self._slots[off]
                if slot is None:
                    self._slots[off] = [order_id]
                else:
                    slot.append(order_id)
                self._count += 1
                if off < self._cursor:
                    self._cursor = off
                return
        window = due // width
        entries = self._windows.get(window)
        if entries is None:
            self._windows[window] = ([order_id], [int(due - window * width)])
            _PUSH(self._windows_heap, window)
        else:
            entries[0].append(order_id)
            entries[1].append(int(due - window * width))

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
        now: i64 = now_ms
        width = self.width_ms
        out: list[tuple[int, list[str]]] = []
        windows = self._windows_heap
        while True:
            start = self._start
            if start != _NO_WINDOW:
                end = now - start  # the slots before it are due
                if end > width:
                    end = width
                if end > self._done:
                    slots = self._slots
                    k = self._cursor
                    while self._count > 0 and k < end:
                        ids = slots[k]
                        if ids is not None:
                            out.append((int(start + k), ids))
                            slots[k] = None
                            self._count -= len(ids)
                        k += 1
                    self._done = end
                    if self._count > 0:
                        while slots[k] is None:  # the next slot that holds an order (there is one)
                            k += 1
                        self._cursor = k
                    else:
                        self._cursor = width
                if end < width:
                    break  # the clock is inside the current window
                self._start = _NO_WINDOW
            if not windows or windows[0] * width >= now:
                break
            self._open(_POP(windows))
        if self._fine_heap and self._fine_heap[0] < now_ms:
            out = self._merge_fine(out, now_ms)
        self._bound()
        return out

    def _open(self, window: i64) -> None:
        """The clock entered ``window``: deal its deadlines into the slots."""
        order_ids, offsets = self._windows.pop(window)
        slots = self._slots
        for k in range(len(order_ids)):  # compiled, a C loop (zip(strict=) is not)
            off = offsets[k]
            slot = slots[off]
            if slot is None:
                slots[off] = [order_ids[k]]
            else:
                slot.append(order_ids[k])
        self._start = window * self.width_ms
        self._count = len(order_ids)
        self._done = 0
        self._cursor = 0
        while slots[self._cursor] is None:
            self._cursor += 1

    def _merge_fine(self, out: list[tuple[int, list[str]]], now_ms: int) -> list[tuple[int, list[str]]]:
        """The wheel's due deadlines and the passed ones armed late, in one earliest-first list."""
        fine = self._fine_heap
        merged: dict[int, list[str]] = {}
        for due, ids in out:
            merged[due] = ids
        while fine and fine[0] < now_ms:
            due = _POP(fine)
            ids = self._fine.pop(due)
            known = merged.get(due)
            if known is None:
                merged[due] = ids
            else:
                known.extend(ids)
        return sorted(merged.items())

    def _bound(self) -> None:
        earliest = _NEVER
        if self._count > 0:
            earliest = int(self._start + self._cursor)
        elif self._windows_heap:
            earliest = int(self._windows_heap[0] * self.width_ms)
        if self._fine_heap and self._fine_heap[0] < earliest:
            earliest = self._fine_heap[0]
        self.earliest = earliest

    def next_due(self) -> int | None:
        """A lower bound of the earliest deadline armed (exact once its window is entered)."""
        due = self.earliest if self._count > 0 or self._fine_heap else _NEVER
        if self._windows_heap:
            due = min(due, int(self._windows_heap[0] * self.width_ms))
        return None if due == _NEVER else due

    def __len__(self) -> int:
        return (
            sum(len(ids) for ids, _ in self._windows.values())
            + int(self._count)
            + sum(len(b) for b in self._fine.values())
        )

    def clear(self) -> None:
        self.earliest = _NEVER
        self._windows.clear()
        self._windows_heap.clear()
        self._start = _NO_WINDOW
        self._slots = [None] * self.width_ms
        self._count = 0
        self._done = 0
        self._cursor = 0
        self._fine.clear()
        self._fine_heap.clear()
