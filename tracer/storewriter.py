"""Writes the store behind the engine: the engine works on batch N+1 while the store writes batch N.

``StoreWriter(sink, source)`` is both the processor's ``Sink`` and its ``Source``: ``write`` hands
the batch to a writer thread and returns, ``commit`` holds the positions back until every batch
written before them is stored, and ``poll`` passes through (committing what has been stored by
then). chDB and the ClickHouse client release the GIL while a query runs, so on a second core the
insert overlaps the decoding and the engine.

Delivery does not change (ARCHITECTURE "Delivery and state"): positions are committed only after
the store has every batch derived from the records before them, on the thread that polls (a Kafka
consumer is not thread-safe). A commit the bus refuses (a group rebalancing) is kept and tried
again at the next call, not raised: polling must go on for the rebalance to complete, and records
whose position was not committed are read again after a restart (at least once).

At most one batch is in flight: ``write`` first waits for the one before, so a slow store slows
the engine down (backpressure) and memory stays bounded.

A failed write keeps its batch. The error is raised by the next call on the processor's thread
(``write``, ``poll`` or ``flush``) once, as the write would have raised it, and every later call
writes the batch again first, in that thread, until it is stored; nothing after it is committed
meanwhile. ``open_orders`` (a restore, on any thread) reads once the batch in flight is stored, so
a restore sees everything read before it; with a failed batch it raises ``StoreError`` and the
caller retries. Listeners of the processor hear of a batch's findings when it is handed over,
before it is stored: at least once either way, as their effects are idempotent.

Not wired into the product (``ordertrail.pipeline``, ``backtest --store``) for now, because on the
machine it was measured on it made the tracer slower, not faster: two cores shared with other
work, so no core was free for the insert, and about half of ``Store.write`` is Python
(clickhouse-connect building Native columns) that holds the GIL the engine needs. Quick throughput
benchmark with the store: 25.3k-25.7k events/s with it, 32.4k-32.9k without (synchronous writes);
300k events: 16.2-18.8 s with it, 15.8 s without; the process also used 1.5-3 s more CPU. Where
a core is free, or the store is a remote server (the tracer waits on the network while it
writes), it should hide most of the insert. To use it, measure first, then: in
``ordertrail.pipeline.Pipeline``, ``StoreWriter(metered_sink, source)`` as the Processor's sink and
source, ``close()`` it once the tracer thread has stopped, and on Kafka let ``Ownership`` read open
orders through it (after the batch in flight).

Imports only the tracer's model and errors; the protocols it wraps are ``tracer.processor``'s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from tracer.errors import StoreError, TracerError

if TYPE_CHECKING:
    from tracer.bus import InputRecord
    from tracer.engine import OrderSnapshot
    from tracer.model import Finding, HopEvent
    from tracer.processor import Sink, Source

log = logging.getLogger("ordertrail.storewriter")


class _Write:
    __slots__ = ("error", "events", "findings", "reported", "snapshots", "stored")

    def __init__(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        self.events, self.findings, self.snapshots = events, findings, snapshots
        self.stored = False
        self.error: TracerError | None = None
        self.reported = False  # the error was raised to the processor once; later calls retry

    def run(self, sink: Sink) -> None:
        try:
            sink.write(self.events, self.findings, self.snapshots)
        except TracerError:
            raise
        except Exception as exc:  # an unexpected driver error is a store error too (as the processor says)
            raise StoreError(f"the store failed: {exc}") from exc


class StoreWriter:
    """The processor's sink and source, writing one batch in the background (see the module)."""

    def __init__(self, sink: Sink, source: Source | None = None) -> None:
        self._sink = sink
        self._source = source
        self._cond = threading.Condition()
        self._write: _Write | None = None  # in flight, or failed; None once stored and settled
        self._positions: dict[int, int] = {}  # committed once the write before them is stored
        self._thread: threading.Thread | None = None
        self._closed = False
        self._commit_failing = False

    # -- Sink -----------------------------------------------------------------------------------

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        """Hand the batch over once the one before is stored (and its positions committed)."""
        self._settle(wait=True)
        with self._cond:
            if self._closed:
                raise StoreError("the store writer is closed")
            self._write = _Write(events, findings, snapshots)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ordertrail-store-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        """The sink's open orders, read after the batch in flight is stored."""
        with self._cond:
            self._cond.wait_for(self._settled)
            if self._write is not None and self._write.error is not None:
                raise StoreError(f"open orders are read once the failed batch is stored: {self._write.error}")
        return self._sink.open_orders(partitions)

    # -- Source ---------------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> Sequence[InputRecord]:
        self._settle(wait=False)
        return self._require_source().poll(max_records, timeout_s)

    def commit(self, positions: Mapping[int, int]) -> None:
        with self._cond:
            self._positions.update(positions)
            if self._write is not None:
                return  # committed when the batch in flight is stored
        self._commit()

    def lag(self) -> dict[int, int]:
        return self._require_source().lag()

    # -- lifecycle ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every batch handed over is stored and its positions committed. A failed
        batch is written once more here; if that fails too, its error is raised."""
        with self._cond:
            self._cond.wait_for(self._settled)
            if self._write is not None:
                self._write.reported = True
        self._settle(wait=True)

    def close(self) -> None:
        """Flush, then stop the writer thread (also when the flush raises)."""
        try:
            self.flush()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join()

    # -- internals ------------------------------------------------------------------------------

    def _settled(self) -> bool:
        """Nothing is being written: no batch, or it is stored, or it failed."""
        w = self._write
        return w is None or w.stored or w.error is not None

    def _run(self) -> None:
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._closed or not self._settled())
                write = self._write
                if write is None or self._settled():
                    return  # closed
                self._cond.release()
                try:
                    write.run(self._sink)
                except BaseException as exc:  # the batch must settle, or the processor would wait forever
                    error: TracerError | None = exc if isinstance(exc, TracerError) else StoreError(str(exc))
                else:
                    error = None
                finally:
                    self._cond.acquire()
                write.stored, write.error = error is None, error
                if error is not None:
                    log.error("store write failed (%s); it is written again before the next batch", error)
                self._cond.notify_all()

    def _settle(self, *, wait: bool) -> None:
        """On the processor's thread: if the batch in flight is stored, commit what waited for it;
        if it failed, raise its error once, then write it again here until it is stored."""
        with self._cond:
            write = self._write
            if wait:
                self._cond.wait_for(self._settled)
            elif not self._settled():
                return  # still writing
            pending = bool(self._positions)
        if write is not None and not write.stored:
            assert write.error is not None
            if not write.reported:
                write.reported = True
                raise write.error
            write.run(self._sink)  # raises as a write does; the batch stays until it is stored
            with self._cond:
                write.stored, write.error = True, None
        if write is not None:
            with self._cond:
                self._write = None
        if pending:
            self._commit()

    def _commit(self) -> None:
        with self._cond:
            positions, self._positions = self._positions, {}
        if not positions:
            return
        try:
            self._require_source().commit(positions)
        except TracerError as exc:
            # Kept and committed with the next ones. Not raised: the processor would retry without
            # polling, and a consumer group completes a rebalance (which refuses commits) in poll.
            with self._cond:
                self._positions = {**positions, **self._positions}
            if not self._commit_failing:
                log.warning("committing %s failed (%s); retried at the next poll", positions, exc)
            self._commit_failing = True
        else:
            if self._commit_failing:
                log.info("committing positions works again")
            self._commit_failing = False

    def _require_source(self) -> Source:
        if self._source is None:
            raise TracerError("this store writer has no source: it writes, it does not poll or commit")
        return self._source
