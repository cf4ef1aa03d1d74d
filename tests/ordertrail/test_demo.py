"""``ordertrail demo`` as a user runs it (a subprocess), shortened: the shop runs, an injected
drop is detected in full, the summary is printed, and --exit ends it cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.ordertrail.test_run_e2e import free_port

pytestmark = pytest.mark.integration


def test_demo_detects_every_dropped_payment_and_prints_the_summary(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ordertrail",
        "demo",
        "--duration",
        "12s",
        "--rate",
        "10",
        "--settle",
        "13s",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--data",
        str(tmp_path / "data"),
        "--exit",
        "--fault",
        "drop:payment.authorized:50%@2s+6s",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "MISSING" in out and "payment.authorized" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("drop:payment.authorized"))
    detected, injected = line.split("orders detected")[0].split()[-1].split("/")
    assert int(injected) > 0 and detected == injected
    assert "Look an order up: http://127.0.0.1:" in out
