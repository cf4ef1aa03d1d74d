"""The Kafka adapter: the ``tracer.bus`` roles over kafka-python, for ``--bus kafka://host:port``.

This is the only module that imports the Kafka client. It keeps the promises of ``tracer.bus``:

* ``KafkaBus.produce_batch`` returns once every record is acknowledged by all in-sync replicas
  (``acks=all``) from an idempotent producer (``enable_idempotence=True``, so a retried send is
  never written twice), lz4-compressed. The partition is ``partition_for(key, n)``, the Kafka
  default partitioner, computed here so the embedded log and Kafka place every order alike.
* ``KafkaSource`` reads one topic in one consumer group with auto-commit off: ``commit`` is the
  caller's, after it has stored what it derived. A commit the group refuses because it moved on
  (a rebalance) is logged, not raised: the new owner reads those records again, and the effects
  are idempotent (at-least-once).
* Rebalances: kafka-python calls its listener on its IO thread, the one that sends heartbeats.
  That callback only notes the new assignment and, with ``hold_new=True``, pauses the newly
  assigned partitions before anything is fetched from them; the ``RebalanceListener`` is then told
  of partitions lost and gained on the polling thread, inside ``poll``, as ``tracer.bus`` says.
  Held partitions yield nothing until ``resume`` — the time to restore their state from the
  store, while ``poll`` keeps the member alive in the group. From a revocation until the next
  assignment every owned partition reports lag (see ``lag``); a member evicted from the group
  (partitions lost, not revoked) treats whatever it is given back as new.
* Fencing: ``generation`` is the member's group generation as kafka-python's coordinator knows it
  now (its heartbeat thread resets it to -1 when it leaves the group after the poll interval, or
  learns it was removed), and ``forfeit`` tells the listener at once that every owned partition is
  lost, as an eviction would at the next poll (``tracer.ownership``).

Connection settings come from the URL (``kafka://host:port[,host:port...]``); anything else
kafka-python accepts can be passed through ``producer_config`` / ``consumer_config``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

import kafka.codec as codecs
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import __version__ as kafka_version
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import Fetcher
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, CorruptRecordError, KafkaError, TopicAlreadyExistsError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import calc_crc32c
from kafka.structs import OffsetAndMetadata

from tracer.bus import (
    DEADLETTER_TOPIC,
    FINDINGS_TOPIC,
    HOPS_PARTITIONS,
    HOPS_TOPIC,
    BusError,
    KeyPartitioner,
    Message,
    RebalanceListener,
    Record,
)
from tracer.kafkawire import all_records, has_legacy, parse_log

log = logging.getLogger("ordertrail.kafka")

# Topic name -> partitions, created when missing (a deployment may create them itself, larger).
DEFAULT_TOPICS: Final = {HOPS_TOPIC: HOPS_PARTITIONS, DEADLETTER_TOPIC: 1, FINDINGS_TOPIC: HOPS_PARTITIONS}

PRODUCER_DEFAULTS: Final[dict[str, Any]] = {
    "enable_idempotence": True,  # explicit: a retried batch is written once
    "acks": "all",
    "compression_type": "lz4",
    "linger_ms": 5,
    "max_in_flight_requests_per_connection": 5,  # the most idempotence keeps in order
    "batch_size": 256 * 1024,
}
CONSUMER_DEFAULTS: Final[dict[str, Any]] = {
    "enable_auto_commit": False,  # positions are committed after the store has the batch
    "auto_offset_reset": "earliest",
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
}


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://host:port[,host:port...]`` as kafka-python's bootstrap list; BusError if unusable."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "kafka" or not parts.netloc:
        raise BusError(f"bus URL {url!r}: must be kafka://host:port[,host:port...]")
    servers = []
    for hostport in parts.netloc.split(","):
        host, sep, port = hostport.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BusError(f"bus URL {url!r}: {hostport!r} must be host:port with a port from 1 to 65535")
        servers.append(f"{host}:{port}")
    return servers


class KafkaBus:
    """A Kafka cluster as the ``Producer`` role, and the factory of consumers and topics.

    The producer is created on first use, so building a ``KafkaBus`` never blocks on the network
    (the SDK builds one in the host service)."""

    def __init__(
        self,
        url: str,
        *,
        client_id: str = "ordertrail",
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self.servers = bootstrap_servers(url)
        self._client_id = client_id
        self._producer_config = {**PRODUCER_DEFAULTS, **(producer_config or {})}
        self._consumer_config = {**CONSUMER_DEFAULTS, **(consumer_config or {})}
        self._timeout_s = timeout_s
        self._producer: KafkaProducer | None = None
        self._partitioners: dict[str, KeyPartitioner] = {}
        self._lock = threading.Lock()

    # -- topics ---------------------------------------------------------------------------------

    def ensure_topics(self, topics: Mapping[str, int] = DEFAULT_TOPICS, *, replication: int = 1) -> None:
        """Create the topics that do not exist yet; existing ones are left as they are."""
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.servers, client_id=f"{self._client_id}-admin")
        except KafkaError as exc:
            raise BusError(f"Kafka at {self.url} cannot be reached: {exc}") from exc
        try:
            existing = set(admin.list_topics())
            wanted = [NewTopic(t, n, replication) for t, n in topics.items() if t not in existing]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):  # another instance created it first
                    admin.create_topics(wanted)
                log.info("created topics %s on %s", ", ".join(t.name for t in wanted), self.url)
        except KafkaError as exc:
            raise BusError(f"topics {', '.join(topics)} cannot be created on {self.url}: {exc}") from exc
        finally:
            admin.close()

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``."""
        return list(range(self._partitioner(topic).partitions))

    # -- Producer -------------------------------------------------------------------------------

    def produce_batch(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        if not messages:
            return []
        producer = self._producer or self._open_producer()
        partition_of = self._partitioner(topic)
        try:
            futures = []
            for m in messages:
                if type(m.value) is not bytes:
                    raise BusError(f"message key {m.key!r}: value is {type(m.value).__name__}; it must be bytes")
                futures.append(
                    producer.send(
                        topic,
                        value=m.value,
                        key=m.key.encode(),
                        headers=list(m.headers),
                        partition=partition_of(m.key),
                        timestamp_ms=m.timestamp_ms,
                    )
                )
            producer.flush(self._timeout_s)
            return [(meta.partition, meta.offset) for meta in (f.get(timeout=self._timeout_s) for f in futures)]
        except KafkaError as exc:
            raise BusError(f"{len(messages)} records could not be written to {topic} on {self.url}: {exc}") from exc

    def _open_producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = KafkaProducer(
                        bootstrap_servers=self.servers, client_id=self._client_id, **self._producer_config
                    )
                except KafkaError as exc:
                    raise BusError(f"Kafka at {self.url} cannot be reached: {exc}") from exc
            return self._producer

    def _partitioner(self, topic: str) -> KeyPartitioner:
        found = self._partitioners.get(topic)
        if found is None:
            producer = self._producer or self._open_producer()
            try:
                parts = producer.partitions_for(topic)
            except KafkaError as exc:
                raise BusError(f"topic {topic} on {self.url}: no metadata ({exc})") from exc
            if not parts:
                raise BusError(f"topic {topic} does not exist on {self.url}; create it or run ensure_topics")
            found = self._partitioners[topic] = KeyPartitioner(len(parts))
        return found

    # -- consumers ------------------------------------------------------------------------------

    def consumer(
        self,
        topic: str,
        group: str,
        *,
        listener: RebalanceListener | None = None,
        hold_new: bool = False,
        **config: Any,
    ) -> KafkaSource:
        """A consumer of ``topic`` in ``group``; ``config`` overrides kafka-python settings."""
        settings = {**self._consumer_config, **config}
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.servers, group_id=group, client_id=f"{self._client_id}-{group}", **settings
            )
        except KafkaError as exc:
            raise BusError(f"Kafka at {self.url} cannot be reached: {exc}") from exc
        read_fast(consumer)
        return KafkaSource(consumer, topic, listener=listener, hold_new=hold_new)

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=self._timeout_s)
            except KafkaError as exc:
                log.warning("closing the Kafka producer: %s", exc)
            self._producer = None

    def __enter__(self) -> KafkaBus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decompress(codec: int, data: bytes) -> bytes:
    if codec == DefaultRecordBatch.CODEC_GZIP:
        return bytes(codecs.gzip_decode(data))
    if codec == DefaultRecordBatch.CODEC_SNAPPY:
        return bytes(codecs.snappy_decode(data))
    if codec == DefaultRecordBatch.CODEC_LZ4:
        return bytes(codecs.lz4_decode(data))
    if codec == DefaultRecordBatch.CODEC_ZSTD:
        return bytes(codecs.zstd_decode(data))
    raise ValueError(f"unknown compression codec {codec} (1 gzip, 2 snappy, 3 lz4, 4 zstd)")


