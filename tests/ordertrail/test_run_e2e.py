"""End to end over a real ``ordertrail run`` subprocess on a free loopback port, with the embedded
durable bus and real chDB: events in over HTTP, findings and lookups out, a late event resolving
a finding, and kill -9 at a random instant followed by a restart that loses nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized:      {after: checkout.placed,    within: 2s}
      email.confirmation_sent: {after: payment.authorized, within: 3s, confirmation: true}
    complete: [email.confirmation_sent]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path, journeys: str = JOURNEYS) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "journeys.yaml").write_text(journeys)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "server.log"

    def start(self) -> None:
        env = dict(os.environ, ORDERTRAIL_WARMUP="0s")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ordertrail",
                    "run",
                    "--journeys",
                    str(self.tmp / "journeys.yaml"),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--data",
                    str(self.tmp / "data"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not become ready:\n" + self.log.read_text()[-3000:])

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                body = r.read()
                ctype = r.headers.get("content-type", "")
                return r.status, json.loads(body) if "json" in ctype else body.decode()
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def post(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        body = "\n".join(json.dumps(e) for e in events).encode()
        req = urllib.request.Request(
            self.url + "/v1/events", data=body, method="POST", headers={"content-type": "application/x-ndjson"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 202
            return dict(json.loads(r.read()))

    def wait_for(self, path: str, pred: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, last = self.get(path)
            if status == 200 and pred(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting on {path}; last answer {last}\n" + self.log.read_text()[-2000:])


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ev(order: str, hop: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"order_id": order, "hop": hop, "ts": ts, **extra}


def test_events_in_findings_and_lookups_out_and_a_late_event_resolves(server: Server) -> None:
    t = now_ms()
    answer = server.post(
        [
            ev("ok-1", "checkout.placed", t, customer_id="c-1"),
            ev("ok-1", "payment.authorized", t + 100),
            ev("ok-1", "email.confirmation_sent", t + 200),
            ev("lost-1", "checkout.placed", t, customer_id="c-1"),
            {"order_id": "bad", "hop": "Not A Hop", "ts": t},
        ]
    )
    assert answer["accepted"] == 4 and answer["rejected"][0]["index"] == 4

    missing = server.wait_for(
        "/v1/findings?status=open", lambda b: any(f["order_id"] == "lost-1" for f in b["findings"])
    )["findings"]
    f = next(f for f in missing if f["order_id"] == "lost-1")
    assert (f["kind"], f["hop"], f["after"]) == ("missing", "payment.authorized", "checkout.placed")

    view = server.wait_for("/v1/orders/lost-1", lambda b: b["status"] == "missing")
    assert view["explanation"] and view["next"]["hop"] == "payment.authorized"
    completed = server.wait_for("/v1/orders/ok-1", lambda b: b["status"] == "completed")
    assert completed["hops"][0]["hop"] == "checkout.placed"
    assert {o["order_id"] for o in server.get("/v1/orders?customer_id=c-1")[1]["orders"]} == {"ok-1", "lost-1"}

    server.post([ev("lost-1", "payment.authorized", t + 2_500)])
    resolved = server.wait_for(
        "/v1/findings?status=resolved",
        lambda b: any(f["order_id"] == "lost-1" and f["hop"] == "payment.authorized" for f in b["findings"]),
    )["findings"]
    r = next(f for f in resolved if f["order_id"] == "lost-1" and f["hop"] == "payment.authorized")
    assert r["late_by_ms"] == 500 and r["resolved_at"]

    status, unknown = server.get("/v1/orders/never-seen")
    assert status == 404 and unknown["explanation"]
    status, page = server.get("/?q=lost-1")
    assert status == 200 and "lost-1" in page
    assert "ordertrail_events_processed_total" in server.get("/metrics")[1]


def test_kill9_and_restart_loses_no_acknowledged_event_and_duplicates_no_finding(tmp_path: Path) -> None:
    server = Server(tmp_path)
    server.start()
    t = now_ms()
    acked: list[str] = []
    # Half the orders will pay; the other half must be found missing exactly once, across a kill -9.
    for batch in range(10):
        events = []
        for i in range(20):
            oid = f"o-{batch:02d}-{i:02d}"
            events.append(ev(oid, "checkout.placed", t + batch * 10))
            if i % 2 == 0:
                events.append(ev(oid, "payment.authorized", t + batch * 10 + 50))
        assert server.post(events)["accepted"] == len(events)
        acked.extend(e["order_id"] for e in events if e["hop"] == "checkout.placed")
        if batch == 5:
            server.kill9()
            server.start()
    expected_missing = {oid for oid in acked if int(oid[-2:]) % 2 == 1}
    found = server.wait_for(
        "/v1/findings?status=open&kind=missing&limit=10000",
        lambda b: {f["order_id"] for f in b["findings"] if f["hop"] == "payment.authorized"} >= expected_missing,
        timeout=60,
    )["findings"]
    pay = [f["order_id"] for f in found if f["hop"] == "payment.authorized"]
    assert sorted(pay) == sorted(expected_missing)  # each exactly once, none for paid orders

    server.kill9()
    server.start()  # restart again: open orders restored, their confirmation deadlines still fire
    unconfirmed = server.wait_for(
        "/v1/findings?status=open&kind=unconfirmed&limit=10000",
        lambda b: len(b["findings"]) >= len(acked) - len(expected_missing),
        timeout=60,
    )["findings"]
    assert sorted(f["order_id"] for f in unconfirmed) == sorted(set(acked) - expected_missing)
    status, view = server.get(f"/v1/orders/{acked[-1]}")
    assert status == 200 and view["order_id"] == acked[-1]
    assert server.stop() == 0
