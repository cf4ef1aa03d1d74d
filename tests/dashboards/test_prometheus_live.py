"""A real Prometheus (Debian's package) on loopback scrapes a real ``ordertrail run`` and loads
rules.yml: every rule evaluates without error, and every PromQL query of the dashboards runs
(parsing is not enough: a join that matches many-to-many only fails when it runs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards.grafana import RULES_FILE, dashboard_promql
from tests.ordertrail.test_run_e2e import Server, free_port

pytestmark = pytest.mark.integration


def request(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def api(url: str, path: str, **params: str) -> Any:
    body = json.loads(request(f"{url}{path}?{urllib.parse.urlencode(params)}"))
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def prometheus(ordertrail_run: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("prometheus")
    assert exe is not None, "prometheus is missing: scripts/setup.sh installs Debian's prometheus package"
    tmp = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_FILE)],
        "scrape_configs": [
            {"job_name": "ordertrail", "static_configs": [{"targets": [f"127.0.0.1:{ordertrail_run.port}"]}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("Prometheus to be ready", lambda: proc.poll() is None and request(url + "/-/ready"))
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode not in (0, -15):
            print(Path(log_path).read_text()[-3000:])


def test_prometheus_scrapes_ordertrail_and_every_rule_evaluates(prometheus: str) -> None:
    wait_for(
        "a successful scrape", lambda: api(prometheus, "/api/v1/query", query='up{job="ordertrail"} == 1')["result"]
    )

    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in api(prometheus, "/api/v1/rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for("every rule to be evaluated", evaluated)
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not bad, bad
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES_FILE.read_text())["groups"])


def test_every_dashboard_query_runs_in_prometheus(prometheus: str) -> None:
    wait_for(
        "a successful scrape", lambda: api(prometheus, "/api/v1/query", query='up{job="ordertrail"} == 1')["result"]
    )
    for where, expr in dashboard_promql():
        try:
            api(prometheus, "/api/v1/query", query=expr)
        except Exception as exc:
            raise AssertionError(f"{where}: {expr}\n{exc}") from exc
    result = api(prometheus, "/api/v1/query", query='sum by (hop) (ordertrail_hop_events_total{status="error"}) > 0')
    assert {r["metric"]["hop"] for r in result["result"]} == {"payment.authorized"}
