"""The bus as the pipeline sees it: records, the key partitioner, and the producer/consumer roles.

Two implementations play these roles with the same guarantees on one machine or many:
``tracer.localbus`` (the embedded durable log, the default) and the Kafka adapter
(``tracer.kafkabus``). The roles
follow Kafka's model so kafka-python fits them without bending:

* a topic has N partitions; a record's partition is ``partition_for(key, N)``, exactly what Kafka's
  default partitioner computes for keyed records (murmur2 of the UTF-8 key, made positive, mod N),
  so a later Kafka deployment places every order in the same partition;
* ``Producer.produce_batch`` returns only when every record of the batch is durable, and records
  of one partition keep the order they were given in;
* a ``Consumer`` reads one topic for one consumer group; positions are "the next offset to read",
  per partition; ``commit`` stores them durably and only ever moves them forward; ``lag`` says how
  many durable records each partition still has to read (0 means caught up);
* partition assignment and revocation are reported to a ``RebalanceListener`` from inside
  ``poll`` / ``close``, on the polling thread, as Kafka clients do.

Rejected records go to ``DEADLETTER_TOPIC`` with the reason in the ``ERROR_HEADER`` header.

This module imports no bus client and no I/O: it is the contract both adapters are built to.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Protocol

import msgspec

from tracer.errors import TracerError

HOPS_TOPIC = "ordertrail.hops"
DEADLETTER_TOPIC = "ordertrail.deadletter"
FINDINGS_TOPIC = "ordertrail.findings"
HOPS_PARTITIONS = 8
ERROR_HEADER = "ordertrail.error"  # why a record was rejected (UTF-8)
SOURCE_HEADER = "ordertrail.source"  # where a dead letter came from: "topic/partition/offset"

Headers = Sequence[tuple[str, bytes]]


class BusError(TracerError):
    """The bus cannot do what was asked: a bad argument, an unusable data directory, a failed write."""


class BusLockedError(BusError):
    """Another process (or another open log in this one) owns the embedded log's data directory."""


class Message(msgspec.Struct, frozen=True, gc=False):
    """A record to produce. ``timestamp_ms`` defaults to the producer's clock at append time."""

    key: str
    value: bytes
    headers: Headers = ()
    timestamp_ms: int | None = None


class Record(msgspec.Struct, frozen=True, gc=False):
    """A record read from the bus, with its place in the log."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str
    value: bytes
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The last value of header ``name``, or None."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


class Producer(Protocol):
    def produce_batch(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        """Append ``messages`` to ``topic``; durable when it returns. Returns (partition, offset)
        for each message, in the order given."""
        ...


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` records across the assigned partitions, in offset order within
        each partition; waits up to ``timeout_s`` for the first one, returns [] if none came."""
        ...

    def commit(self, positions: Mapping[int, int]) -> None:
        """Durably store "next offset to read" per partition for this group. Never moves back."""
        ...

    def lag(self) -> dict[int, int]:
        """Durable records not yet read, per assigned partition (0: caught up)."""
        ...


class RebalanceListener(Protocol):
    def on_assigned(self, partitions: list[int]) -> None: ...
    def on_revoked(self, partitions: list[int]) -> None: ...


# --- the partitioner: Kafka's Utils.murmur2 and toPositive, bit for bit -----------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as a signed 32-bit int."""
    length = len(data)
    h = _SEED ^ length
    words = length >> 2
    if words:
        for k in struct.unpack_from(f"<{words}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            h = ((h * _M) & _MASK) ^ ((k * _M) & _MASK)
    tail = length & 3
    if tail:
        i = words << 2
        if tail == 3:
            h ^= data[i + 2] << 16
        if tail >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - 0x1_0000_0000 if h & 0x8000_0000 else h


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` among ``partitions``."""
    if partitions < 1:
        raise BusError(f"partitions: {partitions} must be at least 1")
    return (murmur2(key.encode()) & 0x7FFF_FFFF) % partitions


class KeyPartitioner:
    """``partition_for`` with a bounded cache: every hop of an order hashes the same key, and
    murmur2 in Python costs a few microseconds."""

    __slots__ = ("_cache", "_cache_size", "partitions")

    def __init__(self, partitions: int, cache_size: int = 65_536) -> None:
        if partitions < 1:
            raise BusError(f"partitions: {partitions} must be at least 1")
        self.partitions = partitions
        self._cache: dict[str, int] = {}
        self._cache_size = cache_size

    def __call__(self, key: str) -> int:
        p = self._cache.get(key)
        if p is None:
            p = (murmur2(key.encode()) & 0x7FFF_FFFF) % self.partitions
            if len(self._cache) >= self._cache_size:
                self._cache.clear()  # bounded; a cold cache only costs hashing
            self._cache[key] = p
        return p


# --- dead letters ------------------------------------------------------------------------------


class InputRecord(Protocol):
    """What a record-handling step needs of a record (``Record`` has it, and so do test doubles)."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes: ...


def dead_letter(record: InputRecord, reason: str, *, topic: str = HOPS_TOPIC) -> Message:
    """The dead-letter message for a rejected record: same key, value and headers, plus the reason
    (``ERROR_HEADER``) and where it came from (``SOURCE_HEADER``)."""
    if isinstance(record, Record):
        key, headers, topic = record.key, list(record.headers), record.topic
    else:
        key, headers = str(getattr(record, "key", "") or ""), []
    headers.append((ERROR_HEADER, reason.encode()))
    headers.append((SOURCE_HEADER, f"{topic}/{record.partition}/{record.offset}".encode()))
    return Message(key, record.value, headers)


class DeadLetters:
    """A dead-letter sink for the processor: ``dead_letters(record, reason)`` produces the record to
    the dead-letter topic, durably, before it returns (so committing past it afterwards is safe)."""

    def __init__(self, producer: Producer, topic: str = DEADLETTER_TOPIC) -> None:
        self._producer = producer
        self.topic = topic
        self.count = 0

    def __call__(self, record: InputRecord, reason: str) -> None:
        self.write([(record, reason)])

    def write(self, rejected: Sequence[tuple[InputRecord, str]]) -> None:
        """Several rejections in one durable append."""
        if rejected:
            self._producer.produce_batch(self.topic, [dead_letter(rec, why) for rec, why in rejected])
            self.count += len(rejected)
