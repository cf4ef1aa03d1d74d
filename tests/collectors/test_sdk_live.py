"""The SDK against a real ``ordertrail run`` subprocess (live server), and with the server down."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.trace import TracerProvider

from collectors.sdk import Client, SdkConfig
from tests.ordertrail.test_run_e2e import Server, free_port

pytestmark = pytest.mark.integration


def test_tracked_hops_and_a_failing_hop_block_reach_the_live_server(server: Server) -> None:
    client = Client(SdkConfig(url=server.url, service="checkout", flush_interval=0.1), tracer_provider=TracerProvider())
    client.track("sdk-1", "checkout.placed", customer_id="c-7", amount="12.50")
    with pytest.raises(RuntimeError, match="card declined"), client.hop("sdk-1", "payment.authorized"):
        raise RuntimeError("card declined")
    assert client.flush(10.0)
    view = server.wait_for("/v1/orders/sdk-1", lambda b: b["status"] == "failed")
    assert [h["hop"] for h in view["hops"]] == ["checkout.placed", "payment.authorized"]
    assert view["customer_id"] == "c-7" and view["hops"][0]["service"] == "checkout"
    # The span's trace id was used for the hop, and the lookup finds the order by it.
    traced = server.get(f"/v1/orders?trace_id={view['trace_id']}")[1]["orders"]
    assert [o["order_id"] for o in traced] == ["sdk-1"]
    assert client.stats().sent == 2
    client.shutdown(5.0)


def test_with_the_server_down_track_never_blocks_and_drops_are_counted() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = Client(SdkConfig(url=url, buffer=100, batch=50, flush_interval=0.05, timeout=0.5))
    started = time.perf_counter()
    for i in range(1_000):
        client.track(f"down-{i}", "checkout.placed")
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0  # 1000 calls return at once even though every send fails
    client.shutdown(2.0)
    stats = client.stats()
    assert stats.sent == 0
    assert stats.dropped_full + stats.dropped_failed + stats.dropped_closed + stats.queued == 1_000
    assert stats.dropped_full >= 900  # the bounded buffer held 100 at most
