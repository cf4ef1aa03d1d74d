"""Fencing a stalled tracer over a real Kafka-compatible broker (Tansu) and real chDB: a tracer
that cannot store its batch for longer than the poll interval leaves the group, and then

* when its write fails until then, the batch is dropped unstored and uncommitted, and its
  partitions are rebuilt from the store when the group gives them back (the processor's check);
* when its write hangs past the check and lands late, after a new owner wrote the same orders,
  the store keeps the new owner's rows (the owner epochs in the versions).

The poll interval is short (1.5 s) so that each test takes seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.tansu import Tansu, tansu  # noqa: F401  (the broker fixture)
from tests.tracer.conftest import CHECKOUT, EMAIL, INVENTORY, PAYMENT, SHIPPED, T0, S, web_order
from tracer.bus import Message
from tracer.clickhouse import VERSION_SHIFT, Store
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError, TracerError
from tracer.kafkabus import KafkaBus, KafkaSource
from tracer.model import Finding, HopEvent
from tracer.ownership import Ownership
from tracer.processor import Processor

pytestmark = pytest.mark.integration

ORDER = "o-fenced"
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 300, "max_poll_interval_ms": 1500}


class HeldStore:
    """The processor's sink over a Store: failing while ``down``, hanging while ``hold`` is set
    (inside the write, past the processor's check) until ``release``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.hold = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.late_writes = 0

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        if self.down:
            raise StoreError("store down")
        held = self.hold
        if held:
            self.entered.set()
            self.release.wait(30)
        self.store.write(events, findings, snapshots)
        self.late_writes += held

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return self.store.open_orders(partitions)

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return self.store.closed_orders(order_ids)


class Member:
    """One tracer of the group, stepping on its own thread as a tracer process does."""

    def __init__(self, bus: KafkaBus, topic: str, sink: HeldStore) -> None:
        self.consumer: KafkaSource = bus.consumer(topic, f"{topic}.tracers", hold_new=True, **GROUP_SETTINGS)
        self.ownership = Ownership(self.consumer, sink, retry_s=0.1)
        self.consumer.listener = self.ownership
        clock = PartitionClock(ManualClock(T0 + 5 * S), warmup_ms=0)  # no deadline falls due
        self.proc = Processor(self.ownership, sink, Tracer(web_order()), clock, [], poll_timeout_s=0.05)
        self.ownership.bind(self.proc)
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.proc.step()
            except TracerError:
                time.sleep(0.05)  # retried, as Processor.run does

    def close(self) -> None:
        self.stop.set()
        self._thread.join(30)
        self.consumer.close()


def until(done: Callable[[], Any], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def hop(name: str, at: int) -> Message:
    return Message(ORDER, f'{{"order_id": "{ORDER}", "hop": "{name}", "ts": {T0 + at}}}'.encode())


def hops_stored(store: Store) -> list[str]:
    record = store.order(ORDER)
    return [] if record is None else [e.hop for e in record.events]


@dataclass
class Scene:
    bus: KafkaBus
    topic: str
    first: Member  # the tracer that will stall
    first_sink: HeldStore
    other_store: Store  # a second tracer's, on the same database


@contextmanager
def first_tracer(tansu: Tansu, topic: str, tmp_path: Path) -> Iterator[Scene]:  # noqa: F811
    """A one-partition topic, two stores on one chDB database, and a first tracer that has
    stored an order's checkout."""
    with KafkaBus(tansu.url) as bus:
        bus.ensure_topics({topic: 1})
        url = f"chdb://{tmp_path / 'chdb'}"
        with (
            Store.open(url, database="fence", owner="first") as store,
            Store.open(url, database="fence", owner="other") as other_store,
        ):
            bus.produce_batch(topic, [hop(CHECKOUT, 0)])
            sink = HeldStore(store)
            first = Member(bus, topic, sink)
            try:
                until(lambda: hops_stored(store) == [CHECKOUT], "the checkout stored")
                yield Scene(bus, topic, first, sink, other_store)
            finally:
                sink.release.set()
                first.close()


def test_a_batch_held_past_the_poll_interval_by_a_failing_store_is_dropped_then_read_again(
    tansu: Tansu,  # noqa: F811
    tmp_path: Path,
) -> None:
    with first_tracer(tansu, "fence.check", tmp_path) as scene:
        member, sink, store = scene.first, scene.first_sink, scene.first_sink.store
        sink.down = True
        scene.bus.produce_batch(scene.topic, [hop(PAYMENT, 2 * S)])
        until(lambda: member.proc.stats.fenced == 1, "the held batch dropped once the member left the group")
        assert hops_stored(store) == [CHECKOUT]
        sink.down = False
        # The rejoin gives the partition back: rebuilt from the store, the payment read again.
        until(lambda: hops_stored(store) == [CHECKOUT, PAYMENT], "the payment stored after the rebuild")
        until(lambda: member.consumer.committed() == {0: 2}, "the payment committed")
        assert member.ownership.rebuilds == 2 and member.proc.stats.fenced == 1


def test_a_write_that_lands_after_the_partition_moved_on_loses_to_the_new_owners_rows(
    tansu: Tansu,  # noqa: F811
    tmp_path: Path,
) -> None:
    with first_tracer(tansu, "fence.race", tmp_path) as scene:
        zombie, zombie_sink, zombie_store, owner_store = (
            scene.first,
            scene.first_sink,
            scene.first_sink.store,
            scene.other_store,
        )
        zombie_sink.hold = True
        scene.bus.produce_batch(scene.topic, [hop(PAYMENT, 2 * S)])
        until(zombie_sink.entered.is_set, "the zombie's write to hang")
        until(lambda: zombie.consumer.generation() == -1, "the zombie to leave the group")
        # The rest of the order arrives; the new owner reads it from the committed position
        # (after the checkout) and completes the order.
        scene.bus.produce_batch(scene.topic, [hop(INVENTORY, 3 * S), hop(EMAIL, 3 * S), hop(SHIPPED, 4 * S)])
        owner = Member(scene.bus, scene.topic, HeldStore(owner_store))
        try:
            until(lambda: owner_store.closed_orders([ORDER]) == [ORDER], "the new owner to complete the order")
            assert owner_store.epoch > zombie_store.epoch

            zombie.stop.set()
            zombie_sink.release.set()  # the zombie's batch (the order open after its payment) lands now
            until(lambda: zombie_sink.late_writes == 1, "the late write")
            late = owner_store._rows(
                f"SELECT count() FROM fence.orders WHERE order_id = '{ORDER}' "
                f"AND bitShiftRight(version, {VERSION_SHIFT}) = {zombie_store.epoch} AND `open`"
            )
            assert late[0][0] >= 2  # the checkout's and the late payment's: the write did land
            for store in (zombie_store, owner_store):
                assert store.closed_orders([ORDER]) == [ORDER]
                assert [s.order_id for s in store.open_orders()[0]] == []
                record = store.order(ORDER)
                assert record is not None and record.snapshot is not None and not record.snapshot.open
        finally:
            owner.close()
