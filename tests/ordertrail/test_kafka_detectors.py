"""``ordertrail detectors`` over a real Kafka-compatible broker (Tansu): findings that two tracer
instances published to the findings topic become ONE incident with the whole blast radius and
one alert, delivered to a real HTTP webhook receiver, resolved when the orders recover."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.detectors.conftest import Receiver
from tests.ordertrail.test_kafka_scaleout import Role
from tests.ordertrail.test_run_e2e import JOURNEYS
from tests.support.tansu import Tansu, tansu  # noqa: F401  (the broker fixture)
from tracer.bus import FINDINGS_TOPIC
from tracer.findings_topic import finding_message
from tracer.kafkabus import KafkaBus
from tracer.model import RESOLVED, Finding

pytestmark = pytest.mark.integration


class AlertReceiver(Receiver):
    """The detectors tests' webhook receiver, read as the alerts it was sent."""

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [alert for _, body in list(self.received) for alert in json.loads(body)["alerts"]]

    def wait(self, pred: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.alerts):
                return
            time.sleep(0.2)
        raise AssertionError(f"webhook: no {what} in {timeout}s; got {self.alerts}")


@pytest.fixture
def receiver() -> Iterator[AlertReceiver]:
    r = AlertReceiver()
    yield r
    r.close()


def missing(order_id: str, t: int) -> Finding:
    return Finding(order_id, "web_order", "missing", "payment.authorized", "checkout.placed", t - 1000, t)


def test_findings_of_two_tracers_make_one_incident_and_one_alert(
    tansu: Tansu,  # noqa: F811
    tmp_path: Path,
    receiver: AlertReceiver,
) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    detectors = Role(tmp_path, "detectors", "detectors", tansu.url, f"chdb://{tmp_path / 'store'}")
    detectors.args += ["--webhook", receiver.url]
    detectors.start()
    try:
        detectors.ready()
        t = int(time.time() * 1000)
        orders = [f"o-{i}" for i in range(6)]
        # Two tracer instances, each with the orders of its own partitions.
        with KafkaBus(tansu.url) as tracer_a, KafkaBus(tansu.url) as tracer_b:
            tracer_a.produce_batch(FINDINGS_TOPIC, [finding_message(missing(o, t)) for o in orders[:3]])
            tracer_b.produce_batch(FINDINGS_TOPIC, [finding_message(missing(o, t)) for o in orders[3:]])

        deadline = time.monotonic() + 60
        while not (incidents := detectors.get("/v1/incidents")["incidents"]) or incidents[0]["orders"] < 6:
            assert time.monotonic() < deadline, f"no incident of 6 orders: {incidents}"
            time.sleep(0.2)
        assert len(incidents) == 1 and incidents[0]["orders"] == 6  # the whole blast radius in one
        receiver.wait(lambda a: any(x["labels"]["alertname"] == "OrderMissing" for x in a), "OrderMissing")
        firing = {json.dumps(a["labels"], sort_keys=True) for a in receiver.alerts if a["status"] == "firing"}
        assert len(firing) == 1, firing  # one alert identity for the incident

        with KafkaBus(tansu.url) as tracer_a:
            tracer_a.produce_batch(
                FINDINGS_TOPIC,
                [
                    finding_message(
                        msgspec.structs.replace(missing(o, t), status=RESOLVED, resolved_at=t + 5000, late_by_ms=4000)
                    )
                    for o in orders
                ],
            )
        receiver.wait(lambda a: any(x["status"] == "resolved" for x in a), "resolved alert")
    finally:
        detectors.stop()


def test_the_detectors_role_needs_kafka(tmp_path: Path) -> None:
    (tmp_path / "journeys.yaml").write_text(JOURNEYS)
    role = Role(tmp_path, "detectors", "detectors", "local", f"chdb://{tmp_path / 'store'}")
    role.args = [a for a in role.args if a not in ("--bus", "local")]
    role.start()
    assert role.proc is not None and role.proc.wait(60) == 2
    assert "--bus: the detectors role runs on Kafka" in role.log.read_text()
