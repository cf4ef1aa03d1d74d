"""The HTTP layer alone, over a fake pipeline: status codes, limits and error bodies."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

import pytest
from starlette.testclient import TestClient

from ordertrail.server import create_app
from tracer.errors import StoreError
from tracer.model import HopEvent

GOOD = b'{"order_id":"o-1","hop":"checkout.placed","ts":"2026-11-22T10:02:03.123Z"}'


class FakeApi:
    def __init__(self) -> None:
        self.ingested: list[HopEvent] = []
        self.fail = False

    def ingest(self, events: Sequence[HopEvent]) -> None:
        if self.fail:
            raise StoreError("disk full")
        self.ingested.extend(events)

    def order_view(self, order_id: str) -> dict[str, Any] | None:
        return {"order_id": order_id, "status": "in_progress"} if order_id == "known" else None

    def unknown_order(self, order_id: str) -> dict[str, Any]:
        return {"order_id": order_id, "explanation": "no hop of this order was ever received"}

    def search(self, *, customer_id: str | None, trace_id: str | None, limit: int) -> list[dict[str, Any]]:
        return [{"order_id": "known", "customer_id": customer_id, "trace_id": trace_id, "limit": limit}]

    def findings(self, *, status: str, kind: str | None, journey: str | None, limit: int) -> list[dict[str, Any]]:
        return [{"status": status, "kind": kind, "journey": journey}]

    def incidents(self) -> list[dict[str, Any]]:
        return []

    def metrics(self) -> tuple[bytes, str]:
        return b"ordertrail_up 1\n", "text/plain"

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return True, {}

    def page(self, query: str) -> str:
        return f"<html>{query}</html>"


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


@pytest.fixture
def client(api: FakeApi) -> TestClient:
    return TestClient(create_app(api, max_body_bytes=4096))


def test_ndjson_events_are_accepted_with_per_item_rejections(client: TestClient, api: FakeApi) -> None:
    body = GOOD + b"\n" + b'{"order_id":"o-2","hop":"Bad Hop","ts":1}\n'
    r = client.post("/v1/events", content=body)
    assert r.status_code == 202
    assert r.json()["accepted"] == 1
    [rej] = r.json()["rejected"]
    assert rej["index"] == 1 and "hop" in rej["error"]
    assert api.ingested[0].order_id == "o-1"


def test_json_array_is_accepted(client: TestClient) -> None:
    r = client.post("/v1/events", content=b"[" + GOOD + b"," + GOOD + b"]")
    assert r.status_code == 202 and r.json() == {"accepted": 2, "rejected": []}


def test_a_body_that_is_not_json_is_400(client: TestClient) -> None:
    r = client.post("/v1/events", content=b"this is not json")
    assert r.status_code == 400 and "error" in r.json()


def test_an_empty_body_is_400(client: TestClient) -> None:
    assert client.post("/v1/events", content=b"  ").status_code == 400


def test_an_oversize_body_is_413(client: TestClient) -> None:
    r = client.post("/v1/events", content=b"[" + b",".join([GOOD] * 100) + b"]")
    assert r.status_code == 413 and "4096" in r.json()["error"]


def test_gzip_bodies_are_decompressed_and_bombs_refused(client: TestClient) -> None:
    ok = client.post("/v1/events", content=gzip.compress(GOOD), headers={"content-encoding": "gzip"})
    assert ok.status_code == 202 and ok.json()["accepted"] == 1
    bomb = gzip.compress(b" " * 100_000 + GOOD)
    r = client.post("/v1/events", content=bomb, headers={"content-encoding": "gzip"})
    assert r.status_code == 413
    bad = client.post("/v1/events", content=b"not gzip", headers={"content-encoding": "gzip"})
    assert bad.status_code == 400


def test_an_ingest_that_cannot_be_made_durable_is_503(client: TestClient, api: FakeApi) -> None:
    api.fail = True
    r = client.post("/v1/events", content=GOOD)
    assert r.status_code == 503 and "retry" in r.json()["error"]


def test_unknown_order_is_404_with_what_was_checked(client: TestClient) -> None:
    r = client.get("/v1/orders/nope")
    assert r.status_code == 404 and r.json()["explanation"]
    assert client.get("/v1/orders/known").json()["status"] == "in_progress"


def test_search_needs_a_key(client: TestClient) -> None:
    assert client.get("/v1/orders").status_code == 400
    assert client.get("/v1/orders", params={"customer_id": "c-1"}).json()["orders"][0]["customer_id"] == "c-1"


def test_findings_parameters_are_checked(client: TestClient) -> None:
    assert client.get("/v1/findings", params={"status": "closed"}).status_code == 400
    assert client.get("/v1/findings", params={"kind": "lost"}).status_code == 400
    assert client.get("/v1/findings", params={"limit": "0"}).status_code == 400
    assert client.get("/v1/findings", params={"kind": "missing"}).json()["findings"][0]["kind"] == "missing"


def test_openapi_describes_every_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/events", "/v1/orders/{order_id}", "/v1/findings", "/v1/incidents"} <= set(spec["paths"])


def test_health_metrics_and_page(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert b"ordertrail_up" in client.get("/metrics").content
    assert client.get("/", params={"q": "o-1"}).text == "<html>o-1</html>"
