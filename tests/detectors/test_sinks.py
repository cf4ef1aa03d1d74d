"""Alert sinks and their delivery: the Alertmanager v2 payload, the signed webhook with retries,
structured log lines, and a dispatcher that never blocks its caller and counts what it drops."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from detectors.alertmanager import AlertmanagerSink
from detectors.alerts import Alert, MemorySink
from detectors.dispatch import Dispatcher
from detectors.logsink import LogSink
from detectors.posting import Poster
from detectors.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookSink, sign
from tests.detectors.conftest import Receiver

T0 = 1_795_000_000_000
ALERT = Alert(
    "EdgeDegraded",
    "web_order",
    "payment.authorized",
    "warning",
    "7 orders stuck",
    "details",
    T0,
    links={"lookup": "http://lookup/?q=o1", "dashboard": "http://dash"},
    incident="inc-1",
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_alertmanager_gets_stable_labels_annotations_and_an_expiry_while_firing(receiver: Receiver) -> None:
    sink = AlertmanagerSink(receiver.url, expire_ms=120_000, now_ms=lambda: T0 + 5_000)
    sink.send([ALERT])
    path, headers, body = receiver.requests[0]
    assert path == "/api/v2/alerts" and headers["Content-Type"] == "application/json"
    (item,) = json.loads(body)
    assert item["labels"] == {
        "alertname": "EdgeDegraded",
        "journey": "web_order",
        "hop": "payment.authorized",
        "severity": "warning",
    }
    assert set(item["annotations"]) == {"summary", "description", "lookup", "dashboard", "incident"}
    assert item["startsAt"] == "2026-11-18T11:06:40.000Z"
    assert item["endsAt"] == "2026-11-18T11:08:45.000Z"  # now + expiry: Alertmanager expires it if we die
    assert item["generatorURL"] == "http://lookup/?q=o1"


def test_a_resolved_alert_carries_its_ends_at() -> None:
    sink = AlertmanagerSink("http://unused", now_ms=lambda: T0 + 99_000)
    done = dataclasses.replace(ALERT, firing=False, ends_at=T0 + 60_000)
    (item,) = sink.payload([done])
    assert item["endsAt"] == "2026-11-18T11:07:40.000Z"


def test_the_webhook_signs_its_body_and_retries_on_5xx(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    slept: list[float] = []
    sink = WebhookSink(
        receiver.url + "/hook",
        secret="s3cret",
        now_s=lambda: 1_795_000_000.0,
        poster=Poster(attempts=4, sleep=slept.append),
    )
    sink.send([ALERT])
    assert len(receiver.requests) == 3 and slept == [0.5, 1.0]
    _, headers, body = receiver.requests[-1]
    assert headers[TIMESTAMP_HEADER] == "1795000000"
    assert headers[SIGNATURE_HEADER] == sign("s3cret", "1795000000", body)
    doc = json.loads(body)
    assert doc["alerts"][0]["status"] == "firing" and doc["alerts"][0]["labels"]["alertname"] == "EdgeDegraded"


def test_the_webhook_gives_up_on_a_4xx_and_says_why(receiver: Receiver) -> None:
    receiver.statuses = [400]
    sink = WebhookSink(receiver.url, poster=Poster(sleep=lambda s: None))
    with pytest.raises(OSError, match="answered 400"):
        sink.send([ALERT])
    assert len(receiver.requests) == 1


def test_the_log_sink_writes_one_json_line_per_alert(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ordertrail.alerts"):
        LogSink().send([ALERT])
    line = json.loads(caplog.records[0].getMessage())
    assert line["event"] == "alert" and line["status"] == "firing" and line["alertname"] == "EdgeDegraded"


class Blocked:
    name = "blocked"
    resends = True

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.sent: list[Alert] = []

    def send(self, alerts: list[Alert]) -> None:
        self.gate.wait(10)
        self.sent.extend(alerts)


def test_a_stuck_sink_never_blocks_publish_and_its_drops_are_counted() -> None:
    stuck, fine = Blocked(), MemorySink()
    d = Dispatcher([stuck, fine], queue_size=2)
    d.start()
    for _ in range(10):
        d.publish([ALERT])  # returns at once even though one sink hangs
    assert d.stats["blocked"].dropped >= 7
    stuck.gate.set()
    d.stop()
    assert len(fine.sent) + d.stats["memory"].dropped == 10 and d.stats["memory"].sent == len(fine.sent)


def test_failures_are_counted_and_resends_go_only_to_sinks_that_want_them() -> None:
    wants, once = MemorySink("am", resends=True), MemorySink("hook")
    once.fail = 1
    d = Dispatcher([wants, once])
    d.start()
    d.publish([ALERT])
    d.publish([], [ALERT])  # a refresh: the firing set again
    d.stop()
    assert len(wants.sent) == 2 and once.sent == [] and d.stats["hook"].failed == 1
