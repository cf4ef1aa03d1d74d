"""The Kafka topic tap: consume an existing business topic in its own consumer group, map each
message to a hop event, deliver, and commit the group's offsets only after that.

One cycle: poll a batch → ``Tap.handle`` (map, deliver, dead-letter; durable when it returns
True) → commit the consumed offsets. A crash before the commit re-reads the batch on restart
(same event ids: the tracer drops the duplicates); nothing is skipped. Message values are JSON
objects; the mapping may also read the record key (``@key``) and timestamp (``@timestamp``, epoch
milliseconds). Tombstones (no value) are skipped.

The business topic is only read: the tap never produces to it and its group commits only its own
offsets. This is the only module of the taps that imports the Kafka client (kafka-python).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from collectors.taps.core import SourceRecord, Tap

log = logging.getLogger("ordertrail.tap.kafka")


class RecordSource(Protocol):
    """A consumer as the tap needs it."""

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]: ...
    def commit(self) -> None: ...
    def close(self) -> None: ...


class KafkaSource:
    """kafka-python's ``KafkaConsumer`` on one topic, manual commits, from the earliest offset for
    a new group (a tap started after the topic existed still sees its retained history)."""

    def __init__(self, brokers: str | Sequence[str], topic: str, group: str, **config: Any) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        settings: dict[str, Any] = {
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": f"ordertrail-tap-{group}",
            # A tap is one small member: a short session lets a restarted tap rejoin in seconds.
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            **config,
        }
        self._consumer = KafkaConsumer(topic, bootstrap_servers=brokers, group_id=group, **settings)

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[SourceRecord] = []
        for tp, records in batches.items():
            for r in records:
                key = r.key.decode("utf-8", errors="replace") if r.key is not None else None
                out.append(
                    SourceRecord(
                        f"{tp.topic}/{tp.partition}/{r.offset}",
                        r.value if r.value is not None else b"",
                        {"@key": key, "@timestamp": r.timestamp},
                    )
                )
        return out

    def commit(self) -> None:
        self._consumer.commit()  # the positions of what poll returned, synchronously

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class KafkaTap:
    def __init__(self, tap: Tap, source: RecordSource, *, max_records: int = 2000, poll_timeout_s: float = 0.5):
        self.tap = tap
        self.source = source
        self._max_records = max_records
        self._timeout_s = poll_timeout_s
        self.commits = 0

    def step(self) -> int:
        """One cycle; the number of records read, -1 when stopped before the batch was delivered."""
        records = self.source.poll(self._max_records, self._timeout_s)
        if not records:
            return 0
        if not self.tap.handle(records):
            return -1
        try:
            self.source.commit()
        except Exception as exc:  # kafka-python's CommitFailedError & co: a rebalance took the partitions
            # The batch was delivered; whoever owns the partitions now reads it again from the last
            # commit, and the tracer drops the duplicates. Not committing is safe, crashing is not useful.
            log.warning("committing offsets failed (%r); the batch will be read again", exc)
            return len(records)
        self.commits += 1
        return len(records)

    def run(self) -> None:
        """Cycle until the tap's stop event is set, then close the consumer without committing."""
        try:
            while not self.tap.stop.is_set():
                if self.step() < 0:
                    break
        finally:
            self.source.close()


__all__ = ["KafkaSource", "KafkaTap", "RecordSource"]
