"""The live stream processor: bus records in, findings and state out, positions committed last.

One cycle (``step``): poll a batch from the consumer → decode each record (bad ones go to the
dead-letter sink with their reason) → feed the engine, advancing its clock as the partition clock
allows → write events, findings and order snapshots to the store in one batch → only then commit
the consumed positions → hand the new findings to the listeners (detectors, alert sinks, logs).

A kill -9 anywhere in that cycle is safe: uncommitted records are read again on restart, the engine
state is rebuilt from the store's open orders (which already include what was stored), and event-id
dedupe plus stable finding identities make the replay idempotent. An order that the last stored
batch closed is not among the open orders, so the records read again from a rebuilt partition
(``restored``) are checked first: the orders they start mid-journey that the store holds closed
are remembered as closed (``_recall_closed``), never started afresh.

The clock (``tracer.clock.PartitionClock``) moves with event time, and with wall time only while
every owned partition is caught up, so a backlog never looks like lost orders.

With a ``tracer.stitch.Stitcher``, each decoded event passes through it first: events reported
under another key of their order are re-keyed and fed to the engine under the order's partition —
or, when another processor owns that partition and a ``forward`` is given, produced back to the
bus under the order id for it, durably before the commit — or wait for their link. New links and
waiting events are stored with the batch, and events that waited too long go to the dead-letter
sink as unlinked.

Over a consumer group (``tracer.ownership``) the source is also a ``Fence``: each batch notes the
group generation it was read in, and is stored only while that generation lasts. A tracer whose
store write failed (or whose processing stalled) for longer than the poll interval has left the
group, and its partitions have moved on; the batch it holds is then dropped unstored and
uncommitted (the new owner reads those records again from the committed positions) and its
partitions are forgotten as a lost assignment is (``Fence.forfeit``), to be rebuilt from the store
when the group assigns them again. The check narrows the window, it cannot close it (the group
may move on during the write): the store's owner epochs do (``tracer.clickhouse``: rows written
under an older epoch lose to a newer owner's).

This module knows the consumer and the store only through the small protocols below.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

import msgspec

from tracer.bus import InputRecord
from tracer.clock import PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import EventError, TracerError, store_errors
from tracer.events import decode_line
from tracer.model import Finding, HopEvent, event_to_wire
from tracer.stitch import KeyLink, Stitcher, Waiting
from tracer.wire import Peek

log = logging.getLogger("ordertrail.processor")
_WIRE = msgspec.json.Encoder().encode
_PEEK = msgspec.json.Decoder(Peek).decode  # the replay window reads only what places an order

# Allocations between young collections (Python's default is 700), then its default ratios.
GC_THRESHOLDS: Final = (50_000, 10, 10)
# How many batches a partition's records after a rebuild may repeat of what the store holds: the
# processor commits after every batch, a StoreWriter one batch later.
REPLAY_WINDOW_BATCHES: Final = 2


def tune_gc() -> None:
    """Run Python's cycle collector rarely, as suits a process whose processor streams records.

    A batch of 5000 records allocates tens of thousands of containers (the Kafka client's
    records, the engine's per-order lists) while the engine keeps every open order in memory. At
    the default threshold the collector runs every few hundred records, promotes the open orders
    and keeps scanning them again, finding nothing to free (they hold no cycles; reference
    counting frees the rest at once): 1.5 µs an event of a 60k-event run of the benchmark
    workload, 3.7 µs of a 300k-event run, growing with the heap. Process-wide, so the composition
    root calls it, for the processes that run a processor; a threshold already higher is kept."""
    young, *_ = gc.get_threshold()
    if young < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)


@contextmanager
def tuned_gc() -> Iterator[None]:
    """``tune_gc`` for the length of a block (a backtest's read and replay, which hold every
    open order as a tracer process does), the process's thresholds restored after it."""
    saved = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


class Source(Protocol):
    """What the processor needs of a bus consumer."""

    def poll(self, max_records: int, timeout_s: float) -> Sequence[InputRecord]: ...
    def commit(self, positions: dict[int, int]) -> None: ...
    def lag(self) -> dict[int, int]: ...  # partition -> records not yet read


@runtime_checkable
class Fence(Protocol):
    """A source whose partitions can be taken away while a batch is in hand (a consumer group:
    ``tracer.ownership.Ownership``). A source that is not one owns its partitions for good."""

    def lease(self) -> int: ...  # names the ownership the records polled last were read under
    def lapsed(self, lease: int) -> bool: ...  # that ownership has ended since (the group moved on)
    def forfeit(self) -> None: ...  # forget every owned partition, as a lost assignment does


class Sink(Protocol):
    """What the processor needs of the store."""

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None: ...
    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]: ...
    def closed_orders(self, order_ids: Sequence[str]) -> list[str]: ...  # those of them stored as closed


