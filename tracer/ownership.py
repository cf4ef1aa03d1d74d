"""Partition ownership: keeps a ``Processor``'s partitions, clock and open orders in step with what
its consumer group assigns it, so the processor loop runs unchanged over a shared bus.

``Ownership`` sits between the processor and a group consumer: it is the processor's ``Source``
(``poll``/``commit``/``lag`` pass through) and ``Fence``, and the consumer's ``RebalanceListener``.

* Revoked partitions: the processor polls only after it has stored and committed everything it
  read, so at revocation nothing derived is unstored or uncommitted ("flush and commit" holds by
  construction). Their orders are dropped from memory and the clock forgets them.
* Gained partitions arrive held (the consumer pauses them before fetching). At the next poll —
  when everything read so far is stored — every owned partition is held and a worker thread reads
  their open orders from the store; ``poll`` keeps running meanwhile, so the member stays in the
  group. Then the engine drops every order it holds, forgets the time it had reached
  (``Tracer.rewind``, ``PartitionClock.restart``), takes the open orders of all its partitions
  back, and the partitions resume from their committed positions (what was stored past them is
  read again: ``Processor.restored``).
* A lapsed membership (the fence): a batch is stored only while the member is still in the group
  generation the batch was read in (``lease``/``lapsed``: the consumer's generation). A member that
  did not poll for the poll interval (a store write failing or hanging that long) has left the
  group by then, and its partitions have moved on; the processor drops the batch and calls
  ``forfeit``: every owned partition is forgotten at once, as a lost assignment is, and whatever
  the group assigns at the rejoin is gained anew and rebuilt from the store.

Why start the engine's time over rather than restore into the running engine: its clock never goes
back, and gained partitions are behind it (their owner died, or read slower). Restored at our time,
their orders' deadlines would be judged while the hops that answer them still wait unread in the
backlog — findings raised because ordertrail was behind. Rebuilt, the engine starts where a
restart starts: at the low watermark of all owned partitions. It is the same engine object (the
detectors and the lookups hold it), with its learned transit times and counters. It costs a
restore of the retained partitions too, once per rebalance that brings partitions.

Imports only the tracer's engine, clock and processor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tracer.bus import InputRecord
from tracer.engine import OrderSnapshot
from tracer.model import Finding
from tracer.processor import Processor

log = logging.getLogger("ordertrail.ownership")


class GroupSource(Protocol):
    """A consumer in a group that can hold partitions (``tracer.kafkabus.KafkaSource``)."""

    def poll(self, max_records: int, timeout_s: float) -> Sequence[InputRecord]: ...
    def commit(self, positions: Mapping[int, int]) -> None: ...
    def lag(self) -> dict[int, int]: ...
    def pause(self, partitions: Sequence[int]) -> None: ...
    def resume(self, partitions: Sequence[int]) -> None: ...
    def generation(self) -> int: ...  # the member's group generation now; -1 when not a member
    def forfeit(self) -> None: ...  # tell the listener every owned partition is lost, now


class OpenOrders(Protocol):
    """Where the open orders of partitions are read back from (the store)."""

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]: ...


@dataclass(slots=True)
class _Read:
    generation: int
    partitions: list[int]
    snapshots: list[OrderSnapshot] | None = None
    findings: list[Finding] | None = None
    error: Exception | None = None


class Ownership:
    """The processor's source and the consumer's rebalance listener (see the module docstring)."""

    def __init__(self, source: GroupSource, store: OpenOrders, *, retry_s: float = 1.0) -> None:
        self._source = source
        self._store = store
        self._retry_s = retry_s
        self._processor: Processor | None = None
        self.owned: set[int] = set()
        self.rebuilds = 0
        self._joined = False
        self._generation = 0  # moves on every assignment change; a read of an older one is stale
        self._wanted = False  # a rebuild is needed
        self._reading: _Read | None = None  # the read in flight
        self._done: _Read | None = None  # a finished read, not yet applied
        self._not_before = 0.0
        self._lock = threading.Lock()

    def bind(self, processor: Processor) -> None:
        """The processor this ownership steers (built with this object as its source)."""
        self._processor = processor
        processor.partitions = sorted(self.owned)

    @property
    def rebuilding(self) -> bool:
        return self._wanted or self._reading is not None

    # -- Source ---------------------------------------------------------------------------------

    def poll(self, max_records: int, timeout_s: float) -> Sequence[InputRecord]:
        self._tend()
        records = self._source.poll(max_records, timeout_s)
        # Ready once the group has assigned partitions (perhaps none) and they are restored.
        self._require().stats.ready = self._joined and not self.rebuilding
        return records

    def commit(self, positions: Mapping[int, int]) -> None:
        self._source.commit(positions)

    def lag(self) -> dict[int, int]:
        """The source's lag, with partitions being rebuilt counted as behind (their clock waits)."""
        lag = self._source.lag()
        if self.rebuilding:
            for p in self.owned:
                lag[p] = max(lag.get(p, 1), 1)
        return lag

    # -- Fence (tracer.processor) -------------------------------------------------------------

    def lease(self) -> int:
        """The group generation the records polled last were read in (-1: not a member)."""
        return self._source.generation()

    def lapsed(self, lease: int) -> bool:
        """Whether the member has left the generation ``lease`` names: its heartbeat thread leaves
        the group once the poll interval passes without a poll, and hears from the coordinator
        when it was removed (session timeout, a generation gone); a rejoin only happens in a poll,
        so between two polls the generation can only be lost, never replaced."""
        return lease < 0 or self._source.generation() != lease

    def forfeit(self) -> None:
        """Forget every owned partition now (``on_revoked``, called by the source): what the
        engine holds of them is ahead of the store. The group's next assignment is a gain."""
        log.warning("membership of the consumer group lapsed; forgetting partitions %s", sorted(self.owned))
        self._source.forfeit()

    # -- RebalanceListener (called from inside the source's poll, on the polling thread) -------

    def on_revoked(self, partitions: list[int]) -> None:
        proc = self._require()
        self._joined = True
        self.owned -= set(partitions)
        self._generation += 1
        dropped = 0
        with proc.lock:
            for p in partitions:
                dropped += proc.tracer.drop_partition(p)
            proc.clock.revoke(partitions)
            proc.partitions = sorted(self.owned)
        if self._reading is not None:
            self._wanted = True  # the read in flight covers partitions we no longer own
        log.info("partitions %s revoked: %d open orders handed over; now own %s", partitions, dropped, proc.partitions)

    def on_assigned(self, partitions: list[int]) -> None:
        proc = self._require()
        self._joined = True
        self.owned |= set(partitions)
        self._generation += 1
        self._wanted = True
        proc.partitions = sorted(self.owned)
        proc.stats.ready = False
        log.info("partitions %s assigned; rebuilding the open orders of %s from the store", partitions, proc.partitions)

    # -- the rebuild ----------------------------------------------------------------------------

    def _tend(self) -> None:
        """Apply a finished read, or start one; runs at the top of every poll, when everything read
        before has been stored and committed."""
        with self._lock:
            done, self._done = self._done, None
        if done is not None:
            self._reading = None
            self._finish(done)
        if self._wanted and self._reading is None and time.monotonic() >= self._not_before:
            self._wanted = False
            parts = sorted(self.owned)
            self._source.pause(parts)
            read = self._reading = _Read(self._generation, parts)
            threading.Thread(target=self._read, args=(read,), name="ordertrail-restore", daemon=True).start()

    def _read(self, read: _Read) -> None:
        try:
            read.snapshots, read.findings = self._store.open_orders(read.partitions)
        except Exception as exc:  # reported on the polling thread, retried there
            read.error = exc
        with self._lock:
            self._done = read

    def _finish(self, read: _Read) -> None:
        proc = self._require()
        if read.error is not None or read.generation != self._generation:
            if read.error is not None:
                log.error("cannot read the open orders of %s (%s); retrying", read.partitions, read.error)
                self._not_before = time.monotonic() + self._retry_s
            self._wanted = True
            return
        assert read.snapshots is not None and read.findings is not None
        tracer = proc.tracer
        with proc.lock:
            tracer.rewind()
            proc.clock.restart(read.partitions)
            restored = tracer.restore(read.snapshots, read.findings)
            proc.partitions = list(read.partitions)
        proc.restored(read.partitions)  # their first records may be stored already
        self.rebuilds += 1
        proc.stats.restored_orders = restored
        proc.stats.ready = True
        self._source.resume(read.partitions)
        log.info("restored %d open orders of partitions %s; reading on", restored, read.partitions)

    def _require(self) -> Processor:
        if self._processor is None:
            raise RuntimeError("Ownership.bind(processor) must be called before the first poll")
        return self._processor
