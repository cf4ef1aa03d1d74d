"""The SDK's transport to Kafka (``ORDERTRAIL_BUS=kafka://host:port``): each NDJSON batch the sender
thread builds is produced straight to the hops topic, one record per event (CONTRACT §6: key the
order id, value the event's JSON, W3C ``traceparent`` in the headers where the event's span is
known), and is delivered when every record is acknowledged by the brokers (``acks=all``,
idempotent producer).

The SDK does not validate events against CONTRACT §1 (the server does on HTTP); on Kafka the
tracer does, and sends what breaks a rule to ``ordertrail.deadletter`` with the reason. A line
that is not even a JSON object with a string ``order_id`` cannot be keyed and is refused here.

The producer is created on the first batch, on the sender thread: building the SDK's client
never touches the network. Broker outages are ``retry`` results (the SDK backs off and counts).
Imports the Kafka adapter (``tracer.kafkabus``) and the propagation helpers only.
"""

from __future__ import annotations

from typing import Any

import msgspec

from collectors.propagation import TRACEPARENT, format_traceparent
from collectors.sdk import SendResult
from tracer.bus import HOPS_TOPIC, BusError, Message, Producer
from tracer.model import ORDER_ID, PARENT_SPAN_ID, SPAN_ID, TRACE_ID

_DECODE = msgspec.json.Decoder(dict[str, Any]).decode


class BusTransport:
    """``collectors.sdk.Transport`` over the bus: NDJSON in, one record per line out."""

    def __init__(self, url: str, *, timeout: float = 5.0, producer: Producer | None = None) -> None:
        self._url = url
        self._timeout = timeout
        self._producer = producer  # tests pass a MemoryBus; else a KafkaBus on first use
        self._owned = producer is None

    def send(self, body: bytes) -> SendResult:
        messages: list[Message] = []
        rejected: list[tuple[int, str]] = []
        for index, line in enumerate(body.split(b"\n")):
            try:
                messages.append(record_of(line))
            except ValueError as exc:
                rejected.append((index, str(exc)))
        if messages:
            try:
                (self._producer or self._open()).produce_batch(HOPS_TOPIC, messages)
            except BusError as exc:
                return SendResult("retry", detail=str(exc))
        return SendResult("ok", accepted=len(messages), rejected=tuple(rejected))

    def close(self) -> None:
        if self._owned and self._producer is not None:
            close = getattr(self._producer, "close", None)
            if close is not None:
                close()
            self._producer = None

    def _open(self) -> Producer:
        from tracer.kafkabus import KafkaBus

        self._producer = KafkaBus(self._url, client_id="ordertrail-sdk", timeout_s=self._timeout)
        return self._producer


def record_of(line: bytes) -> Message:
    """The hops-topic record of one event's JSON; ValueError when it has no string order id."""
    try:
        event = _DECODE(line)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a JSON object: {exc}") from None
    order_id = event.get(ORDER_ID)
    if not isinstance(order_id, str) or not order_id:
        raise ValueError(f"order_id: {order_id!r} must be a non-empty string (it is the record key)")
    return Message(order_id, line, trace_headers(event))


def trace_headers(event: dict[str, Any]) -> list[tuple[str, bytes]]:
    """``traceparent`` of an event whose trace and span ids are known and well formed."""
    trace_id, span_id = event.get(TRACE_ID), event.get(SPAN_ID) or event.get(PARENT_SPAN_ID)
    if not isinstance(trace_id, str) or not isinstance(span_id, str):
        return []
    try:
        return [(TRACEPARENT, format_traceparent(trace_id, span_id).encode())]
    except ValueError:
        return []  # the tracer rejects the event with the reason; no header is better than a wrong one
