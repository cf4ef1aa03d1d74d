"""Kafka propagation helpers on kafka-python's own record type and a real OpenTelemetry SDK tracer:
headers, messaging spans, baggage, poll() batches and iteration (no broker: see
test_kafka_chain.py for the real one)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer, format_trace_id

from collectors import kafka
from collectors.propagation import order_id_from


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(spans: InMemorySpanExporter) -> Iterator[Tracer]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield provider.get_tracer("test")
    provider.shutdown()


def record(headers: list[tuple[str, bytes]] | None, *, offset: int = 7, value: bytes | None = b"{}") -> ConsumerRecord:
    return ConsumerRecord(
        topic="payments",
        partition=3,
        leader_epoch=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=b"o-1",
        value=value,
        headers=headers or [],
        checksum=None,
        serialized_key_size=3,
        serialized_value_size=2,
        serialized_header_size=0,
    )


def test_sending_makes_a_producer_span_and_headers_carrying_it(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with kafka.sending(
        "payments", key=b"o-1", headers=[("app", b"x"), ("traceparent", b"stale")], order_id="o-1", tracer=tracer
    ) as headers:
        pass
    [span] = spans.get_finished_spans()
    assert span.name == "send payments" and span.kind is SpanKind.PRODUCER
    assert dict(span.attributes or {}) == {
        "messaging.system": "kafka",
        "messaging.destination.name": "payments",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.kafka.message.key": "o-1",
    }
    as_dict = dict(headers)
    assert [k for k, _ in headers].count("traceparent") == 1 and as_dict["app"] == b"x"
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    ctx = span.get_span_context()
    assert as_dict["traceparent"].startswith(f"00-{format_trace_id(ctx.trace_id)}-{ctx.span_id:016x}-".encode())
    assert as_dict["baggage"] == b"app.order.id=o-1"


def test_processing_continues_the_trace_with_baggage_current(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with kafka.sending("payments", order_id="o-1", tracer=tracer) as headers:
        pass
    seen: dict[str, Any] = {}
    with kafka.processing(record(headers), group="billing", tracer=tracer) as span:
        seen["order"] = order_id_from()
        seen["ctx"] = span.get_span_context()
    send, process = spans.get_finished_spans()
    assert seen["order"] == "o-1" and kafka.order_id_of(record(headers)) == "o-1"
    assert process.kind is SpanKind.CONSUMER and process.name == "process payments"
    assert process.context.trace_id == send.context.trace_id and process.parent.span_id == send.context.span_id
    attrs = dict(process.attributes or {})
    assert attrs["messaging.operation.type"] == "process" and attrs["messaging.destination.partition.id"] == "3"
    assert attrs["messaging.kafka.offset"] == 7 and attrs["messaging.consumer.group.name"] == "billing"
    assert attrs["messaging.kafka.message.key"] == "o-1"


def test_a_record_without_or_with_bad_headers_starts_a_fresh_trace(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    for headers in (None, [("traceparent", b"\xff\xfe garbage")], [("baggage", b"=;=")]):
        with kafka.processing(record(headers), tracer=tracer):
            assert order_id_from() is None
    assert len({s.context.trace_id for s in spans.get_finished_spans()}) == 3
    assert kafka.extract_headers([("traceparent", b"nope")]) is not None


def test_a_tombstone_is_marked(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with kafka.processing(record(None, value=None), tracer=tracer):
        pass
    assert dict(spans.get_finished_spans()[0].attributes or {})["messaging.kafka.message.tombstone"] is True


def test_an_exception_in_the_block_is_recorded_and_re_raised(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with pytest.raises(KeyError), kafka.processing(record(None), tracer=tracer):
        raise KeyError("sku")
    [span] = spans.get_finished_spans()
    assert not span.status.is_ok and dict(span.attributes or {})["error.type"] == "KeyError"


class FakeConsumer:
    def __init__(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        self.polled = polled
        self.asked: dict[str, Any] = {}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        self.asked = {"timeout_ms": timeout_ms, "max_records": max_records}
        out, self.polled = self.polled, {}
        return out


def test_poll_flattens_the_batch_and_links_a_receive_span(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    with kafka.sending("payments", tracer=tracer) as headers:
        pass
    polled = {
        TopicPartition("payments", 0): [record(headers, offset=1), record(None, offset=2)],
        TopicPartition("payments", 1): [record(headers, offset=5)],
    }
    consumer = FakeConsumer(polled)
    got = kafka.poll(consumer, timeout_ms=250, max_records=10, group="billing", tracer=tracer)
    assert [r.offset for r in got] == [1, 2, 5] and consumer.asked == {"timeout_ms": 250, "max_records": 10}
    assert kafka.poll(consumer, tracer=tracer) == []  # an empty poll makes no span
    send, receive = spans.get_finished_spans()
    assert receive.name == "poll payments" and receive.kind is SpanKind.CLIENT
    attrs = dict(receive.attributes or {})
    assert attrs["messaging.operation.type"] == "receive" and attrs["messaging.batch.message_count"] == 3
    assert [link.context.span_id for link in receive.links] == [send.context.span_id] * 2
    assert kafka.records(polled) == got and kafka.records(iter(got)) == got and kafka.records(None) == []


def test_send_wraps_producer_send(tracer: Tracer, spans: InMemorySpanExporter) -> None:
    sent: dict[str, Any] = {}

    class Producer:
        def send(self, topic: str, **kwargs: Any) -> str:
            sent.update(kwargs, topic=topic)
            return "future"

    assert kafka.send(Producer(), "payments", b"v", key=b"o-1", order_id="o-1", tracer=tracer) == "future"
    assert sent["value"] == b"v" and sent["key"] == b"o-1" and dict(sent["headers"])["baggage"] == b"app.order.id=o-1"


def test_inject_headers_keeps_unusual_headers_and_never_raises() -> None:
    assert kafka.inject_headers([("x", b"1"), (b"raw", b"2")]) == [("x", b"1"), (b"raw", b"2")]  # type: ignore[list-item]
    assert kafka.inject_headers(42) == []  # type: ignore[arg-type]
