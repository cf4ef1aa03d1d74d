"""OTLP request decoding: spans recorded by the real OpenTelemetry SDK, encoded by its OTLP
exporter's encoder, mapped to hop events — protobuf and OTLP/JSON alike."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collectors.otlp import OtlpError, SpanBatch, decode_traces, encoding_of, export_response, status_body
from collectors.spanmap import SpanMapping, hop_name, span_event_id
from tests.collectors.otlp_bodies import T0_NS, json_body, protobuf_body, record_spans

SPANS = record_spans()
_OTLP_KEYS = (
    "resourceSpans",
    "scopeSpans",
    "spans",
    "resource",
    "attributes",
    "key",
    "value",
    "stringValue",
    "intValue",
    "boolValue",
    "doubleValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
    "values",
    "traceId",
    "spanId",
    "parentSpanId",
    "name",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "status",
    "code",
    "app.order.id",
)


def _by_hop(batch: SpanBatch) -> dict[str, object]:
    return {e.hop: e for e in batch.events}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(protobuf_body(SPANS), id="protobuf"),
        pytest.param(json_body(SPANS), id="json"),
        pytest.param(json_body(SPANS, upper=True), id="json-uppercase-hex"),
        pytest.param(json_body(SPANS, snake=True), id="json-snake-case"),
    ],
)
def test_spans_with_the_order_attribute_become_hop_events(body: bytes) -> None:
    encoding = "protobuf" if not body.startswith(b"{") else "json"
    batch = decode_traces(body, encoding, SpanMapping())
    assert batch.spans == 4 and batch.ignored == 1 and batch.rejected == []
    hops = {e.hop: e for e in batch.events}
    assert set(hops) == {"checkout.placed", "payment.authorized", "inventory_reserve"}
    root = next(s for s in SPANS if s.name == "checkout.placed")
    placed = hops["checkout.placed"]
    assert placed.order_id == "o-1" and placed.customer_id == "c-9" and placed.service == "checkout"
    assert placed.ts == T0_NS // 1_000_000
    assert placed.trace_id == f"{root.context.trace_id:032x}"
    assert placed.span_id == f"{root.context.span_id:016x}" and placed.parent_span_id == ""
    assert placed.event_id == span_event_id(placed.trace_id, placed.span_id)
    assert placed.attrs == {"amount": "42.5", "items": '["a","b"]'}
    paid = hops["payment.authorized"]
    assert paid.parent_span_id == placed.span_id and paid.attrs == {"retries": "2"} and paid.status == "ok"
    assert hops["inventory_reserve"].status == "error"
    assert {e.trace_id for e in batch.events} == {placed.trace_id}


def test_configured_attribute_names_are_used() -> None:
    mapping = SpanMapping(order="app.customer.id", hop="x.hop", customer="x.customer", journey="x.journey")
    batch = decode_traces(protobuf_body(SPANS), "protobuf", mapping)
    [only] = batch.events
    assert only.order_id == "c-9" and only.hop == "checkout.placed" and batch.ignored == 3
    assert "app.order.id" in only.attrs


def test_a_span_with_an_unusable_hop_is_rejected_with_its_reason_and_the_others_pass() -> None:
    doc = json.loads(json_body(SPANS))
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans[0]["attributes"].append({"key": "app.order.hop", "value": {"stringValue": "Not A Hop"}})
    batch = decode_traces(json.dumps(doc).encode(), "json", SpanMapping())
    assert len(batch.events) == 2 and len(batch.rejected) == 1
    assert "span 0" in batch.rejected[0] and "hop: 'Not A Hop' must match" in batch.rejected[0]
    assert spans[0]["traceId"] in batch.rejected[0]


def test_json_accepts_int64_as_numbers_and_strings_and_ignores_unknown_fields() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pay"}}]},
                "futureField": {"x": 1},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0AF7651916CD43DD8448EB211C80319C",
                                "spanId": "B7AD6B7169203331",
                                "name": "payment.authorized",
                                "startTimeUnixNano": T0_NS,
                                "endTimeUnixNano": str(T0_NS + 1),
                                "kind": 2,
                                "status": {"code": 2, "message": "declined"},
                                "attributes": [
                                    {"key": "app.order.id", "value": {"intValue": "12345"}},
                                    {"key": "attempt", "value": {"intValue": 3}},
                                    {"key": "ok", "value": {"boolValue": False}},
                                    {"key": "blob", "value": {"bytesValue": "AAE="}},
                                    {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "a", "value": {}}]}}},
                                ],
                                "someNewField": True,
                            }
                        ]
                    }
                ],
            }
        ]
    }
    [ev] = decode_traces(json.dumps(body).encode(), "json", SpanMapping()).events
    assert ev.order_id == "12345" and ev.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert ev.span_id == "b7ad6b7169203331" and ev.status == "error" and ev.service == "pay"
    assert ev.attrs == {"attempt": "3", "ok": "false", "blob": "AAE=", "kv": '{"a":""}'}


def test_bad_ids_and_times_are_rejected_per_span() -> None:
    def span(**over: object) -> dict[str, object]:
        base: dict[str, object] = {
            "traceId": "0af7651916cd43dd8448eb211c80319c",
            "spanId": "b7ad6b7169203331",
            "name": "payment.authorized",
            "startTimeUnixNano": str(T0_NS),
            "attributes": [{"key": "app.order.id", "value": {"stringValue": "o-1"}}],
        }
        return base | over

    spans = [
        span(traceId="00000000000000000000000000000000"),
        span(spanId="xyz"),
        span(startTimeUnixNano="soon"),
        span(startTimeUnixNano="0"),
        span(),
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    batch = decode_traces(body, "json", SpanMapping())
    assert len(batch.events) == 1 and len(batch.rejected) == 4
    assert "trace_id" in batch.rejected[0] and "not all zero" in batch.rejected[0]
    assert "span_id: 'xyz'" in batch.rejected[1]
    assert "startTimeUnixNano: 'soon'" in batch.rejected[2]
    assert "no start or end time" in batch.rejected[3]


@pytest.mark.parametrize(
    ("body", "encoding", "says"),
    [
        (b"\xff\xff\xff", "protobuf", "not an OTLP ExportTraceServiceRequest"),
        (b"{not json", "json", "not valid JSON"),
        (b"[1, 2]", "json", "expected an OTLP/JSON ExportTraceServiceRequest object, got an array"),
        (b'{"resourceSpans": {"a": 1}}', "json", "resourceSpans: expected a JSON array, got an object"),
        (b'{"resourceSpans": [{"scopeSpans": 3}]}', "json", "resourceSpans[0].scopeSpans: expected a JSON array"),
    ],
)
def test_malformed_bodies_raise_otlp_error_naming_what_is_wrong(body: bytes, encoding: str, says: str) -> None:
    with pytest.raises(OtlpError, match=says.replace("[", r"\[").replace("]", r"\]")):
        decode_traces(body, encoding, SpanMapping())  # type: ignore[arg-type]


def test_empty_protobuf_request_is_an_empty_batch() -> None:
    assert decode_traces(b"", "protobuf", SpanMapping()) == SpanBatch()


def test_responses_carry_partial_success_in_the_request_encoding() -> None:
    full = SpanBatch(spans=3)
    assert export_response("json", full) == b"{}"
    assert ExportTraceServiceResponse.FromString(export_response("protobuf", full)).HasField("partial_success") is False
    partial = SpanBatch(spans=9, rejected=[f"span {i}: bad" for i in range(7)])
    decoded = ExportTraceServiceResponse.FromString(export_response("protobuf", partial))
    assert decoded.partial_success.rejected_spans == 7
    assert decoded.partial_success.error_message.startswith("7 spans carrying an order id could not be used: span 0")
    assert "and 2 more" in decoded.partial_success.error_message
    as_json = json.loads(export_response("json", partial))
    assert as_json["partialSuccess"]["rejectedSpans"] == "7"


def test_status_body_is_a_google_rpc_status() -> None:
    from google.rpc.status_pb2 import Status

    status = Status.FromString(status_body("protobuf", 400, "the body is not protobuf" * 10))
    assert status.code == 3 and status.message == "the body is not protobuf" * 10
    assert json.loads(status_body("json", 503, "later")) == {"code": 14, "message": "later"}


def test_content_types() -> None:
    assert encoding_of("application/x-protobuf") == "protobuf"
    assert encoding_of("Application/JSON; charset=utf-8") == "json"
    assert encoding_of("text/plain") is None and encoding_of(None) is None


def test_span_names_become_hop_names() -> None:
    assert hop_name("oteldemo.CheckoutService/PlaceOrder") == "oteldemo.checkoutservice_placeorder"
    assert hop_name("GET /api/orders/{id}") == "get_api_orders_id"
    assert hop_name("///") == ""
    assert len(hop_name("x" * 200)) == 64


def test_attributes_stay_within_contract_limits() -> None:
    from collectors.spanmap import span_event

    attributes: dict[str, object] = {"app.order.id": "o-1", "k" * 65: "long key", "big": "v" * 5000}
    attributes |= {f"a{i}": i for i in range(100)}
    wire = span_event(SpanMapping(), attributes, name="x", trace_id="1" * 32, span_id="2" * 16, start_ns=T0_NS)
    assert wire is not None
    attrs = wire["attrs"]
    assert isinstance(attrs, dict)
    assert len(attrs) == 64 and "k" * 65 not in attrs and attrs["big"] == "v" * 1024


def test_mapping_problems_name_the_setting() -> None:
    assert SpanMapping().problems() == {}
    assert SpanMapping(order="", hop="app.order.hop").problems() == {
        "order": "'' must be 1–255 printable characters without outer spaces"
    }
    assert "already the order attribute" in SpanMapping(hop="app.order.id").problems()["hop"]


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(_OTLP_KEYS)
    | st.just("0af7651916cd43dd8448eb211c80319c"),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_OTLP_KEYS), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(doc=_JSON_VALUES)
def test_any_json_body_gives_a_batch_or_otlp_error_never_another_exception(doc: object) -> None:
    with contextlib.suppress(OtlpError):
        decode_traces(json.dumps(doc).encode(), "json", SpanMapping())


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(min_value=0), flip=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_any_damaged_protobuf_body_gives_a_batch_or_otlp_error(cut: int, flip: int, byte: int) -> None:
    body = bytearray(protobuf_body(SPANS))
    body[flip % len(body)] = byte
    with contextlib.suppress(OtlpError):
        decode_traces(bytes(body[: len(body) - cut % len(body)]), "protobuf", SpanMapping())
