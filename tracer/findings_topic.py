"""The findings topic (CONTRACT §6): every version of every finding the tracers raise or resolve,
as CONTRACT §3 JSON, for the detectors (incidents, alerts) to consume in one consumer group.

* Record key: the incident a finding belongs to, ``journey/hop/kind`` (``incident_key``). Every
  finding of one incident lands in one partition, so whichever tracer instance saw which orders,
  one detectors instance owns the whole incident and raises one alert for it; the versions of one
  finding (open, then resolved) stay in order.
* ``PublishingSink`` wraps the store: it publishes a batch's findings *before* the store write.
  A crash between the two re-derives and re-publishes the same findings on restart (duplicates
  with the same identity and ``detected_at``, which consumers drop); the other order would lose
  a finding the store already holds, since a restored tracer never raises it again.
* ``decode_finding`` / ``FindingsFeed`` are the consumer side: records to ``Finding``s, bad records
  logged and skipped (never stopping the consumer), positions committed by the caller.

Imports only the tracer's bus contract, model and time parsing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import msgspec

from tracer.bus import FINDINGS_TOPIC, Message, Producer, Record
from tracer.engine import OrderSnapshot
from tracer.errors import EventError
from tracer.model import FINDING_KINDS, Finding, HopEvent
from tracer.times import parse_ts

log = logging.getLogger("ordertrail.findings")
_ENCODE = msgspec.json.Encoder().encode


def incident_key(f: Finding) -> str:
    """The record key of a finding: the incident it belongs to."""
    return f"{f.journey}/{f.hop}/{f.kind}"


def finding_message(f: Finding) -> Message:
    return Message(incident_key(f), _ENCODE(f.to_wire()))


class _Wire(msgspec.Struct, forbid_unknown_fields=False):
    order_id: str
    journey: str
    kind: str
    hop: str
    after: str
    due_at: str
    detected_at: str
    status: str
    resolved_at: str | None = None
    late_by_ms: int | None = None
    trace_id: str = ""
    customer_id: str | None = None


_DECODE = msgspec.json.Decoder(_Wire).decode


def decode_finding(value: bytes) -> Finding:
    """A finding from its CONTRACT §3 JSON; EventError naming the field when it is not one."""
    shown = value[:200].decode(errors="replace")
    try:
        w = _DECODE(value)
    except msgspec.ValidationError as exc:
        raise EventError("finding", shown, f"is not a CONTRACT §3 finding: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EventError("finding", shown, f"is not JSON: {exc}") from None
    if w.kind not in FINDING_KINDS:
        raise EventError("kind", w.kind, f"must be one of {', '.join(FINDING_KINDS)}")
    if w.status not in ("open", "resolved"):
        raise EventError("status", w.status, "must be open or resolved")
    times: dict[str, int | None] = {}
    for name in ("due_at", "detected_at", "resolved_at"):
        text = getattr(w, name)
        try:
            times[name] = None if text is None else parse_ts(text)
        except ValueError as exc:
            raise EventError(name, text, str(exc)) from None
    due, detected = times["due_at"], times["detected_at"]
    assert due is not None and detected is not None
    return Finding(
        w.order_id,
        w.journey,
        w.kind,
        w.hop,
        w.after,
        due,
        detected,
        w.status,
        times["resolved_at"],
        w.late_by_ms,
        w.trace_id,
        w.customer_id or "",
    )


class Store(Protocol):
    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None: ...
    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]: ...
    def closed_orders(self, order_ids: Sequence[str]) -> list[str]: ...


class PublishingSink:
    """The processor's sink: findings to the topic (durably), then everything to the store."""

    def __init__(self, store: Store, producer: Producer, topic: str = FINDINGS_TOPIC) -> None:
        self._store = store
        self._producer = producer
        self.topic = topic
        self.published = 0

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        if findings:
            self._producer.produce_batch(self.topic, [finding_message(f) for f in findings])
            self.published += len(findings)
        self._store.write(events, findings, snapshots)

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        return self._store.open_orders(partitions)

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        return self._store.closed_orders(order_ids)


class FindingsConsumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...
    def commit(self, positions: Mapping[int, int]) -> None: ...


class FindingsFeed:
    """Findings from the topic, for a detectors process: ``poll`` decodes, ``commit`` acknowledges
    everything polled so far (call it once what the findings caused is durable)."""

    def __init__(self, consumer: FindingsConsumer) -> None:
        self._consumer = consumer
        self._positions: dict[int, int] = {}
        self.rejected = 0

    def poll(self, max_records: int = 1000, timeout_s: float = 0.5) -> list[Finding]:
        out = []
        for rec in self._consumer.poll(max_records, timeout_s):
            self._positions[rec.partition] = rec.offset + 1
            try:
                out.append(decode_finding(rec.value))
            except EventError as exc:
                self.rejected += 1
                log.warning("%s/%d offset %d skipped: %s", rec.topic, rec.partition, rec.offset, exc)
        return out

    def commit(self) -> None:
        if self._positions:
            self._consumer.commit(dict(self._positions))
            self._positions.clear()
