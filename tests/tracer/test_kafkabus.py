"""The Kafka adapter against a real Kafka-compatible broker (Tansu on loopback): records placed by
Kafka's partitioner with their headers, positions committed only forward by the caller, lag, and a
group of two members splitting the partitions, new ones held until resumed; and records read by
``tracer.kafkawire`` (the consumer's fast path) exactly as they were produced."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.tansu import GROUP_TIMEOUTS, Tansu, tansu  # noqa: F401  (the broker fixture)
from tracer import kafkabus, kafkawire
from tracer.bus import HOPS_PARTITIONS, HOPS_TOPIC, BusError, Message, Record, partition_for
from tracer.kafkabus import KafkaBus, KafkaSource, _FastPartitionRecords, bootstrap_servers


@pytest.mark.parametrize("url", ["kafka://", "kafka://broker", "http://broker:9092", "kafka://b:1,c:99999"])
def test_an_unusable_bus_url_is_refused_naming_it(url: str) -> None:
    with pytest.raises(BusError, match="must be"):
        bootstrap_servers(url)


def test_several_brokers_may_be_given() -> None:
    assert bootstrap_servers("kafka://k1:9092,k2:9093") == ["k1:9092", "k2:9093"]


def poll_until(source: KafkaSource, done: Callable[[list[Record]], bool], timeout_s: float = 30) -> list[Record]:
    got: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, f"timed out with {len(got)} records"
        got.extend(source.poll(500, 0.2))
    return got


def keep_polling(source: KafkaSource, stop: threading.Event) -> None:
    while not stop.is_set():
        source.poll(100, 0.1)


class Heard:
    def __init__(self) -> None:
        self.assigned: list[list[int]] = []
        self.revoked: list[list[int]] = []

    def on_assigned(self, partitions: list[int]) -> None:
        self.assigned.append(partitions)

    def on_revoked(self, partitions: list[int]) -> None:
        self.revoked.append(partitions)


@pytest.mark.integration
def test_records_go_where_kafkas_partitioner_puts_them_and_come_back_with_their_headers(tansu: Tansu) -> None:  # noqa: F811
    with KafkaBus(tansu.url) as bus:
        bus.ensure_topics()
        bus.ensure_topics()  # existing topics are left alone
        assert bus.partitions(HOPS_TOPIC) == list(range(HOPS_PARTITIONS))
        messages = [Message(f"order-{i}", b'{"i": %d}' % i, [("traceparent", b"00-x")]) for i in range(50)]
        placed = bus.produce_batch(HOPS_TOPIC, messages)
        assert [p for p, _ in placed] == [partition_for(m.key, HOPS_PARTITIONS) for m in messages]
        source = bus.consumer(HOPS_TOPIC, "g-roundtrip", **GROUP_TIMEOUTS)
        try:
            records = poll_until(source, lambda got: len(got) >= 50)
            by_key = {r.key: r for r in records}
            assert by_key["order-7"].value == b'{"i": 7}'
            assert by_key["order-7"].header("traceparent") == b"00-x"
            assert (by_key["order-7"].partition, by_key["order-7"].offset) == placed[7]
            poll_until(source, lambda _: all(v == 0 for v in source.lag().values()))
            ends = {p: o + 1 for p, o in placed}
            source.commit(ends)
            assert source.committed() == ends
        finally:
            source.close()


@pytest.mark.integration
def test_a_second_member_takes_half_the_partitions_and_new_ones_wait_until_resumed(tansu: Tansu) -> None:  # noqa: F811
    with KafkaBus(tansu.url) as bus:
        bus.ensure_topics()
        heard_a, heard_b = Heard(), Heard()
        a = bus.consumer(HOPS_TOPIC, "g-split", listener=heard_a, hold_new=True, **GROUP_TIMEOUTS)
        b = None
        try:
            poll_until(a, lambda _: bool(heard_a.assigned))
            assert heard_a.assigned == [list(range(HOPS_PARTITIONS))]
            bus.produce_batch(HOPS_TOPIC, [Message(f"held-{i}", b"{}") for i in range(20)])
            assert poll_until(a, lambda _: True) == [] and a.held() == list(range(HOPS_PARTITIONS))
            assert all(v >= 1 for v in a.lag().values())  # held partitions are behind
            a.resume(list(range(HOPS_PARTITIONS)))
            assert len(poll_until(a, lambda got: len(got) >= 20)) >= 20

            b = bus.consumer(HOPS_TOPIC, "g-split", listener=heard_b, **GROUP_TIMEOUTS)
            # Each member polls on its own thread, as separate processes would: a group join
            # waits for every member, so members polled in turn by one thread keep it waiting.
            settled = threading.Event()
            polling = [threading.Thread(target=keep_polling, args=(member, settled), daemon=True) for member in (a, b)]
            for thread in polling:
                thread.start()
            deadline = time.monotonic() + 40
            while not (heard_b.assigned and heard_a.revoked) and time.monotonic() < deadline:
                time.sleep(0.1)
            settled.set()
            for thread in polling:
                thread.join(5)
            assert heard_b.assigned and heard_a.revoked, (heard_a.__dict__, heard_b.__dict__)
            assert sorted(a.assignment() + b.assignment()) == list(range(HOPS_PARTITIONS))
            assert len(a.assignment()) == len(b.assignment()) == HOPS_PARTITIONS // 2
            assert heard_a.revoked == [b.assignment()]
        finally:
            a.close()
            if b is not None:
                b.close()


@pytest.mark.integration
def test_a_consumer_reads_through_kafkawire_and_gets_keys_values_and_headers_back_exactly(
    tansu: Tansu,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_by_kafkawire: list[int] = []
    codecs: set[int] = set()

    def parse_log(buf: bytes, *args: Any) -> kafkawire.Parsed:
        got = kafkawire.parse_log(buf, *args)
        read_by_kafkawire.append(len(got.records))
        if len(buf) > kafkawire.HEADER:
            codecs.add(buf[22] & 0x07)  # the first batch's compression (low bits of its attributes)
        return got

    monkeypatch.setattr(kafkabus, "parse_log", parse_log)  # counts what the fast path reads
    topic = "wire.roundtrip"
    messages = [
        Message(
            "ordre-é-東京-🚚", b'{"hop": "checkout.placed"}', [("traceparent", b"00-" + b"a" * 32), ("empty", b"")]
        ),
        Message("", b"", []),
        Message("big", bytes(range(256)) * 400, [("n", b"1"), ("n", b"2"), ("ключ", b"\x00\xff")]),  # 100 KiB
        *(Message(f"order-{i}", b'{"i": %d}' % i, [("i", b"%d" % i)]) for i in range(40)),
    ]
    with KafkaBus(tansu.url) as bus:  # its producer writes lz4
        bus.ensure_topics({topic: 2})
        placed = bus.produce_batch(topic, messages)
        source = bus.consumer(topic, "g-wire", **GROUP_TIMEOUTS)
        try:
            assert source._consumer._fetcher.PartitionRecords is _FastPartitionRecords
            records = poll_until(source, lambda got: len(got) >= len(messages))
        finally:
            source.close()
    assert sorted((r.partition, r.offset) for r in records) == sorted(placed)
    by_place = {(r.partition, r.offset): r for r in records}
    for message, place in zip(messages, placed, strict=True):
        got = by_place[place]
        assert (got.key, got.value, list(got.headers)) == (message.key, message.value, list(message.headers))
    assert sum(read_by_kafkawire) >= len(messages)
    assert codecs == {3}  # lz4, as produced


@pytest.mark.integration
@pytest.mark.parametrize(("codec", "bits"), [("gzip", 1), ("snappy", 2), ("zstd", 4), (None, 0)])
def test_a_topic_another_producer_compressed_with_any_codec_is_read_through_kafkawire(
    tansu: Tansu,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    codec: str | None,
    bits: int,
) -> None:
    """Producers outside ordertrail choose their own codec: each of Kafka's is read by the fast
    path (through kafka-python's codecs: zstandard and python-snappy are dependencies)."""
    from kafka import KafkaProducer

    codecs: set[int] = set()

    def parse_log(buf: bytes, *args: Any) -> kafkawire.Parsed:
        if len(buf) > kafkawire.HEADER:
            codecs.add(buf[22] & 0x07)
        return kafkawire.parse_log(buf, *args)

    monkeypatch.setattr(kafkabus, "parse_log", parse_log)
    topic = f"wire.codec.{codec}"
    sent = [(f"order-{i}".encode(), b'{"i": %d, "pad": "%s"}' % (i, b"x" * (i % 50))) for i in range(200)]
    with KafkaBus(tansu.url) as bus:
        bus.ensure_topics({topic: 1})
        producer = KafkaProducer(bootstrap_servers=tansu.bootstrap, compression_type=codec, linger_ms=50)
        try:
            for key, value in sent:
                producer.send(topic, key=key, value=value, headers=[("h", key)])
            producer.flush(timeout=30)
        finally:
            producer.close()
        source = bus.consumer(topic, f"g-{codec}", **GROUP_TIMEOUTS)
        try:
            records = poll_until(source, lambda got: len(got) >= len(sent))
        finally:
            source.close()
    assert [(r.key.encode(), r.value, list(r.headers)) for r in sorted(records, key=lambda r: r.offset)] == [
        (key, value, [("h", key)]) for key, value in sent
    ]
    assert codecs == {bits}