class DeadLetterSink(Protocol):
    """Where rejected records go: all of one step's rejections in one durable write."""

    def write(self, rejected: Sequence[tuple[InputRecord, str]]) -> None: ...


class StitchStore(Protocol):
    """What the processor needs of the store when it stitches re-keyed orders."""

    def write_stitch(self, links: Sequence[KeyLink], waiting: Sequence[Waiting], done: Sequence[Waiting]) -> None: ...
    def waiting_events(self) -> list[Waiting]: ...


FindingListener = Callable[[list[Finding]], None]
_StitchChanges = tuple[list[KeyLink], list[Waiting], list[Waiting]]


@dataclass(frozen=True, slots=True)
class _Unlinked:
    """A waiting event reported as unlinked, as a dead-letter sink takes records."""

    partition: int
    offset: int
    value: bytes
    key: str


@dataclass(slots=True)
class _Batch:
    events: list[HopEvent]
    findings: list[Finding]
    snapshots: list[OrderSnapshot]
    positions: dict[int, int]
    stitch: _StitchChanges | None = None
    forward: list[HopEvent] | None = None
    lease: int | None = None  # the ownership its records were read under (a Fence's)


@dataclass(slots=True)
class ProcessorStats:
    records: int = 0
    rejected: int = 0
    batches: int = 0
    store_errors: int = 0
    fenced: int = 0  # batches dropped unstored: their partitions had moved to another owner
    last_batch_ms: float = 0.0
    restored_orders: int = 0
    lag_records: int = 0
    lag_ms: int = 0
    ready: bool = False
    cycles: int = 0  # completed poll cycles, busy or idle: a heartbeat for pipeline health


