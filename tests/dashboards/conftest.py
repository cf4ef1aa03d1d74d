"""One real ``ordertrail run`` for the dashboard tests that need a live ``/metrics``: the demo
journeys, the embedded bus and chDB, on a free loopback port, fed good, failed, unknown,
duplicate and invalid events; stopped (SIGTERM) when the package's tests are done."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

DEMO_JOURNEYS = Path(__file__).resolve().parents[2] / "ordertrail" / "demo_journeys.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(url: str, body: bytes | None = None) -> str:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(r.read().decode())


def _stored(text: str) -> float:
    """Hop events processed and stored (counted once the store has them)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ordertrail_hop_events_total"
    )


@pytest.fixture(scope="package")
def ordertrail_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running ``ordertrail run`` that has processed its test events."""
    tmp = tmp_path_factory.mktemp("ordertrail-run")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp / "run.log"
    args = ["run", "--journeys", str(DEMO_JOURNEYS), "--listen", f"127.0.0.1:{port}", "--data", str(tmp / "data")]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ordertrail", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, ORDERTRAIL_WARMUP="0s"),
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "ordertrail run did not become ready:\n" + log_path.read_text()[-3000:]
            try:
                request(url + "/readyz")
                break
            except OSError:
                time.sleep(0.1)
        now = int(time.time() * 1000)
        events = [
            {"order_id": "o-1", "hop": "checkout.placed", "ts": now - 3000, "customer_id": "c-1"},
            {"order_id": "o-1", "hop": "payment.authorized", "ts": now - 1000},
            {"order_id": "o-1", "hop": "payment.authorized", "ts": now - 1000},  # a duplicate
            {"order_id": "o-2", "hop": "checkout.placed", "ts": now - 3000},
            {"order_id": "o-2", "hop": "payment.authorized", "ts": now - 2000, "status": "error"},
            {"order_id": "o-3", "hop": "not.in.any.journey", "ts": now},
            {"order_id": "o-4", "hop": "Not A Hop", "ts": now},  # rejected
        ]
        answer = json.loads(request(url + "/v1/events", json.dumps(events).encode()))
        assert answer["accepted"] == 6 and len(answer["rejected"]) == 1
        deadline = time.monotonic() + 30
        while _stored(request(url + "/metrics")) < 6:
            assert time.monotonic() < deadline, "the events were not processed and stored in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="package")
def scrape(ordertrail_url: str) -> str:
    """``/metrics`` of that ``ordertrail run``."""
    return request(ordertrail_url + "/metrics")
