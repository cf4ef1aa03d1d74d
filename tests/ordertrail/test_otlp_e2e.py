"""OTLP end to end: the real OpenTelemetry Python SDK and its OTLP/HTTP exporter send spans to a
real ``ordertrail run`` subprocess (embedded bus, chDB); the lookup shows the hops under the
spans' trace id. Protobuf (plain and gzip) through the exporter, OTLP/JSON written from the same
spans, and a replay of the same spans that adds no hop."""

from __future__ import annotations

import re
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.collectors.otlp_bodies import json_body
from tests.ordertrail.test_run_e2e import Server

pytestmark = pytest.mark.integration


@pytest.fixture
def server(module_server: Server) -> Server:
    """One ``ordertrail run`` for the whole module (tests/conftest.py)."""
    return module_server


def shop_spans(order_id: str, *, fail_payment: bool = False) -> tuple[ReadableSpan, ...]:
    """A checkout service's spans for one order: the order's hops plus a span without one."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("POST /checkout") as root:
        root.set_attribute("app.order.id", order_id)
        root.set_attribute("app.order.hop", "checkout.placed")
        root.set_attribute("app.customer.id", "cust-otlp")
        with tracer.start_as_current_span("authorize") as pay:
            pay.set_attribute("app.order.id", order_id)
            pay.set_attribute("app.order.hop", "payment.authorized")
            if fail_payment:
                pay.set_status(Status(StatusCode.ERROR, "declined"))
        with tracer.start_as_current_span("SELECT orders"):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def exporter(server: Server, **kwargs: object) -> OTLPSpanExporter:
    return OTLPSpanExporter(endpoint=server.url + "/v1/traces", timeout=10, **kwargs)  # type: ignore[arg-type]


def trace_of(spans: tuple[ReadableSpan, ...]) -> str:
    return f"{spans[0].context.trace_id:032x}"


def _metric(server: Server, name: str) -> float:
    text = server.get("/metrics")[1]
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_sdk_exporter_sends_protobuf_and_the_lookup_shows_the_hops(server: Server) -> None:
    spans = shop_spans("otlp-pb-1")
    assert exporter(server).export(spans) is SpanExportResult.SUCCESS
    view = server.wait_for("/v1/orders/otlp-pb-1", lambda b: len(b["hops"]) == 2)
    assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized"]
    assert view["trace_id"] == trace_of(spans) and view["customer_id"] == "cust-otlp"
    assert {h["service"] for h in view["hops"]} == {"checkout"}
    found = server.get(f"/v1/orders?trace_id={trace_of(spans)}")[1]["orders"]
    assert [o["order_id"] for o in found] == ["otlp-pb-1"]


def test_gzip_exports_and_error_spans(server: Server) -> None:
    spans = shop_spans("otlp-gz-1", fail_payment=True)
    assert exporter(server, compression=Compression.Gzip).export(spans) is SpanExportResult.SUCCESS
    view = server.wait_for("/v1/orders/otlp-gz-1", lambda b: len(b["hops"]) == 2)
    assert view["status"] == "failed"
    assert [h["status"] for h in view["hops"]] == ["ok", "error"]


def test_otlp_json_from_the_same_spans(server: Server) -> None:
    spans = shop_spans("otlp-json-1")
    request = urllib.request.Request(
        server.url + "/v1/traces",
        data=json_body(spans, upper=True),
        method="POST",
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200 and r.headers["content-type"] == "application/json" and r.read() == b"{}"
    view = server.wait_for("/v1/orders/otlp-json-1", lambda b: len(b["hops"]) == 2)
    assert view["trace_id"] == trace_of(spans)


def test_a_replay_of_the_same_spans_adds_no_hop(server: Server) -> None:
    spans = shop_spans("otlp-replay-1")
    assert exporter(server).export(spans) is SpanExportResult.SUCCESS
    server.wait_for("/v1/orders/otlp-replay-1", lambda b: len(b["hops"]) == 2)
    duplicates = _metric(server, "ordertrail_events_duplicate_total")
    for _ in range(3):
        assert exporter(server).export(spans) is SpanExportResult.SUCCESS
    server.wait_for("/metrics", lambda text: _metric(server, "ordertrail_events_duplicate_total") >= duplicates + 6)
    view = server.get("/v1/orders/otlp-replay-1")[1]
    assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized"]
    assert _metric(server, 'ordertrail_otlp_spans_total{result="ignored"}') >= 4