class Processor:
    def __init__(
        self,
        source: Source,
        sink: Sink,
        tracer: Tracer,
        clock: PartitionClock,
        partitions: Iterable[int],
        *,
        dead_letter: DeadLetterSink | None = None,
        listeners: Sequence[FindingListener] = (),
        max_records: int = 5000,
        poll_timeout_s: float = 0.1,
        advance_every: int = 256,
        stitcher: Stitcher | None = None,
        stitch_store: StitchStore | None = None,
        partitioner: Callable[[str], int] | None = None,
        forward: Callable[[Sequence[HopEvent]], None] | None = None,
    ) -> None:
        self._source = source
        self._sink = sink
        self.tracer = tracer
        self.clock = clock
        # partition -> how many more of its records may be ones already stored (see _recall_closed)
        self._replay: dict[int, int] = {}
        self.partitions = sorted(partitions)
        self._dead_letter = dead_letter
        self._listeners = list(listeners)
        self._max_records = max_records
        self._poll_timeout_s = poll_timeout_s
        self._advance_every = advance_every
        self.stitcher = stitcher if stitcher is not None and stitcher.active else None
        self._stitch_store = stitch_store
        self._partition_of = partitioner
        self._forward = forward
        self._forwarding: list[HopEvent] = []
        self.stats = ProcessorStats()
        self._pending: _Batch | None = None
        self._held: Sequence[InputRecord] = ()  # read, not yet processed: the store could not be asked
        self._fence = source if isinstance(source, Fence) else None
        self._lease: int | None = None  # the fence's lease of the records read last
        self.lock = threading.Lock()  # held while the engine changes; readers of engine state take it
        clock.assign(self.partitions)

    @property
    def partitions(self) -> list[int]:
        """The partitions this processor owns (a group rebalance may replace them)."""
        return self._partitions

    @partitions.setter
    def partitions(self, partitions: Iterable[int]) -> None:
        self._partitions = sorted(partitions)
        self._owned = frozenset(self._partitions)
        self._replay = {p: n for p, n in self._replay.items() if p in self._owned}

    def add_listener(self, listener: FindingListener) -> None:
        self._listeners.append(listener)

    def restore(self) -> int:
        """Rebuild the open orders of the owned partitions from the store."""
        snapshots, findings = self._sink.open_orders(self.partitions)
        store = self._stitch_store
        waiting = store.waiting_events() if self.stitcher is not None and store is not None else []
        waiting = [w for w in waiting if w.partition in self._owned]  # the events read from our partitions
        with self.lock:
            n = self.tracer.restore(snapshots, findings)
            if self.stitcher is not None:
                self.stitcher.restore(waiting)
        self.restored(self.partitions)
        self.stats.restored_orders = n
        log.info("restored %d open orders of partitions %s", n, self.partitions)
        return n

    def restored(self, partitions: Iterable[int]) -> None:
        """The open orders of ``partitions`` were just rebuilt from the store (``restore``, or
        ``tracer.ownership`` after a rebalance): the records read next from them, from the committed
        position on, may have been stored already. See ``_recall_closed``."""
        for p in partitions:
            self._replay[p] = REPLAY_WINDOW_BATCHES * self._max_records

    def step(self) -> int:
        """One poll → process → store → commit cycle. Returns the number of records read.

        If the store write fails, the derived batch is kept and written again by the next call
        before anything new is read; positions are committed only after it succeeded. A batch whose
        partitions moved on meanwhile (the ``Fence``'s lease lapsed) is dropped instead. If the store
        cannot say which orders of a replay are closed, the records are kept and processed by the
        next call, before anything new is read."""
        if self._pending is not None:
            self._flush(self._pending)
        if self._held:
            records, self._held = self._held, ()
        else:
            records = self._source.poll(self._max_records, self._poll_timeout_s)
            if self._fence is not None:
                self._lease = self._fence.lease()
        if self._replay and records:
            self._recall_closed(records)
        started = time.perf_counter()
        events: list[HopEvent] = []
        rejected: list[tuple[InputRecord, str]] = []
        positions: dict[int, int] = {}
        tracer, clock, stitcher = self.tracer, self.clock, self.stitcher
        stitched: _StitchChanges | None = None
        with self.lock:
            for rec in records:
                positions[rec.partition] = rec.offset + 1
            # A partition with records to read is not caught up, whatever the last cycle found:
            # after a pause, wall time must not move the clock before its backlog is read.
            for p in positions:
                clock.set_caught_up(p, False)
            # The per-record loop is the hot path: its callables are looked up once per batch.
            observe, on_event, keep, every = clock.observe, tracer.on_event, events.append, self._advance_every
            for n, rec in enumerate(records, 1):
                try:
                    ev = decode_line(rec.value)
                except EventError as exc:
                    rejected.append((rec, str(exc)))
                    continue
                read_from = partition = rec.partition
                if stitcher is not None:
                    moved = stitcher.stitch(ev, partition, rec.offset)
                    if moved is not ev:
                        if moved is None:
                            continue  # waits for its link
                        ev, partition = moved, self._partition(moved.order_id, partition)
                        if partition not in self._owned and self._forward is not None:
                            self._forwarding.append(ev)
                            continue
                observe(read_from, ev.ts)
                if n % every == 0:
                    self._advance()
                on_event(ev, partition)
                keep(ev)
            self._update_caught_up()
            if stitcher is not None:
                stitched = self._stitch_cycle(stitcher, events, rejected)
            self._advance()
            findings = tracer.drain_findings()
            snapshots = tracer.drain_snapshots()
        self.stats.records += len(records)
        if rejected:
            self._reject(rejected)  # durable before the positions past them are committed
        forwarding, self._forwarding = self._forwarding, []
        if records or findings or forwarding or (stitched is not None and any(stitched)):
            self._flush(_Batch(events, findings, snapshots, positions, stitched, forwarding, self._lease))
            self.stats.batches += 1
            self.stats.last_batch_ms = (time.perf_counter() - started) * 1000
        self.stats.cycles += 1
        return len(records)

    def run(self, stop: threading.Event) -> None:
        """Restore, then cycle until ``stop`` is set. A store outage pauses the pipeline (nothing
        is committed, nothing is skipped) and is retried every second."""
        while not stop.is_set():
            try:
                self.restore()
                break
            except TracerError as exc:
                log.error("cannot restore open orders yet (%s); retrying in 1s", exc)
                stop.wait(1.0)
        self.stats.ready = True
        while not stop.is_set():
            try:
                self.step()
            except TracerError as exc:
                self.stats.store_errors += 1
                log.error("store write failed (%s); retrying in 1s without committing", exc)
                stop.wait(1.0)
        if self._pending is not None:
            try:
                self._flush(self._pending)
            except TracerError as exc:
                log.error("final store write failed (%s); the records will be read again on restart", exc)

    def _stitch_cycle(
        self, stitcher: Stitcher, events: list[HopEvent], rejected: list[tuple[InputRecord, str]]
    ) -> _StitchChanges:
        """Feed the events whose link arrived this cycle, report the ones that waited too long."""
        for ev in stitcher.drain_released():
            partition = self._partition(ev.order_id, 0)
            if partition not in self._owned and self._forward is not None:
                self._forwarding.append(ev)
                continue
            self.tracer.on_event(ev, partition)  # the clock follows records as read; this one was read before
            events.append(ev)
        now = self.clock.now()
        if now is not None:
            for w, reason in stitcher.expire(now):
                value = _WIRE(event_to_wire(w.event))
                rejected.append((_Unlinked(w.partition, w.offset, value, w.value), reason))
        return stitcher.drain_changes()

    def _recall_closed(self, records: Sequence[InputRecord]) -> None:
        """Remember as closed the orders of a replay that the store holds closed.

        The records of a rebuilt partition are read from its committed position; the last batch
        stored before that position was committed (its owner was killed, or its commit refused in
        a rebalance) is read again. The open orders restored already hold its events, and dedupe
        drops them. But an order that batch *closed* is not an open order: fed its replayed last
        hops as a new order, the engine would see it start mid-journey, imply the hops before them
        and wait again for the ones it had seen — a false ``unconfirmed`` for a confirmation in
        the order's own trail, and the closed record in the store overwritten. So before the
        engine sees them, the orders that the replayed records start past a journey's start (or
        outside every journey), and that the engine does not know, are looked up in the store:
        those stored as closed are remembered as closed, as the engine that closed them did.

        Only records that may be replays are looked at: those of a partition restored and not yet
        caught up, and no more of them than its owner can have stored past its commit (a
        processor commits after every batch; a ``StoreWriter`` has one more in flight), so a
        long backlog read after a restart is decoded once, as ever. Raises ``StoreError`` (the
        records are held for the next step) when the store cannot answer."""
        tracer, replay = self.tracer, self._replay
        taken: dict[int, int] = {}
        first: set[str] = set()
        ask: list[str] = []
        for rec in records:
            p = rec.partition
            left = replay.get(p, 0) - taken.get(p, 0)
            if left <= 0:
                continue
            taken[p] = taken.get(p, 0) + 1
            try:
                peek = _PEEK(rec.value)
            except msgspec.DecodeError:  # invalid JSON or fields: rejected by the step, as ever
                continue
            oid = peek.order_id
            if oid in first:
                continue
            first.add(oid)
            if tracer.opens_midway(oid, peek.journey or "", peek.hop):
                ask.append(oid)
        if ask:
            self._held = records  # processed by the next step if the store cannot answer
            with store_errors():
                closed = self._sink.closed_orders(ask)
            self._held = ()
            if closed:
                with self.lock:
                    tracer.remember_closed(closed)
                log.info("%d orders read again from a rebuilt partition were closed already: kept closed", len(closed))
        for p, n in taken.items():
            if n >= replay[p]:
                del replay[p]
            else:
                replay[p] -= n

    def _partition(self, order_id: str, default: int) -> int:
        return self._partition_of(order_id) if self._partition_of is not None else default

    def _flush(self, batch: _Batch) -> None:
        if self._fence is not None and batch.lease is not None and self._fence.lapsed(batch.lease):
            self._drop(batch, self._fence)
            return
        self._pending = batch
        if batch.forward and self._forward is not None:
            self._forward(batch.forward)  # a retry forwards again: the owner drops the duplicates
        if batch.stitch is not None and self._stitch_store is not None and any(batch.stitch):
            with store_errors():
                self._stitch_store.write_stitch(*batch.stitch)
        if batch.events or batch.findings or batch.snapshots:
            with store_errors():
                self._sink.write(batch.events, batch.findings, batch.snapshots)
        if batch.positions:
            self._source.commit(batch.positions)
        self._pending = None
        if batch.findings:
            for listener in self._listeners:
                try:
                    listener(batch.findings)
                except Exception:  # a listener must never stop the pipeline
                    log.exception("finding listener %r failed", listener)

    def _drop(self, batch: _Batch, fence: Fence) -> None:
        """The group moved the batch's partitions on before it was stored: nothing of it is
        stored, forwarded, committed or heard by the listeners (the new owner reads its records
        again and derives it anew), and what the engine holds of those partitions, ahead of the
        store now, is forgotten until the group assigns them again and they are rebuilt."""
        self._pending = None
        self._held = ()
        self.stats.fenced += 1
        log.warning(
            "batch of partitions %s dropped unstored (%d events, %d findings, %d orders): this tracer left the "
            "consumer group before storing it (a store write or a step took longer than the poll interval); "
            "their new owner reads the records again, and they are rebuilt here if assigned again",
            sorted(batch.positions) or self.partitions,
            len(batch.events),
            len(batch.findings),
            len(batch.snapshots),
        )
        fence.forfeit()

    def _reject(self, rejected: list[tuple[InputRecord, str]]) -> None:
        self.stats.rejected += len(rejected)
        if self._dead_letter is not None:
            self._dead_letter.write(rejected)
            return
        for rec, reason in rejected:
            log.warning("partition %d offset %d rejected: %s", rec.partition, rec.offset, reason)

    def _update_caught_up(self) -> None:
        lag = self._source.lag()
        total = 0
        for p in self.partitions:
            behind = lag.get(p, 0)
            total += behind
            self.clock.set_caught_up(p, behind == 0)
            if not behind:
                self._replay.pop(p, None)  # read past everything stored before the rebuild
        self.stats.lag_records = total
        self.stats.lag_ms = self.clock.lag_ms()

    def _advance(self) -> None:
        now = self.clock.now()
        if now is not None:
            self.tracer.advance(now)