def _crc32c(data: bytes) -> int:
    return int(calc_crc32c(data))


class _FastPartitionRecords(Fetcher.PartitionRecords):  # type: ignore[misc]  # kafka-python is untyped
    """One fetched partition, read by ``tracer.kafkawire`` into ``Record``s when it can be: log
    format v2, reading uncommitted, no deserializers (what ``KafkaBus.consumer`` sets up). Else,
    and for any fetch with a batch in an older format, kafka-python's own reading, unchanged.

    kafka-python's contract kept: ``take(n)`` returns up to n records from the position on and
    moves ``next_fetch_offset`` past them (after the last batch when the fetch is used up, so a
    trailing control batch is stepped over); a malformed batch ends the fetch with a
    ``CorruptRecordError``, raised by the next ``take`` after the good records before it are
    returned (or by this one, when there are none)."""

    def __init__(self, fetch_offset: int, tp: TopicPartition, records: Any, **config: Any) -> None:
        super().__init__(fetch_offset, tp, records, **config)
        raw = getattr(records, "_buffer", None)
        self._parsed: list[Record] | None = None
        if (
            raw is None
            or config.get("key_deserializer") is not None
            or config.get("value_deserializer") is not None
            or config.get("isolation_level", IsolationLevel.READ_UNCOMMITTED) != IsolationLevel.READ_UNCOMMITTED
        ):
            return
        buf = raw if isinstance(raw, bytes) else bytes(raw)
        if has_legacy(buf):
            return
        got = parse_log(buf, fetch_offset, tp.topic, tp.partition, self.check_crcs, _crc32c, _decompress)
        self._parsed = got.records
        self._taken = 0
        self._end = got.next_offset
        self._error = CorruptRecordError(got.error) if got.error else None
        if got.leader_epoch >= 0:
            self.leader_epoch = got.leader_epoch
        self.bytes_read = got.bytes_read
        self.records_read = len(got.records)

    def take(self, n: int | None = None) -> list[Any]:
        parsed = self._parsed
        if parsed is None:
            return super().take(n)  # type: ignore[no-any-return]
        self._maybe_raise_next_inline_exception()
        if self.record_iterator is None:  # drained
            return []
        start = self._taken
        stop = len(parsed) if n is None else min(len(parsed), start + n)
        out = parsed[start:stop]
        self._taken = stop
        if out:
            self.next_fetch_offset = out[-1].offset + 1
        if stop == len(parsed):
            if self._error is not None:
                error, self._error = self._error, None
                if not out:
                    raise error
                self._next_inline_exception = error
            else:
                self.next_fetch_offset = max(self.next_fetch_offset, self._end)
                self.drain()
        return out


