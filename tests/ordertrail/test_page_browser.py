"""The lookup page in a real browser (Debian's Chromium, headless) against a real ``ordertrail
run``: a support agent types an order id and reads the explanation and the timeline."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ordertrail.test_run_e2e import Server, ev, now_ms

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (make test installs it when run as root)", allow_module_level=True)


def chromium(*args: str) -> str:
    assert CHROMIUM is not None, "chromium is missing: `apt-get install chromium` (scripts/setup.sh does it)"
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_support_agent_reads_what_happened_to_a_lost_order(server: Server, tmp_path: Path) -> None:
    t = now_ms()
    server.post([ev("web-4711", "checkout.placed", t, customer_id="cust-42", service="shop")])
    server.wait_for("/v1/orders/web-4711", lambda b: b["status"] == "missing")

    dom = chromium("--dump-dom", f"{server.url}/?q=web-4711")
    assert "web-4711" in dom
    assert "The order was placed" in dom  # the timeline, in words a customer understands
    view = server.get("/v1/orders/web-4711")[1]
    assert view["explanation"].split(".")[0] in dom  # the plain-language explanation is on the page

    shot = tmp_path / "lookup.png"
    chromium("--window-size=1100,900", f"--screenshot={shot}", f"{server.url}/?q=web-4711")
    assert shot.stat().st_size > 10_000
    if os.environ.get("ORDERTRAIL_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["ORDERTRAIL_KEEP_SCREENSHOT"])


def test_the_search_box_finds_orders_by_customer(server: Server) -> None:
    t = now_ms()
    server.post(
        [ev("a-1", "checkout.placed", t, customer_id="cust-7"), ev("a-2", "checkout.placed", t, customer_id="cust-7")]
    )
    server.wait_for("/v1/orders?customer_id=cust-7", lambda b: len(b["orders"]) == 2)
    dom = chromium("--dump-dom", f"{server.url}/?q=cust-7")
    assert "a-1" in dom and "a-2" in dom
