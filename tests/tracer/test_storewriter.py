"""The store writer: batch N is written while the processor works on N+1, and delivery is unchanged
(positions committed only after every batch before them is stored, one batch in flight, a failed
batch raised once and written again before anything after it)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from tests.tracer.test_processor import JOURNEYS, T0, FakeSource, event
from tracer.bus import BusError
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError
from tracer.model import Finding, HopEvent
from tracer.processor import Processor
from tracer.storewriter import StoreWriter


@dataclass
class GatedSink:
    """A sink whose writes wait for ``gate`` (set: writes pass) and fail while ``fail`` > 0."""

    gate: threading.Event = field(default_factory=threading.Event)
    fail: int = 0
    batches: list[list[str]] = field(default_factory=list)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        self.entered.release()
        assert self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise StoreError("store down")
        self.batches.append([e.order_id for e in events])

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return [], []

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return list(order_ids)


def ev(order_id: str) -> HopEvent:
    return HopEvent(order_id, "checkout.placed", T0, f"{order_id}/1", "a" * 32)


def started(sink: GatedSink) -> None:
    assert sink.entered.acquire(timeout=10), "the writer thread never called the sink"


def test_write_returns_while_the_batch_is_written_and_its_positions_wait_for_it() -> None:
    sink, source = GatedSink(), FakeSource()
    writer = StoreWriter(sink, source)
    writer.write([ev("o1")], [], [])
    writer.commit({0: 1})
    started(sink)
    assert sink.batches == [] and source.committed == {}  # handed over, not stored: nothing committed
    writer.poll(10, 0)
    assert source.committed == {}
    sink.gate.set()
    writer.flush()
    assert sink.batches == [["o1"]] and source.committed == {0: 1}
    writer.close()


def test_one_batch_in_flight_the_next_write_waits_for_it() -> None:
    sink = GatedSink()
    writer = StoreWriter(sink, FakeSource())
    writer.write([ev("o1")], [], [])
    started(sink)
    second = threading.Thread(target=writer.write, args=([ev("o2")], [], []))
    second.start()
    second.join(0.2)
    assert second.is_alive()  # backpressure: waits for o1
    sink.gate.set()
    second.join(10)
    writer.close()
    assert sink.batches == [["o1"], ["o2"]]


def test_positions_without_a_batch_in_flight_are_committed_at_once() -> None:
    source = FakeSource()
    writer = StoreWriter(GatedSink(), source)
    writer.commit({0: 4})
    assert source.committed == {0: 4}


def test_a_failed_batch_is_raised_once_then_written_again_before_the_next_one() -> None:
    sink, source = GatedSink(fail=2), FakeSource()
    sink.gate.set()
    writer = StoreWriter(sink, source)
    writer.write([ev("o1")], [], [])
    writer.commit({0: 1})
    with pytest.raises(StoreError, match="store down"):
        writer.write([ev("o2")], [], [])  # the processor keeps o2 and tries again later
    assert source.committed == {}
    with pytest.raises(StoreError, match="store down"):
        writer.write([ev("o2")], [], [])  # o1 written again here, and failing again
    writer.write([ev("o2")], [], [])  # o1 stored and committed first, then o2 handed over
    assert source.committed == {0: 1}
    writer.commit({0: 2})
    writer.close()
    assert sink.batches == [["o1"], ["o2"]] and source.committed == {0: 2}


def test_open_and_closed_orders_wait_for_the_batch_in_flight_and_refuse_while_one_failed() -> None:
    sink = GatedSink()
    writer = StoreWriter(sink, FakeSource())
    writer.write([ev("o1")], [], [])
    started(sink)
    threading.Timer(0.05, sink.gate.set).start()
    assert writer.open_orders([0]) == ([], [])
    assert sink.batches == [["o1"]]  # read after the batch was stored
    writer.write([ev("o2")], [], [])
    assert writer.closed_orders(["o1"]) == ["o1"]
    assert sink.batches == [["o1"], ["o2"]]
    sink.fail = 1
    writer.write([ev("o3")], [], [])
    started(sink)
    with pytest.raises(StoreError, match="open orders are read once the failed batch is stored"):
        writer.open_orders([0])
    with pytest.raises(StoreError, match="closed orders are read once the failed batch is stored"):
        writer.closed_orders(["o1"])
    writer.close()  # the final flush writes it once more
    assert sink.batches == [["o1"], ["o2"], ["o3"]]


def test_flush_raises_when_the_failed_batch_fails_again() -> None:
    sink = GatedSink(fail=2)
    sink.gate.set()
    writer = StoreWriter(sink)
    writer.write([ev("o1")], [], [])
    with pytest.raises(StoreError, match="store down"):
        writer.close()
    assert sink.batches == []


def test_an_unexpected_driver_error_is_a_store_error() -> None:
    class Broken(GatedSink):
        def write(self, *batch: Sequence[object]) -> None:
            raise RuntimeError("socket closed")

    writer = StoreWriter(Broken())
    writer.write([ev("o1")], [], [])
    with pytest.raises(StoreError, match="the store failed: socket closed"):
        writer.flush()


def test_the_processor_over_a_writer_commits_only_what_is_stored_through_a_store_outage() -> None:
    sink, source = GatedSink(fail=1), FakeSource()
    sink.gate.set()
    writer = StoreWriter(sink, source)
    proc = Processor(writer, writer, Tracer(JOURNEYS), PartitionClock(ManualClock(T0)), [0], max_records=1)
    for n in range(4):
        source.add(0, event(f"o{n}", "checkout.placed", T0 + n))
    proc.step()  # o0 handed over; its write fails in the background
    with pytest.raises(StoreError):
        proc.step()  # the failure surfaces at the next poll or write
    assert source.committed == {}
    for _ in range(5):
        proc.step()
    writer.close()
    assert sink.batches == [["o0"], ["o1"], ["o2"], ["o3"]] and source.committed == {0: 4}


def test_a_refused_commit_is_kept_for_the_next_call_and_polling_goes_on() -> None:
    class Rebalancing(FakeSource):
        refuse: int = 1

        def commit(self, positions: dict[int, int]) -> None:
            if self.refuse:
                self.refuse -= 1
                raise BusError("RebalanceInProgressError")
            super().commit(positions)

    sink, source = GatedSink(), Rebalancing()
    sink.gate.set()
    writer = StoreWriter(sink, source)
    writer.write([ev("o1")], [], [])
    writer.commit({0: 1})
    writer.write([ev("o2")], [], [])  # o1 stored; its commit refused, not raised
    assert source.committed == {}
    writer.poll(10, 0)  # polls on (the rebalance completes in poll)
    writer.commit({0: 2})
    writer.close()
    assert source.committed == {0: 2}


@dataclass
class PreparingFake(GatedSink):
    """A two-phase sink: records on which thread each half ran."""

    threads: list[tuple[str, str]] = field(default_factory=list)

    def prepare(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> list[str]:
        self.threads.append(("prepare", threading.current_thread().name))
        return [e.order_id for e in events]

    def write_prepared(self, prepared: list[str]) -> None:
        self.threads.append(("insert", threading.current_thread().name))
        self.entered.release()
        assert self.gate.wait(10)
        if self.fail:
            self.fail -= 1
            raise StoreError("store down")
        self.batches.append(prepared)


def test_a_two_phase_sink_prepares_on_the_callers_thread_and_inserts_on_the_writers() -> None:
    sink = PreparingFake()
    sink.gate.set()
    writer = StoreWriter(sink)
    writer.write([ev("o1")], [], [])
    writer.write([ev("o2")], [], [])
    writer.close()
    caller = threading.current_thread().name
    assert sink.batches == [["o1"], ["o2"]]
    assert [t for step, t in sink.threads if step == "prepare"] == [caller, caller]
    assert {t for step, t in sink.threads if step == "insert"} == {"ordertrail-store-writer"}


def test_a_failed_prepared_batch_is_inserted_again_as_prepared() -> None:
    sink = PreparingFake(fail=1)
    sink.gate.set()
    writer = StoreWriter(sink)
    writer.write([ev("o1")], [], [])
    with pytest.raises(StoreError, match="store down"):
        writer.write([ev("o2")], [], [])
    writer.write([ev("o2")], [], [])
    writer.close()
    assert sink.batches == [["o1"], ["o2"]]
    assert [step for step, _ in sink.threads].count("prepare") == 3  # o2 prepared again on its retry
