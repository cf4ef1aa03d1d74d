"""Partition ownership over a fake consumer group: gained partitions wait until their open orders are
rebuilt from the store, revoked ones are forgotten, a rebuilt engine judges gained orders by their
own partition's time, not by the clock the instance had reached, and orders the dead owner closed
stay closed when its last batch is read again."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import pytest

from tests.tracer.conftest import CHECKOUT, PAYMENT, T0, M, S, complete_then_die, web_order
from tests.tracer.conftest import hop as hop_event
from tracer.bus import KeyPartitioner, Message, RebalanceListener, Record
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError
from tracer.fakebus import MemoryBus
from tracer.memstore import MemStore
from tracer.model import MISSING, Finding, HopEvent
from tracer.ownership import Ownership
from tracer.processor import Fence, Processor

TOPIC = "hops"
PARTS = 2
JOURNEYS = web_order()


def order_in(partition: int, prefix: str) -> str:
    part = KeyPartitioner(PARTS)
    return next(f"{prefix}-{i}" for i in range(1000) if part(f"{prefix}-{i}") == partition)


def event(order: str, hop: str, at: int) -> bytes:
    return f'{{"order_id": "{order}", "hop": "{hop}", "ts": {T0 + at}}}'.encode()


class FakeGroup:
    """A group consumer of a MemoryBus topic whose assignment the test moves (``rebalance``)."""

    def __init__(self, bus: MemoryBus) -> None:
        self.bus = bus
        self.listener: RebalanceListener | None = None
        self.assigned: set[int] = set()
        self.paused: set[int] = set()
        self._told: set[int] = set()
        self._next: dict[int, int] = {}
        self._generation = 0
        self._generations = 0

    def rebalance(self, partitions: set[int]) -> None:
        self.paused |= partitions - self.assigned  # held, as KafkaSource(hold_new=True) does
        self.assigned = partitions
        self._generations += 1
        self._generation = self._generations

    def leave(self) -> None:
        """The member left the group (no poll for the poll interval), as its heartbeat thread does."""
        self._generation = -1

    def generation(self) -> int:
        return self._generation

    def forfeit(self) -> None:
        lost, self._told, self.assigned = sorted(self._told), set(), set()
        assert self.listener is not None
        if lost:
            self.listener.on_revoked(lost)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        lost, gained = self._told - self.assigned, self.assigned - self._told
        self._told = set(self.assigned)
        committed = self.bus.committed(TOPIC, "g")
        for p in gained:
            self._next[p] = committed.get(p, 0)
        assert self.listener is not None
        if lost:
            self.listener.on_revoked(sorted(lost))
        if gained:
            self.listener.on_assigned(sorted(gained))
        out: list[Record] = []
        for p in sorted(self.assigned - self.paused):
            taken = self.bus.records(TOPIC, p)[self._next[p] : self._next[p] + max_records]
            self._next[p] += len(taken)
            out.extend(taken)
        return out

    def commit(self, positions: Mapping[int, int]) -> None:
        self.bus.consumer(TOPIC, "g").commit({p: o for p, o in positions.items() if p in self.assigned})

    def lag(self) -> dict[int, int]:
        return {p: len(self.bus.records(TOPIC, p)) - self._next[p] for p in self._told}

    def pause(self, partitions: Sequence[int]) -> None:
        self.paused |= set(partitions) & self.assigned

    def resume(self, partitions: Sequence[int]) -> None:
        self.paused -= set(partitions)


class FlakyStore(MemStore):
    """A store whose writes fail while it is down."""

    down = False

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        if self.down:
            raise StoreError("store down")
        super().write(events, findings, snapshots)


def make(wall: ManualClock) -> tuple[MemoryBus, FakeGroup, FlakyStore, Processor, Ownership]:
    bus = MemoryBus({TOPIC: PARTS})
    group = FakeGroup(bus)
    store = FlakyStore()
    ownership = Ownership(group, store)
    group.listener = ownership
    proc = Processor(ownership, store, Tracer(JOURNEYS), PartitionClock(wall, warmup_ms=0), [])
    ownership.bind(proc)
    return bus, group, store, proc, ownership


def step_until_rebuilt(proc: Processor, ownership: Ownership) -> None:
    deadline = time.monotonic() + 10
    proc.step()  # hears of the new assignment
    while ownership.rebuilding:
        proc.step()
        assert time.monotonic() < deadline, "the rebuild did not finish"
        time.sleep(0.01)


def test_gained_partitions_wait_for_their_open_orders_from_the_store_then_read_on() -> None:
    wall = ManualClock(T0 + 5 * S)
    bus, group, store, proc, ownership = make(wall)
    mine = order_in(1, "o")
    # Another instance owned partition 1: it stored the order and committed past its first hop.
    other = Processor(bus.consumer(TOPIC, "g"), store, Tracer(JOURNEYS), PartitionClock(wall, warmup_ms=0), [0, 1])
    bus.produce_batch(TOPIC, [Message(mine, event(mine, CHECKOUT, 0))])
    other.step()
    bus.produce_batch(TOPIC, [Message(mine, event(mine, PAYMENT, 2 * S))])  # not read by the other

    group.rebalance({0, 1})
    proc.step()  # told of the assignment; partitions held
    assert group.paused == {0, 1} and proc.tracer.order(mine) is None and not proc.stats.ready
    step_until_rebuilt(proc, ownership)
    assert proc.partitions == [0, 1] and proc.stats.restored_orders == 1 and proc.stats.ready
    assert group.paused == set()
    proc.step()  # reads on from the committed position: the payment
    state = proc.tracer.order(mine)
    assert state is not None and state.seen == 0b11


def test_revoked_partitions_are_forgotten_and_not_committed() -> None:
    wall = ManualClock(T0)
    bus, group, _, proc, ownership = make(wall)
    keep, give = order_in(0, "k"), order_in(1, "g")
    group.rebalance({0, 1})
    step_until_rebuilt(proc, ownership)
    bus.produce_batch(TOPIC, [Message(keep, event(keep, CHECKOUT, 0)), Message(give, event(give, CHECKOUT, 0))])
    proc.step()
    assert proc.tracer.order(give) is not None

    group.rebalance({0})
    proc.step()
    assert proc.partitions == [0] and proc.tracer.order(give) is None and proc.tracer.order(keep) is not None
    assert not ownership.rebuilding  # losing partitions needs no rebuild


def test_a_batch_is_dropped_unstored_when_the_member_left_the_group_while_the_store_was_down() -> None:
    """The store was down longer than the poll interval: the member left the group meanwhile and
    its partitions moved on. The batch it holds must not be stored or committed when the store
    comes back (the new owner reads those records again), and what the engine holds of the
    partitions, ahead of the store, is forgotten until the group assigns them again."""
    wall = ManualClock(T0)
    bus, group, store, proc, ownership = make(wall)
    mine = order_in(1, "o")
    group.rebalance({0, 1})
    step_until_rebuilt(proc, ownership)
    bus.produce_batch(TOPIC, [Message(mine, event(mine, CHECKOUT, 0))])
    proc.step()
    bus.produce_batch(TOPIC, [Message(mine, event(mine, PAYMENT, 2 * S))])
    store.down = True
    with pytest.raises(StoreError):
        proc.step()  # read under the generation; not stored
    with pytest.raises(StoreError):
        proc.step()  # retried while still a member: not fenced
    assert proc.stats.fenced == 0

    group.leave()
    store.down = False
    proc.step()
    assert proc.stats.fenced == 1
    assert hops_stored(store, mine) == [CHECKOUT]
    assert bus.committed(TOPIC, "g") == {1: 1}
    assert proc.partitions == [] and proc.tracer.order(mine) is None and ownership.owned == set()

    group.rebalance({0, 1})  # the rejoin gives them back: rebuilt, read again from the committed position
    step_until_rebuilt(proc, ownership)
    proc.step()
    state = proc.tracer.order(mine)
    assert state is not None and state.seen == 0b11
    assert hops_stored(store, mine) == [CHECKOUT, PAYMENT]
    assert bus.committed(TOPIC, "g") == {1: 2}


def test_a_batch_read_in_a_generation_that_lasts_is_stored_though_the_group_rebalanced_before() -> None:
    wall = ManualClock(T0)
    bus, group, store, proc, ownership = make(wall)
    mine = order_in(0, "o")
    group.rebalance({0})
    step_until_rebuilt(proc, ownership)
    group.rebalance({0, 1})  # a new generation, heard at the next poll
    step_until_rebuilt(proc, ownership)
    bus.produce_batch(TOPIC, [Message(mine, event(mine, CHECKOUT, 0))])
    proc.step()
    assert proc.stats.fenced == 0 and hops_stored(store, mine) == [CHECKOUT]


def test_ownership_is_the_fence_of_the_processor_it_steers() -> None:
    _, _, _, _, ownership = make(ManualClock(T0))
    assert isinstance(ownership, Fence)  # the processor fences a source that is one


def hops_stored(store: MemStore, order_id: str) -> list[str]:
    record = store.order(order_id)
    return [] if record is None else [e.hop for e in record.events]


def test_a_taken_over_backlog_is_judged_by_its_own_time_not_the_clock_already_reached() -> None:
    """The owner of partition 1 died right after an order's checkout; its payment came 2 s later and
    waits in the backlog. This instance's clock is long past the payment deadline (30 s), from
    partition 0. Taking partition 1 over must not report the payment missing."""
    wall = ManualClock(T0)
    bus, group, store, proc, ownership = make(wall)
    late = order_in(1, "late")
    other = Processor(bus.consumer(TOPIC, "g"), store, Tracer(JOURNEYS), PartitionClock(wall, warmup_ms=0), [0, 1])
    bus.produce_batch(TOPIC, [Message(late, event(late, CHECKOUT, 0))])
    other.step()
    bus.produce_batch(TOPIC, [Message(late, event(late, PAYMENT, 2 * S))])

    group.rebalance({0})
    step_until_rebuilt(proc, ownership)
    wall.advance(120 * S)  # partition 0 is caught up: our clock follows the wall, 2 minutes on
    proc.step()
    assert proc.clock.now() is not None and proc.clock.now() > T0 + 100 * S

    group.rebalance({0, 1})
    step_until_rebuilt(proc, ownership)
    for _ in range(3):
        proc.step()
    found = store.findings(status="all", order_id=late)
    assert [f for f in found if f.kind == MISSING and f.hop == PAYMENT] == []
    state = proc.tracer.order(late)
    assert state is not None and state.seen == 0b11


def test_an_order_closed_by_the_dead_owners_uncommitted_batch_stays_closed_after_the_takeover() -> None:
    """The owner of partition 1 stored the batch that completed an order, then was killed before
    committing it (the kill -9 of the Kafka scale-out test). Taking partition 1 over reads that
    batch again: the shipment must not reopen the order as one that skipped its confirmation."""
    wall = ManualClock(T0 + 10 * S)
    bus, group, store, proc, ownership = make(wall)
    done = order_in(1, "done")
    complete_then_die(bus, TOPIC, store, wall, done, [0, 1])

    group.rebalance({0, 1})
    step_until_rebuilt(proc, ownership)
    proc.step()  # the shipment, again
    wall.advance(10 * M)
    proc.step()
    assert store.findings(status="all", order_id=done) == []
    assert proc.tracer.order(done) is None and proc.tracer.stats.after_close == 1


def test_rewind_forgets_every_order_and_the_time_but_keeps_what_was_learned() -> None:
    tracer = Tracer(JOURNEYS)
    tracer.advance(T0 + 60 * S)
    tracer.on_event(hop_event("a", CHECKOUT, 0), 0)
    tracer.on_event(hop_event("b", CHECKOUT, 0), 1)
    tracer.on_event(hop_event("b", PAYMENT, 2 * S), 1)
    assert tracer.rewind() == 2
    assert len(tracer) == 0 and tracer.stats.events == 3
    tracer.advance(T0)  # time may start lower again
    assert tracer.now == T0


def test_a_restarted_clock_owns_only_its_new_partitions_and_waits_for_them() -> None:
    wall = ManualClock(T0 + 10 * S)
    clock = PartitionClock(wall, warmup_ms=0)
    clock.assign([0])
    clock.observe(0, T0 + 9 * S)
    assert clock.now() == T0 + 9 * S
    clock.restart([1, 2])
    assert clock.now() is None  # neither new partition read yet
    clock.observe(1, T0 + 2 * S)
    clock.observe(2, T0 + 3 * S)
    assert clock.now() == T0 + 2 * S  # lower than before the restart
