"""Writes the store behind the engine: the engine works on batch N+1 while the store inserts batch N.

``StoreWriter(sink, source)`` is both the processor's ``Sink`` and its ``Source``: ``write`` hands
the batch to a writer thread and returns, ``commit`` holds the positions back until every batch
written before them is stored, and ``poll`` passes through (committing what has been stored by
then). A ``PreparingSink`` (``tracer.clickhouse.Store``) is split in two: ``prepare`` (building
and serializing the rows: Python, about half of a write) runs on the caller's thread, and only
``write_prepared`` (the insert, which chDB and the HTTP client run without the GIL) on the
writer's. Run whole on the writer's thread, the two threads fought over the GIL and the tracer got
slower (quick throughput 25k events/s against 32k writing synchronously); split, it is faster:
34k-37k against 30k-32k (quick), 300k events 24.7k-26.2k against 19.7k-24.1k events/s.

Used by ``ordertrail backtest --store`` (and the throughput benchmark, which measures that path).
Not yet by the live ``Processor``: its sink is the metered store (``ordertrail.metrics.MeteredSink``)
and on Kafka the findings publisher (``tracer.findings_topic.PublishingSink``), which would need
``prepare``/``write_prepared`` too; then ``ordertrail.pipeline.Pipeline`` builds
``StoreWriter(sink, source)`` as the Processor's sink and source, closes it once the tracer thread
has stopped, and ``Ownership`` reads open orders through it (after the batch in flight).

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

Imports only the tracer's model and errors; the protocols it wraps are ``tracer.processor``'s.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from tracer.errors import StoreError, TracerError, store_errors

if TYPE_CHECKING:
    from tracer.bus import InputRecord
    from tracer.engine import OrderSnapshot
    from tracer.model import Finding, HopEvent
    from tracer.processor import Sink, Source

log = logging.getLogger("ordertrail.storewriter")


@runtime_checkable
class PreparingSink(Protocol):
    """A sink whose write splits in two (``tracer.clickhouse.Store``): ``prepare`` (the Python
    half: serializing, holds the GIL) runs on the caller's thread, ``write_prepared`` (the insert,
    mostly without the GIL) on the writer's, so the two threads do not fight over the GIL."""

    def prepare(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> Any: ...
    def write_prepared(self, prepared: Any) -> None: ...


class _Write:
    __slots__ = ("error", "events", "findings", "prepared", "reported", "snapshots", "stored")

    def __init__(
        self,
        events: Sequence[HopEvent],
        findings: Sequence[Finding],
        snapshots: Sequence[OrderSnapshot],
        prepared: Any = None,
    ) -> None:
        self.events, self.findings, self.snapshots = events, findings, snapshots
        self.prepared = prepared  # set when the sink prepares: then only this is inserted
        self.stored = False
        self.error: TracerError | None = None
        self.reported = False  # the error was raised to the processor once; later calls retry

    def run(self, sink: Sink) -> None:
        with store_errors():
            if self.prepared is not None:
                cast("PreparingSink", sink).write_prepared(self.prepared)
            else:
                sink.write(self.events, self.findings, self.snapshots)


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
        """Hand the batch over once the one before is stored (and its positions committed). A
        ``PreparingSink`` prepares it first, here, while the one before is still being inserted."""
        prepared = None
        if isinstance(self._sink, PreparingSink) and (events or findings or snapshots):
            with store_errors():
                prepared = self._sink.prepare(events, findings, snapshots)
        self._settle(wait=True)
        with self._cond:
            if self._closed:
                raise StoreError("the store writer is closed")
            self._write = _Write(events, findings, snapshots, prepared)
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

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        """The sink's answer, read once the batch in flight is stored (as ``open_orders``)."""
        with self._cond:
            self._cond.wait_for(self._settled)
            if self._write is not None and self._write.error is not None:
                raise StoreError(f"closed orders are read once the failed batch is stored: {self._write.error}")
        return self._sink.closed_orders(order_ids)

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
