"""The bus contract (tracer.bus), held by both the embedded log and the in-memory fake: Kafka's
partitioner, round trip, order per key, committed positions, lag, wake-up, rebalance callbacks,
dead letters — and the live processor running over either unchanged."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.tracer.conftest import T0, web_order
from tracer.bus import (
    DEADLETTER_TOPIC,
    ERROR_HEADER,
    HOPS_TOPIC,
    SOURCE_HEADER,
    BusError,
    DeadLetters,
    KeyPartitioner,
    Message,
    Record,
    murmur2,
    partition_for,
)
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import OrderSnapshot, Tracer
from tracer.fakebus import MemoryBus
from tracer.localbus import LocalBus
from tracer.model import Finding, HopEvent
from tracer.processor import Processor

# --- the partitioner ----------------------------------------------------------------------------

# Apache Kafka, clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java, testMurmur2
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# kafka-python, test/test_partitioner.py, test_murmur2_java_compatibility (1000 partitions)
KAFKA_PYTHON_PARTITIONS = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}


@pytest.mark.parametrize(("data", "expected"), JAVA_MURMUR2.items())
def test_murmur2_matches_the_java_client(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "expected"), KAFKA_PYTHON_PARTITIONS.items())
def test_partition_matches_kafkas_default_partitioner_for_known_keys(data: bytes, expected: int) -> None:
    assert partition_for(data.decode(), 1000) == expected


def test_partition_matches_kafka_python_for_random_order_ids() -> None:
    kafka_murmur2 = pytest.importorskip("kafka.partitioner.default").murmur2
    rng = random.Random(7)
    for _ in range(2000):
        key = "".join(rng.choice("abcdefXYZ0123456789-_é€") for _ in range(rng.randrange(0, 40)))
        assert partition_for(key, 8) == (kafka_murmur2(key.encode()) & 0x7FFFFFFF) % 8


def test_the_cached_partitioner_agrees_with_partition_for_and_stays_bounded() -> None:
    partitioner = KeyPartitioner(8, cache_size=10)
    keys = [f"order-{i}" for i in range(50)]
    assert [partitioner(k) for k in keys + keys] == [partition_for(k, 8) for k in keys + keys]
    assert len(partitioner._cache) <= 10


def test_a_partition_count_below_one_is_refused() -> None:
    with pytest.raises(BusError, match="partitions: 0"):
        KeyPartitioner(0)


# --- the contract, over both implementations ------------------------------------------------------


@pytest.fixture(params=["memory", "local"])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryBus({HOPS_TOPIC: 8, DEADLETTER_TOPIC: 1})
    else:
        local = LocalBus(tmp_path / "bus")
        yield local
        local.close()


def drain(consumer: Any, limit: int = 10_000) -> list[Record]:
    out: list[Record] = []
    while batch := consumer.poll(limit, 0.0):
        out.extend(batch)
    return out


def test_records_come_back_with_key_value_headers_time_and_their_partition(bus: Any) -> None:
    headers = [("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    acks = bus.produce_batch(HOPS_TOPIC, [Message("o-1", b'{"a":1}', headers, 1234), Message("o-2", b"{}")])
    consumer = bus.consumer(HOPS_TOPIC, "g")
    records = {r.key: r for r in drain(consumer)}
    consumer.close()
    first = records["o-1"]
    assert (first.topic, first.value, list(first.headers), first.timestamp_ms) == (
        HOPS_TOPIC,
        b'{"a":1}',
        headers,
        1234,
    )
    assert first.header("traceparent") == headers[0][1]
    assert [(r.partition, r.offset) for r in (records["o-1"], records["o-2"])] == acks
    assert acks[0][0] == partition_for("o-1", 8) and acks[1][0] == partition_for("o-2", 8)


def test_records_of_one_key_keep_their_order_across_batches(bus: Any) -> None:
    keys = [f"order-{i}" for i in range(20)]
    for batch in range(5):
        bus.produce_batch(HOPS_TOPIC, [Message(k, f"{batch}:{n}".encode()) for n, k in enumerate(keys * 3)])
    consumer = bus.consumer(HOPS_TOPIC, "g")
    seen: dict[str, list[tuple[int, int]]] = {}
    for r in drain(consumer, limit=37):
        batch, n = r.value.decode().split(":")
        seen.setdefault(r.key, []).append((int(batch), int(n)))
    consumer.close()
    assert sorted(seen) == sorted(keys)
    assert all(trail == sorted(trail) and len(trail) == 15 for trail in seen.values())


def test_commit_only_moves_forward_and_a_new_consumer_starts_there(bus: Any) -> None:
    acks = bus.produce_batch(HOPS_TOPIC, [Message("same-key", str(i).encode()) for i in range(10)])
    partition = acks[0][0]
    consumer = bus.consumer(HOPS_TOPIC, "g")
    drain(consumer)
    consumer.commit({partition: 7})
    consumer.commit({partition: 3})
    assert consumer.committed()[partition] == 7
    consumer.close()
    again = bus.consumer(HOPS_TOPIC, "g")
    assert [r.value for r in drain(again)] == [b"7", b"8", b"9"]
    again.close()


def test_a_commit_past_the_end_of_the_log_is_refused(bus: Any) -> None:
    consumer = bus.consumer(HOPS_TOPIC, "g")
    with pytest.raises(BusError, match="outside"):
        consumer.commit({0: 5})
    consumer.close()


def test_lag_counts_what_is_left_and_is_zero_when_caught_up(bus: Any) -> None:
    acks = bus.produce_batch(HOPS_TOPIC, [Message("k", b"x")] * 5)
    partition = acks[0][0]
    consumer = bus.consumer(HOPS_TOPIC, "g")
    assert consumer.lag()[partition] == 5
    consumer.poll(2, 0.0)
    assert consumer.lag()[partition] == 3 and consumer.position()[partition] == 2
    drain(consumer)
    assert set(consumer.lag().values()) == {0}
    assert consumer.end_offsets()[partition] == 5
    consumer.close()


def test_poll_returns_nothing_after_its_timeout_when_nothing_arrives(bus: Any) -> None:
    consumer = bus.consumer(HOPS_TOPIC, "g")
    started = time.monotonic()
    assert consumer.poll(10, 0.05) == []
    assert 0.04 <= time.monotonic() - started < 1.0
    consumer.close()


def test_a_waiting_poll_wakes_when_another_thread_produces(bus: Any) -> None:
    consumer = bus.consumer(HOPS_TOPIC, "g")
    got: list[Record] = []
    done = threading.Event()

    def wait() -> None:
        got.extend(consumer.poll(10, 5.0))
        done.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    bus.produce_batch(HOPS_TOPIC, [Message("k", b"x")])
    acked = time.monotonic()
    assert done.wait(5.0)
    woke_after_ack = time.monotonic() - acked
    thread.join()
    consumer.close()
    assert [r.value for r in got] == [b"x"] and woke_after_ack < 0.05


def test_wakeup_ends_a_waiting_poll(bus: Any) -> None:
    consumer = bus.consumer(HOPS_TOPIC, "g")
    threading.Timer(0.05, consumer.wakeup).start()
    started = time.monotonic()
    assert consumer.poll(10, 5.0) == []
    assert time.monotonic() - started < 2.0
    consumer.close()


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    def on_assigned(self, partitions: list[int]) -> None:
        self.calls.append(("assigned", partitions))

    def on_revoked(self, partitions: list[int]) -> None:
        self.calls.append(("revoked", partitions))


def test_assignment_is_reported_from_the_first_poll_and_revocation_from_close(bus: Any) -> None:
    listener = Listener()
    consumer = bus.consumer(HOPS_TOPIC, "g", listener=listener)
    assert listener.calls == []
    consumer.poll(1, 0.0)
    consumer.close()
    assert listener.calls == [("assigned", list(range(8))), ("revoked", list(range(8)))]


def test_an_unknown_topic_is_refused_with_the_known_ones(bus: Any) -> None:
    with pytest.raises(BusError, match=r"ordertrail\.hopz.*ordertrail\.hops"):
        bus.produce_batch("ordertrail.hopz", [Message("k", b"x")])


def test_a_value_that_is_not_bytes_is_refused(bus: Any) -> None:
    with pytest.raises(BusError, match="must be bytes"):
        bus.produce_batch(HOPS_TOPIC, [Message("k", "text")])  # type: ignore[arg-type]


def test_dead_letters_keep_the_record_and_carry_the_reason_and_source(bus: Any) -> None:
    bus.produce_batch(HOPS_TOPIC, [Message("o-9", b"{bad", [("traceparent", b"tp")])])
    consumer = bus.consumer(HOPS_TOPIC, "g")
    (rejected,) = drain(consumer)
    consumer.close()
    dead_letters = DeadLetters(bus)
    dead_letters(rejected, "value: not JSON")
    reader = bus.consumer(DEADLETTER_TOPIC, "inspect")
    (letter,) = drain(reader)
    reader.close()
    assert (letter.key, letter.value, letter.header("traceparent")) == ("o-9", b"{bad", b"tp")
    assert letter.header(ERROR_HEADER) == b"value: not JSON"
    assert letter.header(SOURCE_HEADER) == f"{HOPS_TOPIC}/{rejected.partition}/{rejected.offset}".encode()
    assert dead_letters.count == 1


# --- the processor runs over either bus unchanged -----------------------------------------------


class ListSink:
    def __init__(self) -> None:
        self.events: list[HopEvent] = []
        self.findings: list[Finding] = []

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        self.events.extend(events)
        self.findings.extend(findings)

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return [], []

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return []


def hop(order: str, name: str, ts: int) -> Message:
    return Message(order, msgspec.json.encode({"order_id": order, "hop": name, "ts": ts}))


def test_the_processor_reads_commits_and_dead_letters_over_the_bus(bus: Any) -> None:
    wall = ManualClock(T0)
    bus.produce_batch(HOPS_TOPIC, [hop("o1", "checkout.placed", T0), Message("o2", b"{not json"), hop("o3", "x", T0)])
    consumer = bus.consumer(HOPS_TOPIC, "tracer")
    sink = ListSink()
    clock = PartitionClock(wall, in_flight_ms=0, warmup_ms=0)
    processor = Processor(consumer, sink, Tracer(web_order()), clock, range(8), dead_letter=DeadLetters(bus))
    processor.step()
    wall.advance(31_000)
    processor.step()
    assert sorted(e.order_id for e in sink.events) == ["o1", "o3"]
    assert [(f.order_id, f.kind) for f in sink.findings] == [("o1", "missing")]
    assert sum(consumer.committed().values()) == 3
    reader = bus.consumer(DEADLETTER_TOPIC, "inspect")
    assert [r.key for r in drain(reader)] == ["o2"]
    reader.close()
    consumer.close()
