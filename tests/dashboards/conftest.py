"""One real ``ordertrail run`` for the dashboard tests that need a live ``/metrics`` (the
``Server`` of tests/ordertrail/test_run_e2e.py with the demo journeys), fed good, failed,
unknown, duplicate and invalid events; stopped when the package's tests are done."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.ordertrail.test_run_e2e import Server

DEMO_JOURNEYS = Path(__file__).resolve().parents[2] / "ordertrail" / "demo_journeys.yaml"


def _stored(text: str) -> float:
    """Hop events processed and stored (counted once the store has them)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ordertrail_hop_events_total"
    )


def _waiting(text: str) -> bool:
    """Open orders by step are in the scrape."""
    return any(
        s.name == "ordertrail_orders_waiting" for family in text_string_to_metric_families(text) for s in family.samples
    )


@pytest.fixture(scope="package")
def ordertrail_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running ``ordertrail run`` that has processed and stored its test events."""
    server = Server(tmp_path_factory.mktemp("ordertrail-run"), DEMO_JOURNEYS.read_text())
    server.start()
    try:
        now = int(time.time() * 1000)
        answer = server.post(
            [
                {"order_id": "o-1", "hop": "checkout.placed", "ts": now - 3000, "customer_id": "c-1"},
                {"order_id": "o-1", "hop": "payment.authorized", "ts": now - 1000},
                {"order_id": "o-1", "hop": "payment.authorized", "ts": now - 1000},  # a duplicate
                {"order_id": "o-2", "hop": "checkout.placed", "ts": now - 3000},
                {"order_id": "o-2", "hop": "payment.authorized", "ts": now - 2000, "status": "error"},
                {"order_id": "o-3", "hop": "not.in.any.journey", "ts": now},
                {"order_id": "o-4", "hop": "Not A Hop", "ts": now},  # rejected
            ]
        )
        assert answer["accepted"] == 6 and len(answer["rejected"]) == 1
        # The open orders by step are read at most every 10 s (ordertrail.metrics.Throttled): a
        # scrape before the events were processed keeps showing none until the next reading.
        server.wait_for("/metrics", lambda text: _stored(text) >= 6 and _waiting(text), timeout=30)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def scrape(ordertrail_run: Server) -> str:
    """``/metrics`` of that ``ordertrail run``."""
    status, text = ordertrail_run.get("/metrics")
    assert status == 200
    return str(text)
