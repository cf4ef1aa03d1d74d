"""The live processor over fakes: commit only after the store, retries, dead letters, the clock
rule (a backlog never raises findings; a caught-up partition fires on wall time), and records read
again after a restore (an order the store holds closed stays closed)."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from tests.tracer.conftest import CHECKOUT, PAYMENT, M, S, complete_then_die, hop_message, web_order
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError
from tracer.fakebus import MemoryBus
from tracer.journeys import parse_journeys
from tracer.memstore import MemStore
from tracer.model import Finding, HopEvent
from tracer.processor import GC_THRESHOLDS, REPLAY_WINDOW_BATCHES, Processor, tune_gc, tuned_gc

JOURNEYS = parse_journeys(
    """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
"""
)
T0 = 1_795_000_000_000


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    value: bytes


@dataclass
class FakeSource:
    records: list[Rec] = field(default_factory=list)
    read: int = 0
    committed: dict[int, int] = field(default_factory=dict)

    def add(self, partition: int, value: bytes) -> None:
        self.records.append(Rec(partition, len(self.records), value))

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Rec]:
        out = self.records[self.read : self.read + max_records]
        self.read += len(out)
        return out

    def commit(self, positions: dict[int, int]) -> None:
        self.committed.update(positions)

    def lag(self) -> dict[int, int]:
        return {0: len(self.records) - self.read}


@dataclass
class FakeSink:
    fail: int = 0
    events: list[HopEvent] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        if self.fail:
            self.fail -= 1
            raise StoreError("store down")
        self.events.extend(events)
        self.findings.extend(findings)

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return [], []

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return []


@dataclass
class FakeDeadLetters:
    reasons: list[str] = field(default_factory=list)

    def write(self, rejected: Sequence[tuple[object, str]]) -> None:
        self.reasons.extend(why for _, why in rejected)


def event(order: str, hop: str, ts: int) -> bytes:
    return f'{{"order_id":"{order}","hop":"{hop}","ts":{ts}}}'.encode()


def make(wall_ms: int = T0) -> tuple[FakeSource, FakeSink, Processor, ManualClock]:
    wall = ManualClock(wall_ms)
    source, sink = FakeSource(), FakeSink()
    clock = PartitionClock(wall, in_flight_ms=0, warmup_ms=0)
    return source, sink, Processor(source, sink, Tracer(JOURNEYS), clock, [0], max_records=2), wall


def test_positions_are_committed_after_the_store_has_the_batch() -> None:
    source, sink, proc, _ = make()
    source.add(0, event("o1", "checkout.placed", T0))
    proc.step()
    assert len(sink.events) == 1 and source.committed == {0: 1}


def test_a_failed_store_write_is_retried_before_reading_more_and_nothing_is_committed() -> None:
    source, sink, proc, _ = make()
    source.add(0, event("o1", "checkout.placed", T0))
    source.add(0, event("o2", "checkout.placed", T0))
    source.add(0, event("o3", "checkout.placed", T0))
    sink.fail = 1
    with pytest.raises(StoreError):
        proc.step()
    assert source.committed == {} and source.read == 2
    proc.step()  # writes the kept batch, then reads the third record
    assert [e.order_id for e in sink.events] == ["o1", "o2", "o3"]
    assert source.committed == {0: 3}


def test_a_bad_record_goes_to_the_dead_letters_and_the_rest_is_processed() -> None:
    source, sink, _, _ = make()
    dead = FakeDeadLetters()
    proc = Processor(source, sink, Tracer(JOURNEYS), PartitionClock(ManualClock(T0)), [0], dead_letter=dead)
    source.add(0, b"{not json")
    source.add(0, event("o1", "checkout.placed", T0))
    proc.step()
    assert len(dead.reasons) == 1 and "body" in dead.reasons[0] and [e.order_id for e in sink.events] == ["o1"]
    assert source.committed == {0: 2}


def test_a_replayed_backlog_raises_no_finding_for_hops_that_arrived_in_it() -> None:
    # The pipeline was down for an hour; the backlog holds the order and its late-but-present payment.
    source, sink, proc, _ = make(wall_ms=T0 + 3_600_000)
    source.add(0, event("o1", "checkout.placed", T0))
    source.add(0, event("o1", "payment.authorized", T0 + 5_000))
    source.add(0, event("o2", "checkout.placed", T0 + 10_000))
    source.add(0, event("o2", "payment.authorized", T0 + 12_000))
    proc.step()
    proc.step()
    assert sink.findings == []


def test_a_backlog_after_a_pause_is_read_in_event_time_even_past_the_advance_interval() -> None:
    # Caught up, then paused for two minutes while orders kept coming: the cycle that reads the
    # backlog must not let wall time move the clock mid-batch (it advances every 4 records here).
    wall = ManualClock(T0)
    source, sink = FakeSource(), FakeSink()
    clock = PartitionClock(wall, in_flight_ms=0, warmup_ms=0)
    proc = Processor(source, sink, Tracer(JOURNEYS), clock, [0], max_records=1000, advance_every=4)
    source.add(0, event("o0", "checkout.placed", T0))
    source.add(0, event("o0", "payment.authorized", T0 + 1_000))
    proc.step()
    wall.advance(120_000)
    for i in range(1, 40):
        source.add(0, event(f"o{i}", "checkout.placed", T0 + i * 3_000))
        source.add(0, event(f"o{i}", "payment.authorized", T0 + i * 3_000 + 1_000))
    proc.step()
    assert sink.findings == [] and proc.stats.cycles == 2


def test_a_caught_up_partition_fires_deadlines_on_wall_time_when_nothing_arrives() -> None:
    source, sink, proc, wall = make()
    source.add(0, event("o1", "checkout.placed", T0))
    proc.step()
    wall.advance(31_000)
    proc.step()
    assert [(f.order_id, f.kind, f.hop) for f in sink.findings] == [("o1", "missing", "payment.authorized")]


def test_listeners_get_findings_after_they_are_stored_and_a_failing_listener_is_contained() -> None:
    source, sink, proc, wall = make()
    seen: list[Finding] = []

    def broken(findings: list[Finding]) -> None:
        raise RuntimeError("boom")

    proc.add_listener(broken)
    proc.add_listener(seen.extend)
    source.add(0, event("o1", "checkout.placed", T0))
    proc.step()
    wall.advance(31_000)
    proc.step()
    assert len(seen) == 1 and seen[0] in sink.findings


@dataclass
class GroupSource(FakeSource):
    """A source in a consumer group (a ``Fence``): a lease per generation; ``leave`` ends it."""

    generation: int = 1
    forfeited: int = 0

    def lease(self) -> int:
        return self.generation

    def lapsed(self, lease: int) -> bool:
        return lease != self.generation

    def forfeit(self) -> None:
        self.forfeited += 1


def test_a_batch_whose_lease_lapsed_before_it_was_stored_is_dropped_uncommitted_and_unheard() -> None:
    wall = ManualClock(T0)
    source, sink = GroupSource(), FakeSink()
    proc = Processor(source, sink, Tracer(JOURNEYS), PartitionClock(wall, in_flight_ms=0, warmup_ms=0), [0])
    seen: list[Finding] = []
    proc.add_listener(seen.extend)
    source.add(0, event("o1", "checkout.placed", T0))
    proc.step()
    wall.advance(31_000)  # o1's payment is missing: a finding, in the batch the store refuses
    sink.fail = 1
    with pytest.raises(StoreError):
        proc.step()
    source.generation = -1  # left the group meanwhile (no poll for the poll interval)
    proc.step()
    assert (proc.stats.fenced, source.forfeited) == (1, 1)
    assert sink.findings == [] and seen == [] and source.committed == {0: 1}
    proc.step()  # the dropped batch is not tried again
    assert sink.findings == [] and proc.stats.fenced == 1


def test_a_source_outside_any_group_is_never_fenced() -> None:
    source, sink, proc, _ = make()
    source.add(0, event("o1", "checkout.placed", T0))
    sink.fail = 1
    with pytest.raises(StoreError):
        proc.step()
    proc.step()
    assert len(sink.events) == 1 and source.committed == {0: 1} and proc.stats.fenced == 0


def test_tune_gc_raises_the_young_generation_threshold_and_keeps_a_higher_one() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.set_threshold(GC_THRESHOLDS[0] * 2, 5, 5)
        tune_gc()
        assert gc.get_threshold() == (GC_THRESHOLDS[0] * 2, 5, 5)
    finally:
        gc.set_threshold(*saved)


def test_tuned_gc_restores_the_thresholds_after_its_block_also_when_it_raises() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        with pytest.raises(RuntimeError), tuned_gc():
            assert gc.get_threshold() == GC_THRESHOLDS
            raise RuntimeError("the replay failed")
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*saved)


# -- records read again after a restore ----------------------------------------------------------


class AskedStore(MemStore):
    """A MemStore that records which orders it was asked about, and can fail to answer."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[list[str]] = []
        self.down = False

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        if self.down:
            raise StoreError("store down")
        self.asked.append(list(order_ids))
        return super().closed_orders(order_ids)


