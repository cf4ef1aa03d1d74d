"""``ordertrail tap logs`` against a real ``ordertrail run``: lines become hops in the lookup across a
rename rotation, a copytruncate rotation and a restart of the tap; bad lines land in the dead-letter
file exactly once each (a line read twice would show there twice)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collectors.taps import DeadLetterFile
from tests.ordertrail.test_run_e2e import Server, now_ms

pytestmark = pytest.mark.integration

MAPPING = """
order_id: order
hop: {field: event, map: {placed: checkout.placed, paid: payment.authorized}}
ts: {field: time, format: epoch_ms}
service: {value: legacy-shop}
"""


class TapProcess:
    def __init__(self, tmp: Path, server: Server, pattern: str) -> None:
        (tmp / "mapping.yaml").write_text(MAPPING)
        self.args = [
            sys.executable,
            "-m",
            "ordertrail",
            "tap",
            "logs",
            "--mapping",
            str(tmp / "mapping.yaml"),
            "--server",
            server.url,
            "--state",
            str(tmp / "tap-state"),
            "--log-level",
            "warning",
            pattern,
        ]
        self.log = tmp / "tap.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


def lines(path: Path, *rows: str) -> None:
    with path.open("a") as f:
        f.writelines(row + "\n" for row in rows)


def placed_and_paid(order: str, t: int) -> list[str]:
    return [
        json.dumps({"order": order, "event": "placed", "time": t}),
        json.dumps({"order": order, "event": "heartbeat", "time": t}),  # not a hop: skipped
        json.dumps({"order": order, "event": "paid", "time": t + 10}),
    ]


def wait_paid(server: Server, order: str) -> None:
    view = server.wait_for(f"/v1/orders/{order}", lambda b: len(b["hops"]) == 2, timeout=30)
    assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized"]
    assert view["hops"][0]["service"] == "legacy-shop"


def test_log_tap_across_rotations_and_a_restart(server: Server, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    t = now_ms()
    lines(app, *placed_and_paid("L-1", t), "this is not json", json.dumps({"event": "paid", "time": t}))
    tap = TapProcess(tmp_path, server, str(logs / "*.log"))
    tap.start()
    try:
        wait_paid(server, "L-1")

        lines(app, *placed_and_paid("L-2", t))  # written just before a rename rotation
        app.rename(logs / "app.log.1")
        lines(app, *placed_and_paid("L-3", t), "{broken")
        wait_paid(server, "L-2")
        wait_paid(server, "L-3")

        time.sleep(0.5)  # copytruncate loses what was written between copy and truncate: copy at rest
        shutil.copy(app, logs / "app.log.2")
        os.truncate(app, 0)
        lines(app, *placed_and_paid("L-4", t))
        wait_paid(server, "L-4")
        assert tap.stop() == 0

        lines(app, *placed_and_paid("L-5", t), "[1, 2]")  # written while the tap is down
        tap.start()
        wait_paid(server, "L-5")
        lines(app, *placed_and_paid("L-6", t))
        wait_paid(server, "L-6")
    finally:
        assert tap.stop() == 0, tap.log.read_text()

    dead = DeadLetterFile(tmp_path / "tap-state" / "deadletters.ndjson").read()
    reasons = sorted(d.reason.split(":")[0] for d in dead)
    assert reasons == ["line", "not JSON", "not JSON", "order_id (from order)"], dead
    assert len({d.record for d in dead}) == 4  # each bad line once


def test_a_log_tap_killed_mid_stream_loses_no_line(server: Server, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    app.touch()
    tap = TapProcess(tmp_path, server, str(logs / "*.log"))
    tap.start()
    t = now_ms()
    orders = [f"K-{i:03d}" for i in range(120)]

    def write(some: list[str]) -> None:
        for order in some:
            lines(app, *placed_and_paid(order, t))
            time.sleep(0.01)

    writer = threading.Thread(target=write, args=(orders[:60],))
    writer.start()
    wait_paid(server, orders[5])
    assert tap.proc is not None
    tap.proc.send_signal(signal.SIGKILL)  # mid-stream: the writer is still writing
    tap.proc.wait(10)
    writer.join()
    app.rename(logs / "app.log.1")  # rotated while the tap is down, out of its pattern
    write(orders[60:])  # into a new app.log
    tap.start()
    try:
        for order in orders:
            wait_paid(server, order)
    finally:
        assert tap.stop() == 0, tap.log.read_text()