def read_fast(consumer: KafkaConsumer) -> bool:
    """Have ``consumer`` read its fetches with ``tracer.kafkawire`` (see ``_FastPartitionRecords``).
    False, and kafka-python's reading kept, if this kafka-python has no such place to do it."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not isinstance(getattr(fetcher, "PartitionRecords", None), type):
        log.warning("kafka-python %s: records are read by kafka-python (slower), not tracer.kafkawire", kafka_version)
        return False
    fetcher.PartitionRecords = _FastPartitionRecords
    return True


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's listener: runs on its IO thread, so it only notes and (optionally) pauses."""

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Any) -> None:
        # The caller commits after every batch: nothing read is left uncommitted. Until the
        # group settles, nothing is fetched: the source must not look caught up meanwhile.
        self._source._rebalancing_now(lost=False)

    def on_partitions_lost(self, lost: Any) -> None:
        self._source._rebalancing_now(lost=True)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._source._assigned_now({tp.partition for tp in assigned if tp.topic == self._source.topic})


class KafkaSource:
    """One topic read in one consumer group: the ``Consumer`` role of ``tracer.bus``."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        topic: str,
        *,
        listener: RebalanceListener | None = None,
        hold_new: bool = False,
    ) -> None:
        self.topic = topic
        self.listener = listener
        self._consumer = consumer
        self._hold_new = hold_new
        self._lock = threading.Lock()
        self._assigned: set[int] = set()  # as of the last assignment (written on the IO thread)
        self._held: set[int] = set()  # assigned, not yet resumed
        self._owned: set[int] = set()  # what the listener has been told
        self._rebalancing = False  # between a revocation and the next assignment
        self._evicted = False  # lost the partitions since the listener was last told
        self._reassigned = False  # assigned since the listener was last told
        self._positions: dict[int, int] = {}
        consumer.subscribe([topic], listener=_Assignments(self))

    def _rebalancing_now(self, *, lost: bool) -> None:
        with self._lock:
            self._rebalancing = True
            if lost:  # evicted: others may have read these meanwhile, so a re-assignment is a gain
                self._assigned = set()
                self._evicted = True

    def _assigned_now(self, partitions: set[int]) -> None:
        with self._lock:
            self._rebalancing = False
            self._reassigned = True
            gained = partitions - self._assigned
            self._assigned = partitions
            if self._hold_new:
                self._held = (self._held | gained) & partitions
                if self._held:
                    self._consumer.pause(*self._tps(self._held))

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"reading {self.topic} from Kafka failed: {exc}") from exc
        self._tell_listener()
        out: list[Record] = []
        owned, topic = self._owned, self.topic
        for tp, records in batches.items():
            p = tp.partition
            if p not in owned or not records:
                continue
            self._positions[p] = records[-1].offset + 1
            if all_records(records):  # read by tracer.kafkawire (_FastPartitionRecords)
                out += records
                continue
            # Read by kafka-python (older formats, read_committed): one Record a record, a null
            # header value as b"", as tracer.kafkawire reads it (so either reading gives one Record).
            out += [
                r
                if type(r) is Record
                else Record(
                    topic,
                    p,
                    r.offset,
                    r.timestamp,
                    "" if r.key is None else r.key.decode(errors="replace"),
                    b"" if r.value is None else r.value,
                    [(k, b"" if v is None else v) for k, v in r.headers] if r.headers else (),
                )
                for r in records
            ]
        return out

    def _tell_listener(self) -> None:
        with self._lock:
            now = set(self._assigned)
            evicted, self._evicted = self._evicted, False
            reassigned, self._reassigned = self._reassigned, False
        if reassigned:  # retained partitions too are moved back to their committed positions
            self._positions.clear()
        if evicted:  # everything owned before is gone, whatever came back is new
            lost, gained = set(self._owned), now
        else:
            lost, gained = self._owned - now, now - self._owned
        if not lost and not gained:
            return
        self._owned = now
        if self.listener is not None:
            if lost:
                self.listener.on_revoked(sorted(lost))
            if gained:
                self.listener.on_assigned(sorted(gained))

    def generation(self) -> int:
        """The member's group generation now (-1: not a member of a generation)."""
        return int(self._consumer.group_metadata().generation_id)

    def forfeit(self) -> None:
        """Every owned partition is lost now: the listener hears so at once, and whatever the
        group assigns next (at the rejoin, in a poll) is a gain, held until resumed."""
        self._rebalancing_now(lost=True)
        self._tell_listener()

    def assignment(self) -> list[int]:
        return sorted(self._owned)

    def resume(self, partitions: Sequence[int]) -> None:
        """Let held partitions yield records again."""
        with self._lock:
            self._held -= set(partitions)
            tps = self._tps(set(partitions) & self._assigned)
        if tps:
            self._consumer.resume(*tps)

    def pause(self, partitions: Sequence[int]) -> None:
        """Hold partitions (their records wait in Kafka) until ``resume``."""
        with self._lock:
            mine = set(partitions) & self._assigned
            self._held |= mine
            tps = self._tps(mine)
        if tps:
            self._consumer.pause(*tps)

    def held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    def commit(self, positions: Mapping[int, int]) -> None:
        offsets = {
            TopicPartition(self.topic, p): OffsetAndMetadata(off, "", -1)
            for p, off in positions.items()
            if p in self._owned
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # The group moved on; the new owner of these partitions reads the records again.
            log.warning("commit of %s refused by the group (rebalance); they will be read again: %s", positions, exc)
        except KafkaError as exc:
            raise BusError(f"committing positions {dict(positions)} of {self.topic} failed: {exc}") from exc

    def lag(self) -> dict[int, int]:
        """Records not yet read per owned partition, from the high watermarks of the last fetches.
        A partition not fetched yet counts as behind (1): its end is unknown. So does every
        partition while the group rebalances: nothing is fetched then, and the last high
        watermarks go stale (a tracer that believed them would let its clock run on wall time
        past hops waiting unread)."""
        if self._rebalancing:
            return dict.fromkeys(self._owned, 1)
        lag: dict[int, int] = {}
        consumer = self._consumer
        for p in self._owned:
            tp = TopicPartition(self.topic, p)
            try:
                high = consumer.highwater(tp)
                pos = self._positions.get(p)
                if pos is None:
                    pos = consumer.position(tp, timeout_ms=0)
            except KafkaError:
                lag[p] = 1
                continue
            lag[p] = 1 if high is None or pos is None else max(0, high - pos)
        return lag

    def committed(self) -> dict[int, int]:
        """The group's committed positions of the owned partitions (a network round trip)."""
        out = {}
        for p in self._owned:
            off = self._consumer.committed(TopicPartition(self.topic, p))
            if off is not None:
                out[p] = int(off)
        return out

    def wakeup(self) -> None:
        """Nothing to do: a poll returns within its timeout (kept for parity with the local bus)."""

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except KafkaError as exc:
            log.warning("closing the Kafka consumer of %s: %s", self.topic, exc)

    def _tps(self, partitions: set[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(partitions)]
