"""``ordertrail run --bus kafka://`` against a real Kafka-compatible broker (Tansu): events posted
over HTTP land in the hops topic (key the order id, trace context in the headers), findings come
out in the lookup and on the findings topic, and a record that is not a hop event goes to the
dead letters with the reason. The Kafka-only roles refuse to start without a Kafka bus."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.ordertrail.test_kafka_scaleout import Role
from tests.ordertrail.test_run_e2e import JOURNEYS
from tests.support.tansu import Tansu, tansu  # noqa: F401  (the broker fixture)
from tracer.bus import DEADLETTER_TOPIC, ERROR_HEADER, FINDINGS_TOPIC, HOPS_TOPIC, Message
from tracer.findings_topic import decode_finding
from tracer.kafkabus import KafkaBus

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def read_all(servers: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return list(consumer)
    finally:
        consumer.close()


def post(role: Role, events: list[dict[str, Any]]) -> dict[str, Any]:
    body = "\n".join(json.dumps(e) for e in events).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{role.port}/v1/events", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


def test_run_on_kafka_events_in_findings_out_and_bad_records_to_the_dead_letters(
    tansu: Tansu,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    run = Role(tmp_path, "run", "run", tansu.url, None)
    run.start()
    try:
        run.ready()
        t = int(time.time() * 1000)
        answer = post(
            run,
            [
                {
                    "order_id": "lost-1",
                    "hop": "checkout.placed",
                    "ts": t,
                    "trace_id": TRACE,
                    "span_id": "00f067aa0ba902b7",
                },
                {"order_id": "paid-1", "hop": "checkout.placed", "ts": t},
                {"order_id": "paid-1", "hop": "payment.authorized", "ts": t + 10},
                {"order_id": "paid-1", "hop": "email.confirmation_sent", "ts": t + 20},
            ],
        )
        assert answer == {"accepted": 4, "rejected": []}
        with KafkaBus(tansu.url) as bus:
            bus.produce_batch(HOPS_TOPIC, [Message("bad-1", b'{"order_id": "bad-1", "hop": "Not A Hop", "ts": 1}')])

        deadline = time.monotonic() + 30
        while not (found := run.get("/v1/findings?status=open")["findings"]):
            assert time.monotonic() < deadline, run.log.read_text()[-3000:]
            time.sleep(0.2)
        assert [(f["order_id"], f["kind"]) for f in found] == [("lost-1", "missing")]

        hops = {r.key: r for r in read_all(tansu.bootstrap, HOPS_TOPIC)}
        assert dict(hops[b"lost-1"].headers)["traceparent"] == f"00-{TRACE}-00f067aa0ba902b7-01".encode()
        published = [(r.key, decode_finding(r.value)) for r in read_all(tansu.bootstrap, FINDINGS_TOPIC)]
        assert [(k, f.order_id, f.status) for k, f in published] == [
            (b"web_order/payment.authorized/missing", "lost-1", "open")
        ]
        dead = read_all(tansu.bootstrap, DEADLETTER_TOPIC)
        assert [r.key for r in dead] == [b"bad-1"]
        assert b"hop" in dict(dead[0].headers)[ERROR_HEADER]
    finally:
        run.stop()
    assert run.proc is not None and run.proc.returncode == 0


@pytest.mark.parametrize("role", ["ingest", "tracer"])
def test_the_kafka_roles_refuse_to_start_without_a_kafka_bus(role: str, tmp_path: Path) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    argv = [sys.executable, "-m", "ordertrail", role, "--journeys", str(tmp_path / "journeys.yaml")]
    done = subprocess.run([*argv, "--data", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"the {role} role runs on Kafka; give --bus kafka://host:port" in done.stderr


def test_a_bad_kafka_url_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    argv = [sys.executable, "-m", "ordertrail", "run", "--journeys", str(tmp_path / "journeys.yaml")]
    done = subprocess.run([*argv, "--bus", "kafka://nohost"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--bus: bus URL 'kafka://nohost'" in done.stderr


def test_the_ingest_role_takes_events_to_the_hops_topic_and_serves_no_lookups(
    tansu: Tansu,  # noqa: F811
    tmp_path: Path,
) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    ingest = Role(tmp_path, "ingest", "ingest", tansu.url, None)
    ingest.start()
    try:
        ingest.ready()
        event = {"order_id": "via-ingest", "hop": "checkout.placed", "ts": 1_795_000_000_000, "trace_id": TRACE}
        event["parent_span_id"] = "00f067aa0ba902b7"
        assert post(ingest, [event, {"order_id": "x", "hop": "Bad Hop", "ts": 1}])["accepted"] == 1
        records = [r for r in read_all(tansu.bootstrap, HOPS_TOPIC) if r.key == b"via-ingest"]
        assert len(records) == 1
        assert dict(records[0].headers)["traceparent"] == f"00-{TRACE}-00f067aa0ba902b7-01".encode()
        with pytest.raises(urllib.error.HTTPError) as caught:
            ingest.get("/v1/orders/via-ingest")
        assert caught.value.code == 404
        caught.value.close()
    finally:
        ingest.stop()
