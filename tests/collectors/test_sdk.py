"""The Python SDK: never blocks or raises into the caller, counts every drop, batches, retries."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, StatusCode

import collectors
from collectors.propagation import activated, extract, inject, order_context
from collectors.sdk import (
    DEFAULT_URL,
    Client,
    MemoryTransport,
    RetryPolicy,
    SdkConfig,
    SdkConfigError,
    SdkStats,
    SendResult,
)
from tracer.model import derive_trace_id

FAST = RetryPolicy(attempts=3, base=0.01, max_delay=0.05)


@pytest.fixture
def make_client() -> Iterator[Callable[..., Client]]:
    """Clients with an empty environment, shut down after the test."""
    made: list[Client] = []

    def make(transport: Any = None, *, retry: RetryPolicy = FAST, provider: Any = None, **settings: Any) -> Client:
        settings.setdefault("flush_interval", 0.02)
        client = Client(
            SdkConfig.load({}, **settings),
            transport=transport if transport is not None else MemoryTransport(),
            retry=retry,
            tracer_provider=provider if provider is not None else NoOpTracerProvider(),
            rng=random.Random(7),
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.shutdown(timeout=0.3)


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class Gate:
    """A transport that blocks in ``send`` until released: a server that hangs."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.inner = MemoryTransport()

    def send(self, body: bytes) -> SendResult:
        self.entered.set()
        self.release.wait(10)
        return self.inner.send(body)

    def close(self) -> None:
        self.release.set()


class AlwaysRetry:
    def __init__(self) -> None:
        self.calls = 0

    def send(self, body: bytes) -> SendResult:
        self.calls += 1
        return SendResult("retry", detail="HTTP 503: busy")

    def close(self) -> None:
        pass


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


# -- the caller's side --------------------------------------------------------------------------


def test_track_returns_while_the_server_hangs(make_client: Callable[..., Client]) -> None:
    gate = Gate()
    client = make_client(gate, buffer=100)
    for i in range(1000):
        client.track(f"o-{i}", "checkout.placed")
    assert client.stats().dropped_full > 0  # nothing blocked: the rest was dropped and counted
    gate.release.set()