def successor(bus: MemoryBus, store: MemStore, wall: ManualClock, max_records: int = 5000) -> Processor:
    proc = Processor(
        bus.consumer("hops", "g"), store, Tracer(web_order()), PartitionClock(wall, warmup_ms=0), [0],
        max_records=max_records,
    )  # fmt: skip
    proc.restore()
    return proc


def test_an_order_the_last_stored_batch_completed_stays_closed_when_that_batch_is_read_again() -> None:
    """The order's owner stored the batch that completed it and was killed before committing it.
    The successor restores the open orders (not this one) and reads the batch again: the shipment
    must not start a new order that seems to have skipped its confirmation (an `unconfirmed` for
    a confirmation in the order's own trail), nor overwrite the order's stored record."""
    bus, store, wall = MemoryBus({"hops": 1}), MemStore(), ManualClock(T0 + 10 * S)
    complete_then_die(bus, "hops", store, wall, "o1", [0])
    stored = store.order("o1")
    proc = successor(bus, store, wall)
    proc.step()  # the shipment, again
    wall.advance(10 * M)  # past every deadline of the order
    proc.step()
    assert store.findings(status="all", order_id="o1") == []
    after = store.order("o1")
    assert stored is not None and after is not None and after.snapshot == stored.snapshot
    assert [e.event_id for e in after.events] == [e.event_id for e in stored.events]
    assert proc.tracer.order("o1") is None and proc.tracer.stats.after_close == 1
    assert bus.committed("hops", "g") == {0: 5}


