"""``OrdertrailSpanProcessor`` on a real OpenTelemetry SDK ``TracerProvider``: one line to join."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

import collectors
from collectors import Client, MemoryTransport, SdkConfig
from collectors.otel_sdk import OrdertrailSpanProcessor
from collectors.spanmap import SpanMapping, span_event_id


@pytest.fixture
def transport() -> MemoryTransport:
    return MemoryTransport()


@pytest.fixture
def client(transport: MemoryTransport) -> Iterator[Client]:
    c = Client(SdkConfig(flush_interval=0.01), transport=transport)
    yield c
    c.shutdown(2)


def provider_with(processor: OrdertrailSpanProcessor, service: str | None = "payments") -> TracerProvider:
    resource = Resource.create({"service.name": service} if service else {})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor)
    return provider


def test_spans_carrying_the_order_id_become_hop_events(client: Client, transport: MemoryTransport) -> None:
    provider = provider_with(OrdertrailSpanProcessor(client))
    tracer = provider.get_tracer("payments")
    with tracer.start_as_current_span("charge") as parent:
        parent.set_attribute("http.route", "/charge")
        with tracer.start_as_current_span("Payment/Authorize") as span:
            span.set_attribute("app.order.id", "o-7")
            span.set_attribute("app.customer.id", "c-7")
            span.set_attribute("amount", 12.5)
    assert client.flush(5)
    [event] = transport.delivered
    ctx = span.get_span_context()
    assert event["order_id"] == "o-7" and event["hop"] == "payment_authorize" and event["customer_id"] == "c-7"
    assert event["trace_id"] == f"{ctx.trace_id:032x}" and event["span_id"] == f"{ctx.span_id:016x}"
    assert event["parent_span_id"] == f"{parent.get_span_context().span_id:016x}"
    assert event["event_id"] == span_event_id(event["trace_id"], event["span_id"])
    assert event["service"] == "payments" and event["attrs"] == {"amount": "12.5"}
    assert isinstance(span, ReadableSpan) and event["ts"] == span.start_time // 1_000_000  # type: ignore[operator]


def test_error_status_and_the_hop_attribute(client: Client, transport: MemoryTransport) -> None:
    provider = provider_with(OrdertrailSpanProcessor(client, mapping=SpanMapping(order="shop.order")))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("x") as span:
        span.set_attribute("shop.order", "o-8")
        span.set_attribute("app.order.hop", "inventory.reserved")
        span.set_status(Status(StatusCode.ERROR, "none left"))
    with tracer.start_as_current_span("no order here"):
        pass
    assert client.flush(5)
    [event] = transport.delivered
    assert (event["order_id"], event["hop"], event["status"]) == ("o-8", "inventory.reserved", "error")


def test_the_default_resource_leaves_the_service_to_the_client(transport: MemoryTransport) -> None:
    client = Client(SdkConfig(service="from-config", flush_interval=0.01), transport=transport)
    provider = provider_with(OrdertrailSpanProcessor(client), service=None)
    with provider.get_tracer("t").start_as_current_span("checkout.placed") as span:
        span.set_attribute("app.order.id", "o-9")
    assert client.flush(5)
    assert transport.delivered[0]["service"] == "from-config"
    client.shutdown(2)


def test_hop_spans_of_the_sdk_are_reported_once(client: Client, transport: MemoryTransport) -> None:
    processor = OrdertrailSpanProcessor(client)
    provider = provider_with(processor)
    client_with_provider = Client(SdkConfig(flush_interval=0.01), transport=transport, tracer_provider=provider)
    with client_with_provider.hop("o-10", "payment.authorized") as scope:
        pass
    assert client_with_provider.flush(5) and client.flush(5)
    [event] = transport.delivered
    ctx = scope.span.get_span_context()
    # hop() reports itself, with the event id an OTLP export of its span would give
    assert event["event_id"] == span_event_id(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert processor.reported == 0
    client_with_provider.shutdown(2)


class _Broken(Client):
    def emit(self, event: Any) -> None:
        raise RuntimeError("boom")


def test_it_never_raises_into_the_code_that_ends_the_span(transport: MemoryTransport) -> None:
    processor = OrdertrailSpanProcessor(_Broken(SdkConfig(), transport=transport))
    tracer = provider_with(processor).get_tracer("t")
    with tracer.start_as_current_span("checkout.placed") as span:
        span.set_attribute("app.order.id", "o-11")
    with tracer.start_as_current_span("!!!") as span:  # no hop name in the span name
        span.set_attribute("app.order.id", "o-12")
    assert processor.unusable == 2 and "hop" in processor.last_problem


def test_the_processor_is_exported_by_the_package() -> None:
    assert collectors.OrdertrailSpanProcessor is OrdertrailSpanProcessor
    assert "OrdertrailSpanProcessor" in collectors.__all__
