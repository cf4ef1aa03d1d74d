"""End to end with real Prometheus and Alertmanager (Debian's packages) on loopback: a real
``ordertrail run --alertmanager`` subprocess, the simulated shop sending through the SDK, and a
fault that holds every payment for 25 s. Alertmanager must notify exactly one ``EdgeDegraded``
alert before the first order's deadline, then the order-level incident alert (``OrderMissing``),
and both resolved after recovery; Prometheus scrapes ``/metrics`` and loads the rules of
``dashboards/``; the order lookup names the incident, priced from the orders' amounts. About a
minute."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.faults import parse_schedule
from collectors.sdk import Client, SdkConfig
from collectors.simulator import Edge, Flow, Shop, Simulation
from tests.detectors.conftest import Receiver
from tests.ordertrail.test_run_e2e import free_port
from tracer.times import parse_ts

pytestmark = pytest.mark.integration

JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized:      {after: checkout.placed,    within: 20s}
      email.confirmation_sent: {after: payment.authorized, within: 20s, confirmation: true}
"""
SHOP = Shop(
    (
        Flow(
            "web_order",
            "checkout.placed",
            "checkout",
            (
                Edge("payment.authorized", "checkout.placed", "payments", 400, 1500),
                Edge("email.confirmation_sent", "payment.authorized", "email", 300, 1200, confirmation=True),
            ),
        ),
    )
)
FAULT = "stop:payment.authorized@20s+25s"  # payments held for 25 s, then sent: a 20 s deadline passes
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
PROMETHEUS = shutil.which("prometheus")
RULES = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus" / "rules.yml"


def http_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not come up:\n{log.read_text()[-3000:]}")


class Processes:
    """Starts processes with their output in files, and stops them all (terminate, then kill)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.tmp)
        self.procs.append(proc)
        return proc, log

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    yield p
    p.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def notifications(receiver: Receiver) -> list[tuple[float, dict[str, Any]]]:
    """Every alert in every Alertmanager notification, with when it arrived."""
    out = []
    for at, body in list(receiver.received):
        for alert in json.loads(body)["alerts"]:
            out.append((at, alert))
    return out


@pytest.mark.skipif(not (ALERTMANAGER and PROMETHEUS), reason="needs Debian's prometheus and prometheus-alertmanager")
def test_a_broken_edge_pages_edge_degraded_before_any_deadline_then_the_incident_and_both_resolve(
    tmp_path: Path, procs: Processes, receiver: Receiver
) -> None:
    assert ALERTMANAGER and PROMETHEUS
    am_port, prom_port, ot_port = free_port(), free_port(), free_port()
    (tmp_path / "am.yml").write_text(
        "route:\n  receiver: rec\n  group_by: [alertname, journey, hop]\n  group_wait: 1s\n"
        "  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: rec\n    webhook_configs:\n"
        f"      - url: {receiver.url}/am\n        send_resolved: true\n"
    )
    am, am_log = procs.start(
        "alertmanager",
        [
            ALERTMANAGER,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
        ],
    )
    (tmp_path / "prom.yml").write_text(
        f"global:\n  scrape_interval: 1s\nrule_files: ['{RULES}']\nscrape_configs:\n  - job_name: ordertrail\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{ot_port}']\n"
    )
    prom, prom_log = procs.start(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prom.yml'}",
            f"--storage.tsdb.path={tmp_path / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
    )
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    url = f"http://127.0.0.1:{ot_port}"
    ot, ot_log = procs.start(
        "ordertrail",
        [
            sys.executable,
            "-m",
            "ordertrail",
            "run",
            "--journeys",
            str(tmp_path / "journeys.yaml"),
            "--listen",
            f"127.0.0.1:{ot_port}",
            "--data",
            str(tmp_path / "data"),
            "--alertmanager",
            f"http://127.0.0.1:{am_port}",
            "--alert-resend",
            "5s",
            "--warmup",
            "0s",
        ],
        env=dict(os.environ),
    )
    wait_http(f"http://127.0.0.1:{am_port}/-/ready", am, am_log)
    wait_http(f"http://127.0.0.1:{prom_port}/-/ready", prom, prom_log)
    wait_http(f"{url}/readyz", ot, ot_log, seconds=60)

    simulation = Simulation(SHOP, parse_schedule([FAULT]), rate=8.0, seed=11)
    client = Client(SdkConfig(url=url, service="shop", flush_interval=0.1, buffer=100_000))
    stop = threading.Event()
    shop = threading.Thread(
        target=simulation.run_realtime, args=(client.emit,), kwargs={"stop": stop, "duration_ms": 55_000}, daemon=True
    )
    shop.start()
    try:
        deadline = time.monotonic() + 110
        done = False
        while time.monotonic() < deadline and not done:
            time.sleep(1)
            seen = notifications(receiver)
            resolved = {a["labels"]["alertname"] for _, a in seen if a["status"] == "resolved"}
            done = {"EdgeDegraded", "OrderMissing"} <= resolved
    finally:
        stop.set()
        shop.join(10)
        client.shutdown(5)
    seen = notifications(receiver)
    assert seen, ot_log.read_text()[-3000:]
    edge = [(at, a) for at, a in seen if a["labels"]["alertname"] == "EdgeDegraded"]
    missing = [(at, a) for at, a in seen if a["labels"]["alertname"] == "OrderMissing"]
    assert len({a["fingerprint"] for _, a in edge}) == 1, edge  # exactly one EdgeDegraded alert
    assert edge[0][1]["status"] == "firing" and edge[0][1]["labels"] == {
        "alertname": "EdgeDegraded",
        "journey": "web_order",
        "hop": "payment.authorized",
        "severity": "warning",
    }
    found = http_json(f"{url}/v1/findings?status=all&kind=missing&limit=10000")["findings"]
    first_due = min(parse_ts(f["due_at"]) for f in found)
    assert edge[0][0] * 1000 < first_due, "EdgeDegraded reached Alertmanager after the first order's deadline"
    assert missing and missing[0][1]["status"] == "firing" and missing[0][0] > edge[0][0]
    assert missing[0][1]["annotations"]["lookup"].startswith(f"{url}/?q=")
    assert {"EdgeDegraded", "OrderMissing"} <= {a["labels"]["alertname"] for _, a in seen if a["status"] == "resolved"}
    names = {a["labels"]["alertname"] for _, a in seen}
    assert "PipelineDegraded" not in names, names

    incident = http_json(f"{url}/v1/orders/{found[0]['order_id']}")["incident"]
    assert incident is not None and incident["kind"] == "missing" and incident["orders_total"] >= 1
    assert incident["value_total"] is not None and incident["value_total"] > 0  # orders carry an amount
    assert incident["id"] in {i["id"] for i in http_json(f"{url}/v1/incidents")["incidents"]}

    query = urllib.parse.quote('ordertrail_alerts_sent_total{sink="alertmanager"}')
    result = http_json(f"http://127.0.0.1:{prom_port}/api/v1/query?query={query}")["data"]["result"]
    assert result and float(result[0]["value"][1]) > 0, "Prometheus did not scrape the detector metrics"
    groups = http_json(f"http://127.0.0.1:{prom_port}/api/v1/rules")["data"]["groups"]
    assert groups and all(r["health"] != "err" for g in groups for r in g["rules"]), groups
