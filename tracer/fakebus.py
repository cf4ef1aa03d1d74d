"""An in-memory bus with the semantics of ``tracer.bus`` and no durability, for tests of the code
that produces and consumes (the processor, the ingest routes) — like OpenTelemetry's
``InMemorySpanExporter`` next to its exporter interface.

It partitions with Kafka's partitioner, keeps per-partition order, commits only forward, reports
lag, wakes a waiting ``poll`` when records arrive and calls the rebalance listener from ``poll`` and
``close``. It forgets everything when dropped. Imports nothing but ``tracer.bus``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence

from tracer.bus import BusError, KeyPartitioner, Message, RebalanceListener, Record


class MemoryBus:
    """Topics of in-memory partitions. ``produce_batch`` is the ``Producer`` role."""

    def __init__(self, topics: Mapping[str, int], *, now_ms: Callable[[], int] | None = None) -> None:
        self._logs: dict[str, list[list[Record]]] = {name: [[] for _ in range(n)] for name, n in topics.items()}
        self._partitioners = {name: KeyPartitioner(n) for name, n in topics.items()}
        self._committed: dict[tuple[str, str], dict[int, int]] = {}
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.cond = threading.Condition()

    def produce_batch(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        logs = self._log(topic)
        partition_of = self._partitioners[topic]
        now = self._now_ms()
        out: list[tuple[int, int]] = []
        with self.cond:
            for m in messages:
                if type(m.value) is not bytes:
                    raise BusError(f"message key {m.key!r}: value is {type(m.value).__name__}; it must be bytes")
                p = partition_of(m.key)
                part = logs[p]
                ts = now if m.timestamp_ms is None else m.timestamp_ms
                part.append(Record(topic, p, len(part), ts, m.key, m.value, list(m.headers)))
                out.append((p, len(part) - 1))
            self.cond.notify_all()
        return out

    def consumer(self, topic: str, group: str, *, listener: RebalanceListener | None = None) -> MemoryConsumer:
        self._log(topic)
        return MemoryConsumer(self, topic, group, listener)

    def records(self, topic: str, partition: int | None = None) -> list[Record]:
        """Everything produced to ``topic`` (one partition, or all in partition order)."""
        logs = self._log(topic)
        with self.cond:
            return list(logs[partition]) if partition is not None else [r for part in logs for r in part]

    def committed(self, topic: str, group: str) -> dict[int, int]:
        return dict(self._committed.get((topic, group), {}))

    def _log(self, topic: str) -> list[list[Record]]:
        logs = self._logs.get(topic)
        if logs is None:
            raise BusError(f"topic {topic!r} does not exist; known topics: {sorted(self._logs)}")
        return logs


class MemoryConsumer:
    """Reads all partitions of one topic for one group (see ``tracer.bus.Consumer``)."""

    def __init__(self, bus: MemoryBus, topic: str, group: str, listener: RebalanceListener | None) -> None:
        self.topic, self.group = topic, group
        self._bus, self._listener = bus, listener
        self._parts = bus._log(topic)
        committed = bus.committed(topic, group)
        self._next = [committed.get(p, 0) for p in range(len(self._parts))]
        self._assigned = False
        self._woken = False

    def assignment(self) -> list[int]:
        return list(range(len(self._parts)))

    def poll(self, max_records: int = 500, timeout_s: float = 0.0) -> list[Record]:
        if not self._assigned:
            self._assigned = True
            if self._listener is not None:
                self._listener.on_assigned(self.assignment())
        deadline = time.monotonic() + timeout_s
        with self._bus.cond:
            while True:
                out: list[Record] = []
                for p, part in enumerate(self._parts):
                    taken = part[self._next[p] : self._next[p] + max_records - len(out)]
                    out.extend(taken)
                    self._next[p] += len(taken)
                remaining = deadline - time.monotonic()
                if out or self._woken or remaining <= 0:
                    self._woken = False
                    return out
                self._bus.cond.wait(remaining)

    def wakeup(self) -> None:
        with self._bus.cond:
            self._woken = True
            self._bus.cond.notify_all()

    def commit(self, positions: Mapping[int, int]) -> None:
        with self._bus.cond:
            stored = self._bus._committed.setdefault((self.topic, self.group), {})
            for p, offset in positions.items():
                if not 0 <= p < len(self._parts) or not 0 <= offset <= len(self._parts[p]):
                    raise BusError(f"commit: partition {p} offset {offset} is outside {self.topic!r}")
                stored[p] = max(stored.get(p, 0), offset)

    def committed(self) -> dict[int, int]:
        return self._bus.committed(self.topic, self.group)

    def position(self) -> dict[int, int]:
        return dict(enumerate(self._next))

    def end_offsets(self) -> dict[int, int]:
        return {p: len(part) for p, part in enumerate(self._parts)}

    def lag(self) -> dict[int, int]:
        return {p: len(part) - self._next[p] for p, part in enumerate(self._parts)}

    def seek(self, partition: int, offset: int) -> None:
        self._next[partition] = max(0, min(offset, len(self._parts[partition])))

    def close(self) -> None:
        if self._assigned and self._listener is not None:
            self._listener.on_revoked(self.assignment())
        self._assigned = False
