"""Stitching end to end over a real ``ordertrail run``: a step reported under a payment id, before
and after the event that links it to its order, joins the order and its trace; the lookup (API,
page and CLI) finds the order by the payment id; a waiting event survives a restart."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ordertrail.test_run_e2e import Server, ev, now_ms

pytestmark = pytest.mark.integration

JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.requested:  {after: checkout.placed,    within: 30s}
      payment.authorized: {after: payment.requested, within: 30s}
      email.confirmation_sent: {after: payment.authorized, within: 1m, confirmation: true}
    keys:
      payment_id: {steps: [payment.authorized], linked_by: [payment.requested], within: 5m}
"""


@pytest.fixture
def stitch_server(tmp_path: Path) -> Iterator[Server]:
    """The shared ``server`` fixture's server, with a journeys file that declares a key."""
    s = Server(tmp_path, JOURNEYS)
    s.start()
    yield s
    s.stop()


def hops(view: dict[str, object]) -> list[str]:
    return [h["hop"] for h in view["hops"]]  # type: ignore[attr-defined]


def test_a_rekeyed_step_joins_its_order_and_trace_whether_its_link_came_first_or_not(stitch_server: Server) -> None:
    server = stitch_server
    t = now_ms()
    server.post(
        [
            ev("S-1", "checkout.placed", t, customer_id="c-1"),
            ev("pay-1", "payment.authorized", t + 300, service="payments"),  # before its link
            ev("S-2", "checkout.placed", t),
            ev("S-2", "payment.requested", t + 100, attrs={"payment_id": "pay-2"}),
        ]
    )
    server.post(
        [
            ev("S-1", "payment.requested", t + 100, attrs={"payment_id": "pay-1"}),
            ev("pay-2", "payment.authorized", t + 300),  # after its link
        ]
    )
    expected = ["checkout.placed", "payment.requested", "payment.authorized"]
    for order in ("S-1", "S-2"):
        view = server.wait_for(f"/v1/orders/{order}", lambda b: len(b["hops"]) == 3)
        assert hops(view) == expected
        assert view["next"]["hop"] == "email.confirmation_sent"
        found = server.get(f"/v1/orders?trace_id={view['trace_id']}")[1]["orders"]
        assert [o["order_id"] for o in found] == [order]  # one trace: the payment hop is in it

    status, by_payment = server.get("/v1/orders/pay-1")
    assert status == 200 and by_payment["order_id"] == "S-1"
    assert by_payment["found_by"] == {"key": "payment_id", "value": "pay-1"}
    assert hops(by_payment) == expected
    status, page = server.get("/?q=pay-1")
    assert status == 200 and "S-1" in page and "Found by payment_id <code>pay-1</code>" in page
    lookup = subprocess.run(
        [sys.executable, "-m", "ordertrail", "lookup", "pay-2", "--server", server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lookup.returncode == 0 and "Order S-2" in lookup.stdout and "found by payment_id pay-2" in lookup.stdout
    assert 'ordertrail_stitch_events_total{result="rekeyed"} 2.0' in server.get("/metrics")[1]


def test_an_event_waiting_for_its_link_survives_a_kill9_and_restart(stitch_server: Server) -> None:
    server = stitch_server
    t = now_ms()
    server.post([ev("R-1", "checkout.placed", t), ev("pay-r", "payment.authorized", t + 300)])
    server.wait_for("/metrics", lambda b: "ordertrail_stitch_waiting 1.0" in b)
    server.kill9()  # at any instant: the waiting event is in the store, or its record is read again
    server.start()
    server.post([ev("R-1", "payment.requested", t + 100, attrs={"payment_id": "pay-r"})])
    view = server.wait_for("/v1/orders/R-1", lambda b: len(b["hops"]) == 3)
    assert hops(view) == ["checkout.placed", "payment.requested", "payment.authorized"]
