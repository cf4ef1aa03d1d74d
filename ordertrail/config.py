"""The configuration of ``ordertrail run``: one immutable object, built once at the entry point
from the command line, then ``ORDERTRAIL_*`` environment variables, then defaults, and passed
down. Nothing below the entry point reads the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collectors.spanmap import SpanMapping
from tracer.times import parse_duration

DEFAULT_LISTEN = "127.0.0.1:4320"
DEFAULT_DATA = ".ordertrail"


class ConfigError(ValueError):
    """A setting is unusable; the message names it, its value and what is allowed."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    journeys: Path
    host: str = "127.0.0.1"
    port: int = 4320
    data_dir: Path = Path(DEFAULT_DATA)
    bus_url: str = ""  # empty: the embedded log under data_dir/bus
    store_url: str = ""  # empty: chDB under data_dir/store
    alertmanager: str | None = None
    webhook: str | None = None
    partitions: int = 8
    max_body_bytes: int = 8 * 1024 * 1024
    retention_ms: int = 7 * 86_400_000
    in_flight_ms: int = 250
    warmup_ms: int = 5_000
    public_url: str = ""  # how people reach the lookup page, for links in alerts
    spans: SpanMapping = field(default_factory=SpanMapping)  # the span attributes /v1/traces maps to hop event fields
    webhook_secret: str = ""  # signs webhook bodies (HMAC-SHA256)
    dashboard_url: str = ""  # linked from alerts; default: the incidents API
    alert_resend_ms: int = 30_000  # firing alerts are sent again this often (Alertmanager)
    incident_window_ms: int = 10 * 60_000  # findings this close together are one incident
    group: str = "ordertrail-tracer"  # the Kafka consumer group of the tracer instances
    session_timeout_ms: int = 10_000  # Kafka: a silent tracer's partitions move after this long
    max_poll_interval_ms: int = 60_000  # Kafka: a tracer stuck this long between polls leaves the group

    @property
    def kafka(self) -> bool:
        return self.bus_url.startswith("kafka://")

    @property
    def store(self) -> str:
        return self.store_url or f"chdb://{(self.data_dir / 'store').resolve()}"

    @property
    def lookup_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str]) -> RunConfig:
        def pick(name: str, env: str, default: str = "") -> str:
            value = getattr(args, name, None)
            if value not in (None, ""):
                return str(value)
            return environ.get(env, default)

        journeys = pick("journeys", "ORDERTRAIL_JOURNEYS")
        if not journeys:
            raise ConfigError("--journeys: a journeys file is required (or set ORDERTRAIL_JOURNEYS)")
        host, port = parse_listen(pick("listen", "ORDERTRAIL_LISTEN", DEFAULT_LISTEN))
        bus = pick("bus", "ORDERTRAIL_BUS")
        if bus and not bus.startswith(("kafka://", "local://")):
            raise ConfigError(
                f"--bus: {bus!r} is not supported; use kafka://host:port or leave it out for the embedded bus"
            )
        if bus.startswith("kafka://"):
            check_kafka_url(bus)
        store = pick("store", "ORDERTRAIL_STORE")
        if store and not store.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(f"--store: {store!r} must be chdb:///dir, http://host:port or https://host:port")
        retention_ms = _duration("--retention", pick("retention", "ORDERTRAIL_RETENTION", "7d"))
        warmup_ms = _duration("--warmup", pick("warmup", "ORDERTRAIL_WARMUP", "5s"), allow_zero=True)
        d = SpanMapping()
        spans = SpanMapping(
            order=pick("order_attribute", "ORDERTRAIL_ORDER_ATTRIBUTE", d.order),
            hop=pick("hop_attribute", "ORDERTRAIL_HOP_ATTRIBUTE", d.hop),
            customer=pick("customer_attribute", "ORDERTRAIL_CUSTOMER_ATTRIBUTE", d.customer),
            journey=pick("journey_attribute", "ORDERTRAIL_JOURNEY_ATTRIBUTE", d.journey),
        )
        for setting, problem in spans.problems().items():
            raise ConfigError(f"--{setting}-attribute: {problem}")
        alertmanager = pick("alertmanager", "ORDERTRAIL_ALERTMANAGER")
        webhook = pick("webhook", "ORDERTRAIL_WEBHOOK")
        for flag, url in (("--alertmanager", alertmanager), ("--webhook", webhook)):
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{flag}: {url!r} must be an http:// or https:// URL")
        return cls(
            journeys=Path(journeys),
            host=host,
            port=port,
            data_dir=Path(pick("data", "ORDERTRAIL_DATA", DEFAULT_DATA)),
            bus_url=bus,
            store_url=store,
            alertmanager=alertmanager or None,
            webhook=webhook or None,
            webhook_secret=environ.get("ORDERTRAIL_WEBHOOK_SECRET", ""),
            dashboard_url=pick("dashboard_url", "ORDERTRAIL_DASHBOARD_URL"),
            alert_resend_ms=_duration("--alert-resend", pick("alert_resend", "ORDERTRAIL_ALERT_RESEND", "30s")),
            incident_window_ms=_duration(
                "--incident-window", pick("incident_window", "ORDERTRAIL_INCIDENT_WINDOW", "10m")
            ),
            retention_ms=retention_ms,
            warmup_ms=warmup_ms,
            public_url=pick("public_url", "ORDERTRAIL_PUBLIC_URL"),
            spans=spans,
            group=pick("group", "ORDERTRAIL_GROUP", "ordertrail-tracer"),
            session_timeout_ms=_duration(
                "ORDERTRAIL_KAFKA_SESSION_TIMEOUT", environ.get("ORDERTRAIL_KAFKA_SESSION_TIMEOUT", "10s")
            ),
            max_poll_interval_ms=_duration(
                "ORDERTRAIL_KAFKA_MAX_POLL_INTERVAL", environ.get("ORDERTRAIL_KAFKA_MAX_POLL_INTERVAL", "60s")
            ),
        )


