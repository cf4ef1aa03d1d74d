"""The alerting flags of ``ordertrail run``: URLs checked with a clear error, sinks built from the
configuration (the log always; Alertmanager and the webhook when asked), durations parsed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from detectors import AlertmanagerSink, LogSink, WebhookSink
from ordertrail.alerting import sinks_of
from ordertrail.config import ConfigError, RunConfig, add_run_arguments


def config(*argv: str, env: dict[str, str] | None = None) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return RunConfig.from_args(parser.parse_args(["--journeys", "j.yaml", *argv]), env or {})


def test_alertmanager_and_webhook_flags_become_sinks() -> None:
    c = config(
        "--alertmanager", "http://am:9093", "--webhook", "https://hooks/x", env={"ORDERTRAIL_WEBHOOK_SECRET": "k"}
    )
    sinks = sinks_of(c)
    assert [type(s) for s in sinks] == [LogSink, AlertmanagerSink, WebhookSink]
    am = sinks[1]
    assert isinstance(am, AlertmanagerSink) and am.url == "http://am:9093/api/v2/alerts"


def test_without_flags_alerts_go_to_the_log_only() -> None:
    assert [type(s) for s in sinks_of(config())] == [LogSink]


def test_the_environment_configures_alerting_too() -> None:
    c = config(env={"ORDERTRAIL_ALERTMANAGER": "http://am", "ORDERTRAIL_ALERT_RESEND": "10s"})
    assert c.alertmanager == "http://am" and c.alert_resend_ms == 10_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--alertmanager", "am:9093"), "--alertmanager: 'am:9093' must be an http:// or https:// URL"),
        (("--webhook", "ftp://x"), "--webhook: 'ftp://x' must be an http:// or https:// URL"),
        (("--alert-resend", "soon"), "--alert-resend"),
        (("--incident-window", "0s"), "--incident-window: must be longer than 0"),
    ],
)
def test_bad_alerting_settings_name_the_flag_and_the_value(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        config(*argv)


def test_incidents_are_rebuilt_from_the_stores_open_findings_and_lookups_name_them(tmp_path: Path) -> None:
    from detectors import MemorySink
    from ordertrail.pipeline import Pipeline
    from tracer.bus import HOPS_TOPIC
    from tracer.clock import ManualClock
    from tracer.fakebus import MemoryBus
    from tracer.journeys import parse_journeys
    from tracer.memstore import MemStore
    from tracer.model import Finding

    t0 = 1_795_000_000_000
    store = MemStore()
    found = [
        Finding(f"o{i}", "web_order", "missing", "payment.authorized", "checkout.placed", t0, t0 + i) for i in range(3)
    ]
    store.write([], found, [])
    journeys = parse_journeys(
        "journeys:\n  web_order:\n    start: checkout.placed\n    steps:\n"
        "      payment.authorized: {after: checkout.placed, within: 30s}\n"
    )
    bus = MemoryBus({HOPS_TOPIC: 1})
    pipeline = Pipeline(
        RunConfig(journeys=tmp_path / "j.yaml"),
        journeys,
        producer=bus,
        source=bus.consumer(HOPS_TOPIC, "t"),
        store=store,  # type: ignore[arg-type]
        wall=ManualClock(t0),
        partitions=[0],
        sinks=[MemorySink()],
    )
    pipeline.start()
    try:
        (incident,) = pipeline.incidents()
        assert incident["orders"] == 3 and incident["kind"] == "missing"
        assert pipeline.watch.incident_of("o1") == incident
    finally:
        pipeline.stop()