@pytest.mark.parametrize("extra", [', "journey": null', ', "journey": "web_order", "attrs": null'])
def test_an_order_stays_closed_when_its_replayed_hops_carry_null_optional_fields(extra: str) -> None:
    """The replay window reads only order_id, hop and journey of a record (``wire.Peek``); a valid
    event with its optional fields null must be read there as it is by the step."""
    bus, store, wall = MemoryBus({"hops": 1}), AskedStore(), ManualClock(T0 + 10 * S)
    complete_then_die(bus, "hops", store, wall, "o1", [0], extra)
    proc = successor(bus, store, wall)
    proc.step()  # the shipment, again
    wall.advance(10 * M)
    proc.step()
    assert store.asked == [["o1"]]
    assert store.findings(status="all", order_id="o1") == []
    assert proc.tracer.order("o1") is None and proc.tracer.stats.after_close == 1


def test_records_read_again_wait_while_the_store_cannot_say_which_orders_are_closed() -> None:
    bus, store, wall = MemoryBus({"hops": 1}), AskedStore(), ManualClock(T0 + 10 * S)
    complete_then_die(bus, "hops", store, wall, "o1", [0])
    proc = successor(bus, store, wall)
    store.down = True
    with pytest.raises(StoreError, match="store down"):
        proc.step()
    assert proc.tracer.stats.events == 0 and bus.committed("hops", "g") == {0: 4}
    store.down = False
    proc.step()  # the records kept, before anything new is read
    wall.advance(10 * M)
    proc.step()
    assert store.asked == [["o1"]] and store.findings(status="all", order_id="o1") == []
    assert proc.tracer.stats.after_close == 1 and bus.committed("hops", "g") == {0: 5}


def test_only_records_that_can_be_replays_are_looked_up_and_only_orders_started_midway() -> None:
    """After a restore, at most the records an owner can have stored past its commit (two batches)
    of a partition not yet caught up are looked at; orders they start at their journey's start
    are new, and orders the engine holds are known."""
    bus, store, wall = MemoryBus({"hops": 1}), AskedStore(), ManualClock(T0 + 10 * S)
    complete_then_die(bus, "hops", store, wall, "o1", [0])
    proc = successor(bus, store, wall, max_records=3)
    window = REPLAY_WINDOW_BATCHES * 3
    bus.produce_batch("hops", [hop_message("new", CHECKOUT, 10 * S), hop_message("new", PAYMENT, 11 * S)])
    bus.produce_batch("hops", [hop_message(f"m{i}", PAYMENT, 12 * S) for i in range(window)])
    while proc.step():
        pass
    # shipped o1, new's checkout and payment, then m0..m2 fill the window (2 batches of 3)
    assert store.asked == [["o1"], ["m0", "m1", "m2"]]
    bus.produce_batch("hops", [hop_message("late", PAYMENT, 13 * S)])
    proc.step()  # caught up before: nothing read now can be a replay
    assert len(store.asked) == 2 and proc.tracer.order("late") is not None