def check_kafka_url(url: str) -> None:
    """``kafka://host:port[,host:port...]``, or ConfigError naming the setting and the value."""
    from tracer.bus import BusError
    from tracer.kafkabus import bootstrap_servers  # imports the Kafka client: only when asked for

    try:
        bootstrap_servers(url)
    except BusError as exc:
        raise ConfigError(f"--bus: {exc}") from None


def _duration(flag: str, text: str, *, allow_zero: bool = False) -> int:
    try:
        ms = parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if ms == 0 and not allow_zero:
        raise ConfigError(f"{flag}: must be longer than 0")
    return ms


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen: {text!r} must be HOST:PORT, e.g. 127.0.0.1:4320 (port 0 picks a free one)")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--journeys", help="the journeys file (YAML); env ORDERTRAIL_JOURNEYS")
    parser.add_argument("--listen", help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}); env ORDERTRAIL_LISTEN")
    parser.add_argument("--data", help=f"directory for the embedded bus and store (default {DEFAULT_DATA})")
    parser.add_argument("--bus", help="kafka://host:port to use Kafka (default: the embedded durable log)")
    parser.add_argument("--store", help="http(s)://host:port for a ClickHouse server (default: embedded chDB)")
    parser.add_argument("--alertmanager", help="Alertmanager base URL, e.g. http://127.0.0.1:9093")
    parser.add_argument(
        "--webhook",
        help="a URL to POST alerts to as JSON (signed with HMAC-SHA256 when ORDERTRAIL_WEBHOOK_SECRET is set)",
    )
    parser.add_argument("--dashboard-url", dest="dashboard_url", help="a dashboard URL to link from alerts")
    parser.add_argument(
        "--alert-resend", dest="alert_resend", help="re-send firing alerts to Alertmanager this often (default 30s)"
    )
    parser.add_argument(
        "--incident-window",
        dest="incident_window",
        help="findings of one edge and kind this close together are one incident (default 10m)",
    )
    parser.add_argument("--retention", help="how long an idle open order is held in memory (default 7d)")
    parser.add_argument(
        "--warmup",
        help="after start, deadlines follow event time only for this long, while producers that buffered "
        "during a restart catch up (default 5s); env ORDERTRAIL_WARMUP",
    )
    parser.add_argument("--public-url", dest="public_url", help="the lookup's URL as people reach it (for links)")
    d = SpanMapping()
    for name, what in (
        ("order", "the order id (a span carrying it becomes a hop event)"),
        ("hop", "the hop name (else the span name)"),
        ("customer", "the customer id"),
        ("journey", "the journey name"),
    ):
        parser.add_argument(
            f"--{name}-attribute",
            dest=f"{name}_attribute",
            help=f"OTLP /v1/traces: the span attribute with {what} (default {getattr(d, name)}); "
            f"env ORDERTRAIL_{name.upper()}_ATTRIBUTE",
        )
    parser.add_argument(
        "--group",
        help="with --bus kafka://: the consumer group the tracer instances share (default ordertrail-tracer); "
        "env ORDERTRAIL_GROUP; Kafka timeouts: ORDERTRAIL_KAFKA_SESSION_TIMEOUT (10s), "
        "ORDERTRAIL_KAFKA_MAX_POLL_INTERVAL (60s)",
    )
