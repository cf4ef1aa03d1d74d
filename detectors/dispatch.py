"""Delivery of alerts to the sinks, off the tracer's and the detectors' threads.

Each sink has its own thread and a bounded queue, so a slow or dead sink delays only itself and
never blocks the caller: ``publish`` puts without waiting, and a full queue drops the batch and
counts it (the next refresh carries every firing alert again to sinks that want re-sends). A sink
that raises is counted as failed; its own retries, if any, happen on its thread.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from detectors.alerts import Alert, AlertSink

log = logging.getLogger("ordertrail.alerts")
_STOP: Final = None


@dataclass(slots=True)
class SinkStats:
    sent: int = 0  # alerts delivered
    failed: int = 0  # alerts in batches the sink could not deliver
    dropped: int = 0  # alerts dropped because the sink's queue was full


class Dispatcher:
    def __init__(self, sinks: Sequence[AlertSink], *, queue_size: int = 256) -> None:
        self.sinks = list(sinks)
        self.stats = {s.name: SinkStats() for s in self.sinks}
        self._queues: dict[str, queue.Queue[list[Alert] | None]] = {
            s.name: queue.Queue(maxsize=queue_size) for s in self.sinks
        }
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for sink in self.sinks:
            t = threading.Thread(target=self._run, args=(sink,), name=f"alerts-{sink.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def publish(self, changes: Sequence[Alert], firing: Sequence[Alert] = ()) -> None:
        """Hand over what changed, and (at a refresh) every firing alert for the sinks that resend."""
        for sink in self.sinks:
            batch = list(changes)
            if sink.resends and firing:
                keys = {a.key for a in batch}
                batch.extend(a for a in firing if a.key not in keys)
            if not batch:
                continue
            try:
                self._queues[sink.name].put_nowait(batch)
            except queue.Full:
                self.stats[sink.name].dropped += len(batch)
                log.warning("alert sink %s is behind: dropped %d alerts", sink.name, len(batch))

    def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (within the timeout), then stop the threads."""
        for q in self._queues.values():
            with contextlib.suppress(queue.Full):
                q.put(_STOP, timeout=timeout_s)
        for t in self._threads:
            t.join(timeout_s)
        self._threads.clear()

    def idle(self) -> bool:
        return all(q.unfinished_tasks == 0 for q in self._queues.values())

    def _run(self, sink: AlertSink) -> None:
        q = self._queues[sink.name]
        stats = self.stats[sink.name]
        while True:
            batch = q.get()
            try:
                if batch is _STOP:
                    return
                try:
                    sink.send(batch)
                    stats.sent += len(batch)
                except Exception as exc:  # a sink must never take the detectors down
                    stats.failed += len(batch)
                    log.warning("alert sink %s failed to deliver %d alerts: %s", sink.name, len(batch), exc)
            finally:
                q.task_done()
