"""``POST /v1/traces`` over a fake pipeline: OTLP/HTTP status codes, encodings and limits."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from collectors.otlp import OtlpStats
from ordertrail.metrics import OtlpCollector, render
from ordertrail.server import OPENAPI, create_app
from tests.collectors.otlp_bodies import json_body, protobuf_body, record_spans
from tests.ordertrail.test_server import FakeApi
from tracer.model import HopEvent

SPANS = record_spans()
PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def stats() -> OtlpStats:
    return OtlpStats()


@pytest.fixture
def client(api: FakeApi, stats: OtlpStats) -> Iterator[TestClient]:
    with TestClient(create_app(api, max_body_bytes=64 * 1024, otlp_stats=stats)) as c:
        yield c


def test_protobuf_export_is_answered_in_protobuf_and_ingested(
    client: TestClient, api: FakeApi, stats: OtlpStats
) -> None:
    r = client.post("/v1/traces", content=protobuf_body(SPANS), headers=PB)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")
    assert sorted(e.hop for e in api.ingested) == ["checkout.placed", "inventory_reserve", "payment.authorized"]
    assert (stats.requests, stats.spans, stats.hops, stats.ignored, stats.rejected) == (1, 4, 3, 1, 0)


def test_json_export_is_answered_in_json(client: TestClient, api: FakeApi) -> None:
    r = client.post("/v1/traces", content=json_body(SPANS, upper=True), headers=JS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json" and r.json() == {}
    assert len(api.ingested) == 3 and all(e.trace_id == e.trace_id.lower() for e in api.ingested)


def test_gzip_bodies_are_accepted(client: TestClient, api: FakeApi) -> None:
    body = gzip.compress(protobuf_body(SPANS))
    r = client.post("/v1/traces", content=body, headers=PB | {"content-encoding": "gzip"})
    assert r.status_code == 200 and len(api.ingested) == 3


def test_partial_success_reports_rejected_spans(client: TestClient, api: FakeApi, stats: OtlpStats) -> None:
    r = client.post("/v1/traces", content=_with_bad_hop(), headers=PB)
    decoded = ExportTraceServiceResponse.FromString(r.content)
    assert r.status_code == 200 and decoded.partial_success.rejected_spans == 1
    assert "hop: 'No Hop!' must match" in decoded.partial_success.error_message
    assert len(api.ingested) == 2 and stats.rejected == 1


def _with_bad_hop() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest.FromString(protobuf_body(SPANS))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    kv = span.attributes.add()
    kv.key = "app.order.hop"
    kv.value.string_value = "No Hop!"
    return request.SerializeToString()


@pytest.mark.parametrize(("headers", "encoding"), [(PB, "protobuf"), (JS, "json")])
def test_malformed_bodies_are_400_with_a_status_in_the_request_encoding(
    client: TestClient, api: FakeApi, headers: dict[str, str], encoding: str
) -> None:
    r = client.post("/v1/traces", content=b"\xff\x00garbage{", headers=headers)
    assert r.status_code == 400 and "retry-after" not in r.headers
    message = Status.FromString(r.content).message if encoding == "protobuf" else r.json()["message"]
    assert "not" in message and api.ingested == []


def test_broken_gzip_is_400(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"not gzip", headers=PB | {"content-encoding": "gzip"})
    assert r.status_code == 400 and "not gzip data" in Status.FromString(r.content).message


def test_oversize_bodies_are_413_sent_or_decompressed(client: TestClient, stats: OtlpStats) -> None:
    r = client.post("/v1/traces", content=b"\x00" * (64 * 1024 + 1), headers=PB)
    assert r.status_code == 413 and "at most 65536" in Status.FromString(r.content).message
    bomb = gzip.compress(b"{" + b" " * (1024 * 1024) + b"}")
    r = client.post("/v1/traces", content=bomb, headers=JS | {"content-encoding": "gzip"})
    assert r.status_code == 413 and "decompressed body exceeds" in r.json()["message"]
    assert stats.refused == {413: 2}


def test_an_unsupported_content_type_is_415(client: TestClient) -> None:
    r = client.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/x-protobuf" in r.json()["message"]
    r = client.post("/v1/traces", content=b"x", headers=PB | {"content-encoding": "br"})
    assert r.status_code == 415


def test_a_bus_failure_is_503_with_retry_after(client: TestClient, api: FakeApi) -> None:
    api.fail = True
    r = client.post("/v1/traces", content=protobuf_body(SPANS), headers=PB)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert Status.FromString(r.content).code == 14 and "disk full" in Status.FromString(r.content).message


class _SlowApi(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def ingest(self, events: Sequence[HopEvent]) -> None:
        self.entered.set()
        self.release.wait(10)
        super().ingest(events)


def test_exports_beyond_the_in_flight_limit_are_429_with_retry_after() -> None:
    api = _SlowApi()
    with TestClient(create_app(api, max_inflight=1)) as client:
        first: list[int] = []
        worker = threading.Thread(
            target=lambda: first.append(client.post("/v1/traces", content=protobuf_body(SPANS), headers=PB).status_code)
        )
        worker.start()
        assert api.entered.wait(10)
        r = client.post("/v1/traces", content=protobuf_body(SPANS), headers=PB)
        api.release.set()
        worker.join(10)
    assert r.status_code == 429 and r.headers["retry-after"] == "1" and Status.FromString(r.content).code == 8
    assert first == [200] and len(api.ingested) == 3


def test_openapi_describes_the_route() -> None:
    post = OPENAPI["paths"]["/v1/traces"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/x-protobuf", "application/json"}
    assert {"200", "400", "413", "415", "429", "503"} <= set(post["responses"])


def test_otlp_metrics_are_rendered_and_documented(api: FakeApi, stats: OtlpStats) -> None:
    rejected: list[int] = []
    with TestClient(create_app(api, otlp_stats=stats, on_rejected=rejected.append)) as client:
        client.post("/v1/traces", content=_with_bad_hop(), headers=PB)
        client.post("/v1/traces", content=b"x", headers={"content-type": "text/plain"})
    registry = CollectorRegistry()
    registry.register(OtlpCollector(stats))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(render(registry).decode())
        for s in family.samples
    }
    assert samples[("ordertrail_otlp_requests_total", ())] == 2
    assert samples[("ordertrail_otlp_spans_total", (("result", "hop"),))] == 2
    assert samples[("ordertrail_otlp_spans_total", (("result", "ignored"),))] == 1
    assert samples[("ordertrail_otlp_spans_total", (("result", "rejected"),))] == 1
    assert samples[("ordertrail_otlp_refused_requests_total", (("code", "415"),))] == 1
    assert rejected == [1]  # also counted with the rejected events of /v1/events
    docs = (Path(__file__).resolve().parents[2] / "docs" / "dashboards.md").read_text()
    for name in (
        "ordertrail_otlp_requests_total",
        "ordertrail_otlp_spans_total",
        "ordertrail_otlp_refused_requests_total",
    ):
        assert f"| `{name}` |" in docs
