"""Trace context over a service's own Kafka topics: record headers and messaging spans.

Producer side — a PRODUCER span ``send {topic}`` around producing one record, whose context (and
baggage, e.g. the order id) rides in the record's headers::

    with collectors.kafka.sending("payments", key=order_id, order_id=order_id) as headers:
        producer.send("payments", key=order_id.encode(), value=body, headers=headers)

Consumer side — a CONSUMER span ``process {topic}`` per record, child of the context in its
headers, made current for the block, so hops reported inside it share the producer's trace id and
``collectors.track(None, hop)`` finds the order id in baggage; records from kafka-python's
``poll()`` (``{TopicPartition: [records]}``, flattened by ``records``) and from iterating the
consumer alike::

    for record in collectors.kafka.poll(consumer, timeout_ms=500, group="billing"):
        with collectors.kafka.processing(record, group="billing"):
            collectors.track(None, "invoice.created")

Headers are ``(str, bytes)`` pairs with UTF-8 values, ``traceparent``/``tracestate``/``baggage``:
the layout of the OpenTelemetry Kafka instrumentations. Spans follow the current messaging
semantic conventions: ``messaging.system=kafka``, ``messaging.destination.name``,
``messaging.operation.type`` (``send``, ``receive``, ``process``) and ``.name``,
``messaging.kafka.message.key``, ``messaging.destination.partition.id``, ``messaging.kafka.offset``,
``messaging.consumer.group.name``; span kinds PRODUCER (send), CLIENT (poll, linked to the
records' contexts) and CONSUMER (process).

Contract: like ``collectors.propagation`` nothing here raises on bad headers or odd records (they
give an empty context), and an exception from the block is recorded on the span and re-raised
unchanged. Records and consumers are duck-typed (``topic``, ``partition``, ``offset``, ``key``,
``value``, ``headers``; ``poll(timeout_ms=, max_records=)``): this module does not import a Kafka
client. Imports opentelemetry-api and ``collectors.propagation`` only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer

from collectors.propagation import PROPAGATOR, extract_record_headers, inject, order_context, order_id_from

Headers = list[tuple[str, bytes]]

MESSAGING_SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
MESSAGE_KEY: Final = "messaging.kafka.message.key"
TOMBSTONE: Final = "messaging.kafka.message.tombstone"
PARTITION: Final = "messaging.destination.partition.id"
OFFSET: Final = "messaging.kafka.offset"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
BATCH_COUNT: Final = "messaging.batch.message_count"
ERROR_TYPE: Final = "error.type"
KAFKA: Final = "kafka"
_W3C: Final = frozenset(PROPAGATOR.fields) | {"traceparent", "tracestate", "baggage"}
_log = logging.getLogger("ordertrail.kafka")


def inject_headers(headers: Iterable[tuple[str, bytes]] | None = None, context: Context | None = None) -> Headers:
    """``headers`` (a new list) with the W3C headers of ``context`` (default: the current one) in
    place of any it had: ``[("traceparent", b"00-…"), ("baggage", b"app.order.id=…")]``."""
    carrier: dict[str, str] = {}
    inject(carrier, context)
    kept: Headers = []
    try:
        for key, value in headers or ():
            if not (isinstance(key, str) and key.lower() in _W3C):
                kept.append((key, value))
    except Exception as exc:  # not pairs: keep what was read, and still carry the context
        _log.debug("ignored unusable record headers: %r", exc)
    return kept + [(key, value.encode()) for key, value in carrier.items()]


def extract_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> Context:
    """The context (trace and baggage) carried by a record's headers; empty when there is none."""
    return extract_record_headers(headers)


def order_id_of(record: object) -> str | None:
    """The order id a record carries in its baggage (``app.order.id``), if any."""
    return order_id_from(extract_record_headers(getattr(record, "headers", None)))


def records(polled: Mapping[Any, Iterable[Any]] | Iterable[Any] | None) -> list[Any]:
    """The records of kafka-python's ``poll()`` (``{TopicPartition: [records]}``), partition by
    partition in offset order, or of any iterable of records, as one list."""
    if not polled:
        return []
    if isinstance(polled, Mapping):
        return [record for batch in polled.values() for record in batch]
    return list(polled)


@contextmanager
def sending(
    topic: str,
    *,
    key: str | bytes | None = None,
    headers: Iterable[tuple[str, bytes]] | None = None,
    order_id: str | None = None,
    tracer: Tracer | None = None,
) -> Iterator[Headers]:
    """A PRODUCER span around producing one record to ``topic``; yields the record's headers
    (``headers`` plus the span's context). ``order_id`` goes into baggage for the consumers."""
    ctx = otel_context.get_current()
    if order_id:
        ctx = order_context(order_id, ctx)
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: KAFKA,
        DESTINATION: topic,
        OPERATION_TYPE: "send",
        OPERATION_NAME: "send",
    }
    if key is not None:
        attributes[MESSAGE_KEY] = _text(key)
    span = _tracer(tracer).start_span(f"send {topic}", context=ctx, kind=SpanKind.PRODUCER, attributes=attributes)
    ctx = trace.set_span_in_context(span, ctx)
    with _current(ctx, span):
        yield inject_headers(headers, ctx)


