"""The alerting flags of ``ordertrail run``: URLs checked with a clear error, sinks built from the
configuration (the log always; Alertmanager and the webhook when asked), durations parsed."""

from __future__ import annotations

import argparse

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
