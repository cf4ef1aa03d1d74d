"""What every tap does with a batch of source records: decode, map, deliver, dead-letter.

``Tap.handle(records)`` turns each record (a log line, a Kafka message value) into a hop event
through the ``Mapping``, sends the events to ordertrail through a ``Delivery`` (retrying, with
backoff, for as long as ordertrail is unreachable or busy), and writes every record that could not
become an accepted event to the ``DeadLetterSink`` with its reason: not JSON, a mapping error, or
the server's per-item rejection. It returns True once all of that is durable, and only then may
the caller move its source position on (save the file offsets, commit the consumer group). It
returns False only when asked to stop before the batch was delivered: the caller must then not
move its position, and the batch is read again on the next start.

A bad record never stops a tap and never costs the other records of its batch.

Dead letters of a tap are an NDJSON file (``DeadLetterFile``): one object a line with the time,
the record's source (file and byte offset, or topic/partition/offset), the reason and the record
itself. A tap runs where its sources are, usually not where ``ordertrail run`` keeps its bus.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import msgspec

from collectors.sdk import HttpTransport, RetryPolicy, SendResult
from collectors.taps.mapping import Mapping
from tracer.errors import EventError
from tracer.model import HopEvent, event_to_wire, format_ts, now_ms

log = logging.getLogger("ordertrail.tap")
_ENCODE = msgspec.json.Encoder()
_MAX_SHOWN = 64 * 1024  # of a dead record, kept in its dead letter
_RETRY = RetryPolicy(attempts=0, base=0.2, max_delay=10.0)  # a tap retries until it is stopped


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record read from a source: where it came from, its bytes, and facts for ``@`` paths."""

    source: str
    data: bytes
    extra: AnyMapping[str, object] | None = None
    problem: str | None = None  # set when the source already knows the record is unusable


class DeadLetterSink(Protocol):
    def write(self, letters: Sequence[tuple[SourceRecord, str]]) -> None:
        """Store the rejected records with their reasons; durable when it returns."""
        ...


class DeadLetter(msgspec.Struct, frozen=True):
    at: str
    source: str
    reason: str
    record: str


class DeadLetterFile:
    """Dead letters appended to an NDJSON file and fsync'd, one write per batch."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0

    def write(self, letters: Sequence[tuple[SourceRecord, str]]) -> None:
        if not letters:
            return
        at = format_ts(now_ms())
        body = b"".join(
            _ENCODE.encode(DeadLetter(at, rec.source, reason, rec.data[:_MAX_SHOWN].decode("utf-8", errors="replace")))
            + b"\n"
            for rec, reason in letters
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.count += len(letters)

    def read(self) -> list[DeadLetter]:
        """Every dead letter written so far (for tests and tools)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        return [msgspec.json.decode(line, type=DeadLetter) for line in data.splitlines() if line.strip()]


class RetryLater(Exception):
    """The events were not accepted yet (ordertrail unreachable, busy or failing); send again."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class Delivery(Protocol):
    def deliver(self, events: Sequence[HopEvent]) -> list[tuple[int, str]]:
        """Send ``events``; return the (index, reason) of each one refused for good. Accepted ones
        are durable when it returns. Raises RetryLater when nothing was accepted yet."""
        ...


class HttpDelivery:
    """``POST /v1/events`` of ``ordertrail run`` (202 only once its bus made the batch durable)."""

    def __init__(self, server: str, *, timeout_s: float = 10.0) -> None:
        self._transport = HttpTransport(server, timeout=timeout_s)

    def deliver(self, events: Sequence[HopEvent]) -> list[tuple[int, str]]:
        body = b"\n".join(_ENCODE.encode(event_to_wire(ev)) for ev in events)
        result: SendResult = self._transport.send(body)
        if result.outcome == "ok":
            return list(result.rejected)
        if result.outcome == "retry":
            raise RetryLater(result.detail, result.retry_after)
        if result.detail.startswith("HTTP 413") and len(events) > 1:  # too large: send it in halves
            half = len(events) // 2
            first = self.deliver(events[:half])
            return first + [(i + half, why) for i, why in self.deliver(events[half:])]
        return [(i, f"the server refused the batch: {result.detail}") for i in range(len(events))]

    def close(self) -> None:
        self._transport.close()


@dataclass(slots=True)
class TapStats:
    records: int = 0
    events: int = 0
    skipped: int = 0  # records whose hop value the mapping skips: not hops
    dead_letters: int = 0
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # dead letters by cause


class Tap:
    def __init__(
        self,
        mapping: Mapping,
        delivery: Delivery,
        dead_letters: DeadLetterSink,
        *,
        stop: threading.Event | None = None,
        retry: RetryPolicy = _RETRY,
        max_batch: int = 2000,
    ) -> None:
        self.mapping = mapping
        self._delivery = delivery
        self._dead = dead_letters
        self.stop = stop or threading.Event()
        self._retry = retry
        self._max_batch = max_batch
        self._rng = random.Random()
        self.stats = TapStats()

    def handle(self, records: Sequence[SourceRecord]) -> bool:
        """Map, deliver and dead-letter ``records``. True when all of it is durable."""
        for start in range(0, len(records), self._max_batch):
            if not self._handle(records[start : start + self._max_batch]):
                return False
        return True

    def _handle(self, records: Sequence[SourceRecord]) -> bool:
        events: list[HopEvent] = []
        origin: list[SourceRecord] = []
        dead: list[tuple[SourceRecord, str]] = []
        for rec in records:
            self.stats.records += 1
            reason = self._map(rec, events, origin)
            if reason is not None:
                dead.append((rec, reason))
                self._count("mapping")
        if events:
            rejected = self._deliver(events)
            if rejected is None:
                return False
            for i, reason in rejected:
                if 0 <= i < len(origin):
                    dead.append((origin[i], f"ordertrail refused the event: {reason}"))
                    self._count("refused")
            self.stats.events += len(events) - len(rejected)
        if dead:
            self._dead.write(dead)
            self.stats.dead_letters += len(dead)
            log.warning("%d record(s) dead-lettered; the first, %s: %s", len(dead), dead[0][0].source, dead[0][1])
        return True

    def _map(self, rec: SourceRecord, events: list[HopEvent], origin: list[SourceRecord]) -> str | None:
        if rec.problem is not None:
            return rec.problem
        data = rec.data.strip()
        if not data:
            self.stats.skipped += 1
            return None
        try:
            obj = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            return f"not JSON: {exc}"
        try:
            ev = self.mapping.apply(obj, rec.extra)
        except EventError as exc:
            return str(exc)
        if ev is None:
            self.stats.skipped += 1
            return None
        events.append(ev)
        origin.append(rec)
        return None

    def _deliver(self, events: list[HopEvent]) -> list[tuple[int, str]] | None:
        attempt = 0
        while not self.stop.is_set():
            try:
                return self._delivery.deliver(events)
            except RetryLater as exc:
                attempt += 1
                self.stats.retries += 1
                delay = self._retry.delay(min(attempt, 10), exc.retry_after, self._rng)
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("ordertrail did not accept %d events (%s); retrying in %.1fs", len(events), exc, delay)
                self.stop.wait(delay)
        return None

    def _count(self, cause: str) -> None:
        self.stats.reasons[cause] = self.stats.reasons.get(cause, 0) + 1


__all__ = [
    "DeadLetter",
    "DeadLetterFile",
    "DeadLetterSink",
    "Delivery",
    "HttpDelivery",
    "RetryLater",
    "SourceRecord",
    "Tap",
    "TapStats",
]