def test_track_drops_and_counts_when_the_buffer_is_full(make_client: Callable[..., Client]) -> None:
    gate = Gate()
    client = make_client(gate, buffer=3, batch=1)
    client.track("o-0", "checkout.placed")
    assert gate.entered.wait(5)  # the sender holds o-0 and hangs; the buffer is empty
    for i in range(1, 11):
        client.track(f"o-{i}", "checkout.placed")
    assert client.stats().dropped_full == 7
    assert client.stats().queued == 3
    gate.release.set()
    assert client.flush(5)
    assert [e["order_id"] for e in gate.inner.delivered] == ["o-0", "o-1", "o-2", "o-3"]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((None, "checkout.placed"), {}),  # no order id, none in baggage
        ((object(), "checkout.placed"), {}),
        (("o-1", 5), {}),
        (("o-1", "checkout.placed"), {"ts": float("nan")}),
        (("o-1", "checkout.placed"), {"attrs": 5}),
        (("o-1", "checkout.placed"), {"journey": object()}),  # not JSON
    ],
)
def test_track_never_raises_on_unusable_arguments_and_counts_them_invalid(
    make_client: Callable[..., Client], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    client.track(*args, **kwargs)
    assert client.flush(5)
    assert client.stats().invalid == 1
    assert transport.bodies == []


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("o-1", "Not A Hop"), {}),
        (("o-1", "checkout.placed"), {"ts": "yesterday"}),
        (("o-1", "checkout.placed"), {"attrs": {f"k{i}": "v" for i in range(65)}}),
        (("o-1", "checkout.placed"), {"status": "maybe"}),
        (("o-1", "checkout.placed"), {"customer_id": ["c"]}),
        (("x" * 129, "checkout.placed"), {}),
    ],
)
def test_events_breaking_the_contract_are_rejected_by_the_server_and_counted(
    make_client: Callable[..., Client], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    transport = MemoryTransport()  # answers with the server's own rules
    client = make_client(transport)
    client.track(*args, **kwargs)
    assert client.flush(5)
    assert (client.stats().rejected_by_server, client.stats().sent, client.stats().invalid) == (1, 0, 0)
    assert transport.delivered == []


def test_invalid_events_are_logged_once_per_interval_not_per_event(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="ordertrail.sdk"):
        for _ in range(100):
            client.track(None, "checkout.placed")
        assert client.flush(5)
        assert caplog.records == []  # the log interval (10 s) has not passed
        client.shutdown(1)
    assert len(caplog.records) == 1
    assert "100 invalid" in caplog.records[0].getMessage()
    assert "none in baggage" in caplog.records[0].getMessage()


def test_attributes_become_strings_and_keywords_win_over_attrs(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport, service="checkout")
    client.track(42, "checkout.placed", customer_id=7, attrs={"amount": 1, "channel": "web"}, amount=12.5, vip=True)
    assert client.flush(5)
    [event] = transport.delivered
    assert event["order_id"] == "42"
    assert event["customer_id"] == "7"
    assert event["service"] == "checkout"
    assert event["attrs"] == {"amount": "12.5", "channel": "web", "vip": "true"}


def test_track_takes_the_event_time_from_ts(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    client.track("o-1", "checkout.placed", ts=1_795_860_123_456)
    client.track("o-1", "payment.authorized", ts=datetime(2026, 11, 28, 10, 2, 3, 123000, tzinfo=UTC))
    client.track("o-1", "inventory.reserved", ts="2026-11-22T10:02:04.000Z")
    assert client.flush(5)
    # epoch milliseconds go out as numbers (CONTRACT: inputs may give them), strings as given
    assert [e["ts"] for e in transport.delivered] == [1_795_860_123_456, 1_795_860_123_123, "2026-11-22T10:02:04.000Z"]


def test_emit_sends_a_ready_made_event(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport, service="shop")
    client.emit({"order_id": "o-1", "hop": "checkout.placed", "ts": "2026-11-22T10:02:03.123Z", "journey": "web_order"})
    client.emit({"order_id": "o-1", "hop": "checkout.placed", "ts": 0})  # rejected: counted
    assert client.flush(5)
    [event] = transport.delivered
    assert (event["journey"], event["service"]) == ("web_order", "shop")
    assert client.stats().rejected_by_server == 1


# -- trace ids ----------------------------------------------------------------------------------


def test_track_without_a_span_derives_the_trace_id_from_the_order_id(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    client.track("o-1", "checkout.placed")
    assert client.flush(5)
    [event] = transport.delivered
    assert event["trace_id"] == derive_trace_id("o-1")
    assert "span_id" not in event and "parent_span_id" not in event


def test_track_inside_a_span_uses_its_trace_and_reports_it_as_parent(
    make_client: Callable[..., Client], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = spans
    transport = MemoryTransport()
    client = make_client(transport)
    with provider.get_tracer("test").start_as_current_span("handle checkout") as span:
        client.track("o-1", "checkout.placed")
    assert client.flush(5)
    [event] = transport.delivered
    ctx = span.get_span_context()
    assert event["trace_id"] == f"{ctx.trace_id:032x}"
    assert event["parent_span_id"] == f"{ctx.span_id:016x}"


def test_track_downstream_takes_trace_and_order_id_from_propagated_headers(make_client: Callable[..., Client]) -> None:
    upstream = inject({}, order_context("o-9", trace.set_span_in_context(trace.NonRecordingSpan(_span_context()))))
    transport = MemoryTransport()
    client = make_client(transport)
    with activated(extract(upstream)):
        client.track(None, "inventory.reserved")
    assert client.flush(5)
    [event] = transport.delivered
    assert (event["order_id"], event["trace_id"]) == ("o-9", "4bf92f3577b34da6a3ce929d0e0e4736")


def _span_context() -> trace.SpanContext:
    return trace.SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True, trace_flags=trace.TraceFlags(1)
    )


# -- the hop context manager --------------------------------------------------------------------


def test_hop_opens_a_span_with_the_order_attributes_and_reports_its_ids(
    make_client: Callable[..., Client], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    transport = MemoryTransport()
    client = make_client(transport, provider=provider)
    with provider.get_tracer("test").start_as_current_span("request"), client.hop("o-1", "payment.authorized", psp="x"):
        pass
    assert client.flush(5)
    hop_span, request_span = exporter.get_finished_spans()
    assert hop_span.attributes == {"app.order.id": "o-1", "app.order.hop": "payment.authorized", "psp": "x"}
    [event] = transport.delivered
    assert event["trace_id"] == f"{hop_span.context.trace_id:032x}"
    assert event["span_id"] == f"{hop_span.context.span_id:016x}"
    assert event["parent_span_id"] == f"{request_span.context.span_id:016x}"
    assert event["attrs"] == {"psp": "x"}
    assert "status" not in event


def test_hop_records_the_error_and_reraises_the_same_exception(
    make_client: Callable[..., Client], spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, exporter = spans
    transport = MemoryTransport()
    client = make_client(transport, provider=provider)
    boom = ValueError("card declined")
    with pytest.raises(ValueError) as raised, client.hop("o-1", "payment.authorized"):
        raise boom
    assert raised.value is boom
    assert client.flush(5)
    [event] = transport.delivered
    assert event["status"] == "error"
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_hop_reports_nothing_when_the_block_is_interrupted(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    with pytest.raises(KeyboardInterrupt), client.hop("o-1", "payment.authorized"):
        raise KeyboardInterrupt
    assert client.flush(5)
    assert transport.delivered == []


def test_hop_without_an_otel_sdk_derives_the_trace_id(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    with client.hop("o-1", "payment.authorized") as scope:
        scope.attrs["amount"] = "10"
    assert client.flush(5)
    [event] = transport.delivered
    assert event["trace_id"] == derive_trace_id("o-1")
    assert "span_id" not in event
    assert event["attrs"] == {"amount": "10"}


def test_hop_puts_the_order_id_in_baggage_for_outgoing_calls(make_client: Callable[..., Client]) -> None:
    client = make_client()
    with client.hop("o-1", "payment.authorized"):
        headers = inject({})
    assert headers["baggage"] == "app.order.id=o-1"


def test_hop_as_a_decorator_takes_the_order_id_from_baggage(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)

    @client.hop(None, "inventory.reserved")
    def reserve() -> str:
        return "reserved"

    for order_id in ("o-1", "o-2"):
        with activated(order_context(order_id)):
            assert reserve() == "reserved"
    assert client.flush(5)
    assert [e["order_id"] for e in transport.delivered] == ["o-1", "o-2"]


# -- configuration ------------------------------------------------------------------------------


def test_defaults_apply_without_arguments_or_environment() -> None:
    assert SdkConfig.load({}) == SdkConfig()
    assert SdkConfig().url == DEFAULT_URL == "http://127.0.0.1:4320"


def test_arguments_beat_the_environment_which_beats_defaults() -> None:
    environ = {
        "ORDERTRAIL_URL": "http://collector:9000/",
        "ORDERTRAIL_SERVICE": "payments",
        "ORDERTRAIL_DISABLED": "true",
        "ORDERTRAIL_BUFFER": "2000",
        "ORDERTRAIL_BATCH": "100",
        "ORDERTRAIL_FLUSH_INTERVAL": "250ms",
        "ORDERTRAIL_TIMEOUT": "2",
    }
    from_env = SdkConfig.load(environ)
    assert from_env == SdkConfig("http://collector:9000", "payments", True, 2000, 100, 0.25, 2.0)
    explicit = SdkConfig.load(environ, url="https://ot.example", service="shop", disabled=False, batch=50, timeout=1)
    assert explicit == SdkConfig("https://ot.example", "shop", False, 2000, 50, 0.25, 1.0)


def test_the_service_name_falls_back_to_otel_service_name() -> None:
    assert SdkConfig.load({"OTEL_SERVICE_NAME": "cart"}).service == "cart"
    assert SdkConfig.load({"OTEL_SERVICE_NAME": "cart", "ORDERTRAIL_SERVICE": "shop"}).service == "shop"


def test_unusable_environment_values_fall_back_to_defaults_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"ORDERTRAIL_URL": "ftp://x", "ORDERTRAIL_BUFFER": "-5", "ORDERTRAIL_FLUSH_INTERVAL": "soon"}
    with caplog.at_level(logging.WARNING, logger="ordertrail.sdk"):
        assert SdkConfig.load(environ) == SdkConfig()
    assert {r.getMessage().split("=")[0] for r in caplog.records} == {
        "ordertrail SDK: ORDERTRAIL_URL",
        "ordertrail SDK: ORDERTRAIL_BUFFER",
        "ordertrail SDK: ORDERTRAIL_FLUSH_INTERVAL",
    }


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("url", "localhost:4320"),
        ("url", "http://h:99999"),
        ("buffer", 0),
        ("batch", "many"),
        ("flush_interval", -1),
        ("timeout", 0),
    ],
)
def test_unusable_arguments_raise_naming_the_setting(setting: str, value: Any) -> None:
    with pytest.raises(SdkConfigError, match=f"^{setting}: {value!r}"):
        SdkConfig.load({}, **{setting: value})


def test_a_batch_never_exceeds_the_buffer() -> None:
    assert SdkConfig.load({}, buffer=10, batch=500).batch == 10


def test_a_disabled_client_sends_nothing_and_starts_no_thread(make_client: Callable[..., Client]) -> None:
    senders = sum(t.name == "ordertrail-sdk-sender" for t in threading.enumerate())
    transport = MemoryTransport()
    client = make_client(transport, disabled=True)
    client.track("o-1", "checkout.placed")
    with client.hop("o-1", "payment.authorized"):
        pass
    assert client.flush(1)
    assert transport.bodies == []
    assert client.stats() == SdkStats()
    assert sum(t.name == "ordertrail-sdk-sender" for t in threading.enumerate()) == senders


# -- batching, flushing, shutdown ---------------------------------------------------------------


def test_events_go_out_in_batches_of_at_most_batch_in_order(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport, batch=3, flush_interval=10)
    for i in range(10):
        client.track(f"o-{i}", "checkout.placed")
    assert client.flush(5)
    assert all(1 <= body.count(b"\n") + 1 <= 3 for body in transport.bodies)
    assert [e["order_id"] for e in transport.delivered] == [f"o-{i}" for i in range(10)]
    assert client.stats().sent == 10


def test_a_partial_batch_goes_out_after_the_flush_interval(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport, batch=100, flush_interval=0.05)
    client.track("o-1", "checkout.placed")
    assert wait_for(lambda: len(transport.delivered) == 1)


def test_shutdown_sends_what_is_queued_and_closes_the_transport(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport, flush_interval=10)
    for i in range(5):
        client.track(f"o-{i}", "checkout.placed")
    assert client.shutdown(5)
    assert len(transport.delivered) == 5
    assert transport.closed


def test_events_after_shutdown_are_counted_not_sent(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport()
    client = make_client(transport)
    client.shutdown(1)
    client.track("o-1", "checkout.placed")
    assert client.stats().dropped_closed == 1
    assert transport.bodies == []


def test_shutdown_gives_up_retrying_at_its_deadline(make_client: Callable[..., Client]) -> None:
    transport = AlwaysRetry()
    client = make_client(transport, retry=RetryPolicy(attempts=1000, base=1.0, max_delay=1.0))
    client.track("o-1", "checkout.placed")
    assert wait_for(lambda: transport.calls >= 1)
    assert client.shutdown(0.2) is True  # the thread ended, having given the batch up
    assert client.stats().dropped_failed == 1


# -- retries and failures -----------------------------------------------------------------------


def test_a_retried_batch_is_delivered_once_the_transport_recovers(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport([SendResult("retry"), SendResult("retry")])
    client = make_client(transport)
    client.track("o-1", "checkout.placed")
    assert client.flush(5)
    assert len(transport.bodies) == 3
    assert transport.bodies[0] == transport.bodies[2]  # the same bytes: the server dedupes by event id
    assert (client.stats().retries, client.stats().sent, client.stats().dropped_failed) == (2, 1, 0)


def test_a_batch_is_dropped_after_the_last_attempt(make_client: Callable[..., Client]) -> None:
    transport = AlwaysRetry()
    client = make_client(transport)
    client.track("o-1", "checkout.placed")
    assert client.flush(5)
    assert transport.calls == FAST.attempts
    assert (client.stats().dropped_failed, client.stats().retries) == (1, FAST.attempts - 1)


def test_a_refused_batch_is_not_retried(make_client: Callable[..., Client]) -> None:
    transport = MemoryTransport([SendResult("fail", detail="HTTP 400: not JSON")])
    client = make_client(transport)
    client.track("o-1", "checkout.placed")
    assert client.flush(5)
    assert (len(transport.bodies), client.stats().dropped_failed, client.stats().retries) == (1, 1, 0)


def test_a_retrying_batch_is_given_up_when_the_buffer_needs_room(make_client: Callable[..., Client]) -> None:
    transport = AlwaysRetry()
    client = make_client(transport, buffer=2, batch=1, retry=RetryPolicy(attempts=1000, base=0.02, max_delay=0.02))
    client.track("o-0", "checkout.placed")
    assert wait_for(lambda: transport.calls >= 1)
    client.track("o-1", "checkout.placed")
    client.track("o-2", "checkout.placed")  # the buffer is full now
    assert wait_for(lambda: client.stats().dropped_failed >= 1)


def test_a_transport_that_raises_costs_an_attempt_not_the_sender(make_client: Callable[..., Client]) -> None:
    class Broken(MemoryTransport):
        def send(self, body: bytes) -> SendResult:
            if not self.bodies:
                self.bodies.append(body)
                raise RuntimeError("transport bug")
            return super().send(body)

    transport = Broken()
    client = make_client(transport)
    client.track("o-1", "checkout.placed")
    assert client.flush(5)
    assert client.stats().sent == 1


def test_retry_delays_grow_with_jitter_and_honour_retry_after() -> None:
    policy = RetryPolicy(base=0.2, max_delay=1.0, max_retry_after=30.0)
    rng = random.Random(1)
    delays = [policy.delay(n, None, rng) for n in (1, 2, 3, 4, 5)]
    for n, delay in zip((1, 2, 3, 4, 5), delays, strict=True):
        full = min(1.0, 0.2 * 2 ** (n - 1))
        assert full / 2 <= delay <= full
    assert policy.delay(1, 7.0, rng) == 7.0
    assert policy.delay(1, 600.0, rng) == 30.0


# -- over HTTP, against a stub of POST /v1/events -----------------------------------------------


class StubServer:
    """Answers each POST from a script of (status, headers, body), then 202; keeps the bodies."""

    def __init__(self, script: list[tuple[int, dict[str, str], dict[str, Any]]]) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.bodies.append(body)
                stub.paths.append(self.path)
                n = body.count(b"\n") + 1
                status, headers, reply = stub.script.pop(0) if stub.script else (202, {}, {"accepted": n})
                data = json.dumps(reply).encode()
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def stub() -> Iterator[Callable[..., StubServer]]:
    started: list[StubServer] = []

    def start(*script: tuple[int, dict[str, str], dict[str, Any]]) -> StubServer:
        server = StubServer(list(script))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.integration
def test_http_retries_a_503_then_delivers(stub: Callable[..., StubServer], make_client: Callable[..., Client]) -> None:
    server = stub((503, {"Retry-After": "0"}, {"error": "not durable yet"}))
    client = Client(SdkConfig.load({"ORDERTRAIL_URL": server.url}, flush_interval=0.02), retry=FAST)
    try:
        client.track("o-1", "checkout.placed")
        assert client.flush(5)
        assert server.paths == ["/v1/events", "/v1/events"]
        assert json.loads(server.bodies[1])["order_id"] == "o-1"
        assert (client.stats().retries, client.stats().sent) == (1, 1)
    finally:
        client.shutdown(1)


@pytest.mark.integration
def test_http_counts_per_item_rejections(stub: Callable[..., StubServer]) -> None:
    server = stub((202, {}, {"accepted": 1, "rejected": [{"index": 1, "error": "hop: 'x' unknown"}]}))
    client = Client(SdkConfig.load({}, url=server.url, flush_interval=10), retry=FAST)
    try:
        client.track("o-1", "checkout.placed")
        client.track("o-1", "payment.authorized")
        assert client.flush(5)
        assert (client.stats().sent, client.stats().rejected_by_server) == (1, 1)
    finally:
        client.shutdown(1)


@pytest.mark.integration
def test_http_does_not_retry_a_413(stub: Callable[..., StubServer]) -> None:
    server = stub((413, {}, {"error": "too large"}))
    client = Client(SdkConfig.load({}, url=server.url), retry=FAST)
    try:
        client.track("o-1", "checkout.placed")
        assert client.flush(5)
        assert (len(server.bodies), client.stats().dropped_failed) == (1, 1)
    finally:
        client.shutdown(1)


@pytest.mark.integration
def test_http_server_down_nothing_blocks_and_drops_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = Client(SdkConfig.load({}, url=f"http://127.0.0.1:{port}", flush_interval=0.02, batch=10), retry=FAST)
    with caplog.at_level(logging.WARNING, logger="ordertrail.sdk"):
        for i in range(100):
            client.track(f"o-{i}", "checkout.placed")
        assert client.flush(10)
        stats = client.stats()
        assert (stats.sent, stats.dropped_failed, stats.queued) == (0, 100, 0)
        assert stats.retries == 10 * (FAST.attempts - 1)
        assert client.shutdown(1)
    [record] = caplog.records
    assert f"100 undeliverable to http://127.0.0.1:{port}" in record.getMessage()


# -- the module-level API -----------------------------------------------------------------------


def test_the_module_functions_use_the_configured_default_client() -> None:
    transport = MemoryTransport()
    collectors.configure(SdkConfig.load({}, service="shop"), transport=transport)
    try:
        collectors.track("o-1", "checkout.placed")
        with collectors.hop("o-1", "payment.authorized"):
            pass
        assert collectors.flush(5)
        assert [e["hop"] for e in transport.delivered] == ["checkout.placed", "payment.authorized"]
        assert collectors.stats().sent == 2
        assert collectors.get_client().config.service == "shop"
    finally:
        collectors.configure(SdkConfig.load({}, disabled=True))
    assert transport.closed


def test_server_rejections_are_logged_with_order_hop_and_reason(
    make_client: Callable[..., Client], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client()
    with caplog.at_level(logging.WARNING, logger="ordertrail.sdk"):
        client.track("o-1", "Not A Hop")
        client.shutdown(1)
    [record] = caplog.records
    assert "1 rejected by the server (last: 'o-1' 'Not A Hop': hop: 'Not A Hop' must match" in record.getMessage()