def send(
    producer: Any,
    topic: str,
    value: Any = None,
    *,
    key: Any = None,
    headers: Iterable[tuple[str, bytes]] | None = None,
    partition: int | None = None,
    order_id: str | None = None,
    tracer: Tracer | None = None,
) -> Any:
    """``producer.send(topic, value=…, key=…, headers=…)`` inside ``sending``; returns its future."""
    with sending(topic, key=key, headers=headers, order_id=order_id, tracer=tracer) as with_context:
        return producer.send(topic, value=value, key=key, headers=with_context, partition=partition)


@contextmanager
def processing(record: Any, *, group: str | None = None, tracer: Tracer | None = None) -> Iterator[Span]:
    """A CONSUMER span ``process {topic}`` for one record, child of the context in its headers;
    that context, with its baggage, is current in the block. Yields the span."""
    ctx = extract_record_headers(getattr(record, "headers", None))
    topic = str(getattr(record, "topic", "") or "")
    attributes = _record_attributes(record, topic, group)
    attributes[OPERATION_TYPE] = "process"
    attributes[OPERATION_NAME] = "process"
    span = _tracer(tracer).start_span(
        f"process {topic}".strip(), context=ctx, kind=SpanKind.CONSUMER, attributes=attributes
    )
    with _current(trace.set_span_in_context(span, ctx), span):
        yield span


def poll(
    consumer: Any,
    *,
    timeout_ms: int = 0,
    max_records: int | None = None,
    group: str | None = None,
    tracer: Tracer | None = None,
) -> list[Any]:
    """``consumer.poll(…)`` as a flat list of records, with a CLIENT span ``poll {topic}``
    (operation type ``receive``) linked to each record's context when any arrived. An empty poll
    makes no span: an idle consumer would otherwise fill the trace store with nothing."""
    started = time.time_ns()
    got = records(consumer.poll(timeout_ms=timeout_ms, max_records=max_records))
    if got:
        try:
            _received(got, started, group, tracer)
        except Exception as exc:  # instrumentation must not cost the records
            _log.debug("could not record the poll span: %r", exc)
    return got


def _received(got: list[Any], started: int, group: str | None, tracer: Tracer | None) -> None:
    topics = {str(getattr(r, "topic", "")) for r in got}
    topic = topics.pop() if len(topics) == 1 else ""
    attributes: dict[str, Any] = {
        MESSAGING_SYSTEM: KAFKA,
        OPERATION_TYPE: "receive",
        OPERATION_NAME: "poll",
        BATCH_COUNT: len(got),
    }
    if topic:
        attributes[DESTINATION] = topic
    if group:
        attributes[CONSUMER_GROUP] = group
    links = []
    for record in got:
        linked = trace.get_current_span(extract_record_headers(getattr(record, "headers", None))).get_span_context()
        if linked.is_valid:
            links.append(Link(linked))
    span = _tracer(tracer).start_span(
        f"poll {topic}".strip(), kind=SpanKind.CLIENT, attributes=attributes, links=links, start_time=started
    )
    span.end()


def _record_attributes(record: Any, topic: str, group: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {MESSAGING_SYSTEM: KAFKA, DESTINATION: topic}
    partition = getattr(record, "partition", None)
    if isinstance(partition, int):
        attributes[PARTITION] = str(partition)
    offset = getattr(record, "offset", None)
    if isinstance(offset, int):
        attributes[OFFSET] = offset
    key = getattr(record, "key", None)
    if key is not None:
        attributes[MESSAGE_KEY] = _text(key)
    if getattr(record, "value", b"") is None:
        attributes[TOMBSTONE] = True
    if group:
        attributes[CONSUMER_GROUP] = group
    return attributes


@contextmanager
def _current(ctx: Context, span: Span) -> Iterator[None]:
    """``ctx`` current for the block; the span ends after it, with the block's exception on it."""
    token = otel_context.attach(ctx)
    try:
        yield
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:300]))
        span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
        raise
    finally:
        otel_context.detach(token)
        span.end()


def _tracer(tracer: Tracer | None) -> Tracer:
    return tracer if tracer is not None else trace.get_tracer("ordertrail.kafka")


def _text(key: object) -> str:
    if isinstance(key, bytes | bytearray):
        return bytes(key).decode("utf-8", errors="replace")
    return str(key)


__all__ = [
    "Headers",
    "extract_headers",
    "inject_headers",
    "order_id_of",
    "poll",
    "processing",
    "records",
    "send",
    "sending",
]
