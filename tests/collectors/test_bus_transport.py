"""The SDK's transport to the bus: one record per event, keyed by order id, trace context in the
headers; lines it cannot key are refused with the reason; a bus failure is worth a retry."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest

from collectors.bus_transport import BusTransport
from collectors.sdk import Client, SdkConfig, transport_for
from tracer.bus import HOPS_TOPIC, BusError, Message, partition_for
from tracer.fakebus import MemoryBus

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_each_event_becomes_a_record_keyed_by_its_order_with_its_traceparent() -> None:
    bus = MemoryBus({HOPS_TOPIC: 8})
    body = (
        b'{"order_id":"o-1","hop":"checkout.placed","ts":1,"trace_id":"' + TRACE.encode() + b'",'
        b'"span_id":"00f067aa0ba902b7"}\n{"order_id":"o-2","hop":"checkout.placed","ts":2}'
    )
    result = BusTransport("kafka://unused:9092", producer=bus).send(body)
    assert (result.outcome, result.accepted, result.rejected) == ("ok", 2, ())
    records = {r.key: r for r in bus.records(HOPS_TOPIC)}
    first = records["o-1"]
    assert first.partition == partition_for("o-1", 8)
    assert first.value == body.split(b"\n")[0]
    assert first.header("traceparent") == f"00-{TRACE}-00f067aa0ba902b7-01".encode()
    assert records["o-2"].header("traceparent") is None  # no span known: no header


def test_a_line_without_an_order_id_is_refused_with_the_reason_and_the_rest_delivered() -> None:
    bus = MemoryBus({HOPS_TOPIC: 8})
    body = b'{"hop":"x","ts":1}\n[1,2]\n{"order_id":"o-3","hop":"checkout.placed","ts":3}'
    result = BusTransport("kafka://unused:9092", producer=bus).send(body)
    assert result.accepted == 1
    assert [i for i, _ in result.rejected] == [0, 1]
    assert "order_id" in result.rejected[0][1]
    assert [r.key for r in bus.records(HOPS_TOPIC)] == ["o-3"]


class _Down:
    def produce_batch(self, topic: str, messages: Sequence[Message]) -> list[tuple[int, int]]:
        raise BusError("Kafka at kafka://broker:9092 cannot be reached")


def test_an_unreachable_bus_is_worth_a_retry() -> None:
    result = BusTransport("kafka://broker:9092", producer=_Down()).send(b'{"order_id":"o","hop":"h","ts":1}')
    assert result.outcome == "retry" and "cannot be reached" in result.detail


def test_ordertrail_bus_in_the_environment_picks_the_bus_transport_and_a_bad_one_is_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = SdkConfig.load({"ORDERTRAIL_BUS": "kafka://k1:9092,k2:9092"})
    assert config.bus == "kafka://k1:9092,k2:9092"
    assert isinstance(transport_for(config), BusTransport)  # no connection made yet
    with caplog.at_level(logging.WARNING, logger="ordertrail.sdk"):
        bad = SdkConfig.load({"ORDERTRAIL_BUS": "redis://k1"})
    assert bad.bus == "" and "ORDERTRAIL_BUS" in caplog.text


def test_the_sdk_client_delivers_through_the_bus_transport() -> None:
    bus = MemoryBus({HOPS_TOPIC: 8})
    client = Client(SdkConfig(bus="kafka://unused:9092"), transport=BusTransport("kafka://unused:9092", producer=bus))
    client.track("o-9", "checkout.placed")
    assert client.flush(5)
    client.shutdown(5)
    assert [r.key for r in bus.records(HOPS_TOPIC)] == ["o-9"]
    assert client.stats().sent == 1
