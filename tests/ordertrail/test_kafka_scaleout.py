"""Scale-out over a real Kafka-compatible broker (Tansu) and a shared store: two ``ordertrail tracer``
processes in one consumer group over the 8 partitions of the hops topic, ``ordertrail simulate``
producing straight to Kafka with injected faults, a kill -9 of one tracer (the other takes its
partitions and restores their open orders), then its restart (the partitions rebalance back).
Checked against the simulator's ledger: every injected drop is found, exactly once, and nothing
else is; every finding published to the findings topic was raised once (re-publications after the
kill carry the same identity and detection time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from ordertrail.simulate import demo_journeys_text
from tests.ordertrail.test_run_e2e import free_port
from tests.support.tansu import Tansu, tansu  # noqa: F401  (the broker fixture)
from tracer.bus import FINDINGS_TOPIC, HOPS_PARTITIONS
from tracer.findings_topic import decode_finding
from tracer.model import MISSING, UNCONFIRMED, Finding

pytestmark = pytest.mark.integration

KAFKA_ENV = {
    "ORDERTRAIL_WARMUP": "0s",
    "ORDERTRAIL_KAFKA_SESSION_TIMEOUT": "6s",  # Tansu rebalances in seconds with these
    "ORDERTRAIL_KAFKA_MAX_POLL_INTERVAL": "5s",
}


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    """A ClickHouse HTTP endpoint the tracer processes share (the chDB stand-in of tests.tracer.chhttp)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.tracer.chhttp", str(tmp_path / "clickhouse")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith("listening on "), line
    yield line.split()[-1]
    proc.terminate()
    proc.wait(20)
    proc.stdout.close()


class Role:
    """One ``ordertrail ROLE`` process on a free port."""

    def __init__(self, tmp: Path, role: str, name: str, bus: str, store: str | None) -> None:
        self.tmp, self.role, self.name = tmp, role, name
        self.port = free_port()
        self.args = [
            sys.executable,
            "-m",
            "ordertrail",
            role,
            "--journeys",
            str(tmp / "journeys.yaml"),
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data",
            str(tmp / name),
            "--bus",
            bus,
            *(["--store", store] if store else []),
        ]
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            env = {**os.environ, **KAFKA_ENV}
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)

    def ready(self) -> dict[str, Any]:
        return self.wait(lambda r: r["status"] == "ready", "ready")

    def readyz(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return dict(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            return dict(json.loads(e.read()))
        except OSError:
            return None

    def wait(self, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            last = self.readyz()
            if last is not None and pred(last):
                return last
            time.sleep(0.2)
        tail = self.log.read_text()[-3000:]
        raise AssertionError(f"{self.name}: not {what} in {timeout}s; last /readyz {last}\n{tail}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            return json.loads(r.read())

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def owns(parts: list[int]) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r["status"] == "ready" and sorted(r["partitions"]) == parts


def published_findings(servers: str) -> list[Finding]:
    """Every record of the findings topic, from the beginning (no group)."""
    consumer = KafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, consumer_timeout_ms=3000)
    try:
        tps = [TopicPartition(FINDINGS_TOPIC, p) for p in consumer.partitions_for_topic(FINDINGS_TOPIC) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return [decode_finding(r.value) for r in consumer]
    finally:
        consumer.close()


def test_two_tracers_kill9_takeover_and_rebalance_back_lose_and_double_no_finding(
    tansu: Tansu,  # noqa: F811
    store_url: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "journeys.yaml").write_text(demo_journeys_text())
    a = Role(tmp_path, "tracer", "tracer-a", tansu.url, store_url)
    b = Role(tmp_path, "tracer", "tracer-b", tansu.url, store_url)
    lookup = Role(tmp_path, "lookup-server", "lookup", tansu.url, store_url)
    everything = list(range(HOPS_PARTITIONS))
    simulator = None
    try:
        a.start()
        a.wait(owns(everything), "the owner of every partition")
        b.start()
        b.wait(lambda r: r["status"] == "ready" and len(r["partitions"]) == 4, "the owner of half")
        a.wait(lambda r: r["status"] == "ready" and len(r["partitions"]) == 4, "the owner of the other half")
        lookup.start()

        ledger = tmp_path / "ledger.json"
        with (tmp_path / "simulate.log").open("wb") as log:
            simulator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ordertrail",
                    "simulate",
                    "--bus",
                    tansu.url,
                    "--rate",
                    "15",
                    "--duration",
                    "25s",
                    "--seed",
                    "7",
                    "--fault",
                    "drop:payment.authorized:0.3",
                    "--fault",
                    "break:email.confirmation_sent@5s+10s",
                    "--ledger",
                    str(ledger),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        time.sleep(8)
        a.kill9()  # mid-run, with open orders and deadlines pending on its partitions
        took = b.wait(owns(everything), "the owner of every partition after the kill", timeout=40)
        assert took["restored_orders"] > 0  # the dead tracer's open orders, back from the store
        a.start()
        a.wait(lambda r: r["status"] == "ready" and len(r["partitions"]) == 4, "back in the group", timeout=40)
        b.wait(lambda r: r["status"] == "ready" and len(r["partitions"]) == 4, "rebalanced back", timeout=40)

        assert simulator.wait(150) == 0, (tmp_path / "simulate.log").read_text()
        effects = json.loads(ledger.read_text())["effects"]
        expected = {(e["order_id"], e["hop"]) for e in effects if e["effect"] == "dropped"}
        assert len(expected) > 20

        def found() -> list[dict[str, Any]]:
            return [
                f
                for f in lookup.get("/v1/findings?status=all&limit=10000")["findings"]
                if f["kind"] in (MISSING, UNCONFIRMED)
            ]

        deadline = time.monotonic() + 60
        while {(f["order_id"], f["hop"]) for f in found()} < expected and time.monotonic() < deadline:
            time.sleep(1)
        stored = found()
        extra = [f for f in stored if (f["order_id"], f["hop"]) not in expected]
        trails = {f["order_id"]: lookup.get(f"/v1/orders/{f['order_id']}")["hops"] for f in extra[:5]}
        assert not extra, f"findings no fault explains: {extra[:5]}; their trails: {trails}"
        assert sorted((f["order_id"], f["hop"]) for f in stored) == sorted(expected)  # each once, none missed

        published: dict[tuple[str, str, str], set[int]] = {}
        for f in published_findings(tansu.bootstrap):
            if f.status == "open":
                published.setdefault((f.order_id, f.hop, f.kind), set()).add(f.detected_at)
        raised_twice = {key: times for key, times in published.items() if len(times) > 1}
        assert not raised_twice
        assert {(o, h) for (o, h, k) in published if k in (MISSING, UNCONFIRMED)} == expected
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        for role in (lookup, b, a):
            role.stop()
