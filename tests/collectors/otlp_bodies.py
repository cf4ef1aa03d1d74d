"""Real OTLP request bodies for tests: spans recorded by the OpenTelemetry SDK, encoded by the OTLP
exporter's own encoder (protobuf), and OTLP/JSON written from it by the specification's rules
(hex ids, integer enums, lowerCamelCase, int64 as strings)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

T0_NS = 1_795_000_000_000 * 1_000_000  # 2026-11-18T…, a fixed start time


def record_spans(service: str = "checkout") -> tuple[ReadableSpan, ...]:
    """Three hop spans of order o-1 (one failing, one named by app.order.hop) and one plain span."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("checkout.placed", start_time=T0_NS) as root:
        root.set_attribute("app.order.id", "o-1")
        root.set_attribute("app.customer.id", "c-9")
        root.set_attribute("amount", 42.5)
        root.set_attribute("items", ["a", "b"])
        with tracer.start_as_current_span("charge card", start_time=T0_NS + 5_000_000) as pay:
            pay.set_attribute("app.order.id", "o-1")
            pay.set_attribute("app.order.hop", "payment.authorized")
            pay.set_attribute("retries", 2)
        with tracer.start_as_current_span("Inventory/Reserve", start_time=T0_NS + 9_000_000) as inv:
            inv.set_attribute("app.order.id", "o-1")
            inv.set_status(Status(StatusCode.ERROR, "out of stock"))
        with tracer.start_as_current_span("GET /health", start_time=T0_NS + 1_000_000):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def protobuf_body(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def json_body(spans: Sequence[ReadableSpan], *, upper: bool = False, snake: bool = False) -> bytes:
    """OTLP/JSON: json_format writes bytes as base64 and keeps int64 as strings; the OTLP/JSON
    rules want ids in hex and enums as integers, which this does."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True, preserving_proto_field_name=snake)
    _hex_ids(doc, upper)
    return json.dumps(doc).encode()


def _hex_ids(node: Any, upper: bool) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                text = base64.b64decode(value).hex()
                node[key] = text.upper() if upper else text
            else:
                _hex_ids(value, upper)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item, upper)
