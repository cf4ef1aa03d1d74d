"""What each deployable role opens and serves. ``ordertrail run`` is every role in one process (on
the embedded log, or on Kafka with ``--bus kafka://``); on Kafka the roles also deploy apart, so
each scales on its own:

    ordertrail ingest         HTTP ingest (POST /v1/events) → the hops topic
    ordertrail tracer         hops topic → tracer → store; findings → the findings topic
    ordertrail lookup-server  the lookup API and page over the store
    ordertrail detectors      findings topic → incidents → alerts (one alert per incident)

Every role serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``--listen``. Tracer instances
share the consumer group ``--group``: each owns some partitions of the hops topic and their open
orders (``tracer.ownership``); kill one and the others take its partitions over. A tracer
instance alerts on what its own state shows (edges, pipeline health, schedules: the same label
sets from every instance, which Alertmanager merges); order-level incidents are alerted by the
detectors role, which reads every finding of an incident from the findings topic (keyed by
incident) whichever tracer raised it. Detectors instances share the group ``<group>-detectors``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from ordertrail import run
from ordertrail.config import ConfigError, RunConfig

if TYPE_CHECKING:  # the rest is imported when a role starts: the CLI stays quick to load
    from starlette.applications import Starlette

    from detectors import AlertSink
    from ordertrail.pipeline import Pipeline
    from tracer.clickhouse import Store
    from tracer.clock import WallClock
    from tracer.journeys import Journeys
    from tracer.kafkabus import KafkaBus
    from tracer.processor import FindingListener

log = logging.getLogger("ordertrail.roles")

Role = Literal["run", "ingest", "tracer", "lookup", "detectors"]

_PROBES: Final = {"/metrics", "/healthz", "/readyz", "/openapi.json"}
_INGEST: Final = {"/v1/events", "/v1/traces"}
ROUTES: Final[dict[str, set[str] | None]] = {
    "run": None,  # everything
    "ingest": _INGEST | _PROBES,
    "tracer": _PROBES,
    "lookup": {"/v1/orders/{order_id:path}", "/v1/orders", "/v1/findings", "/v1/incidents", "/"} | _PROBES,
    "detectors": {"/v1/incidents"} | _PROBES,
}


def serve_routes(app: Starlette, role: Role) -> Starlette:
    """``app`` with only the routes ``role`` serves."""
    from starlette.routing import Route

    keep = ROUTES[role]
    if keep is not None:
        app.router.routes = [r for r in app.router.routes if isinstance(r, Route) and r.path in keep]
    return app


@contextmanager
def open_role(
    config: RunConfig,
    journeys: Journeys,
    role: Role,
    *,
    listeners: tuple[FindingListener, ...] = (),
    sinks: list[AlertSink] | None = None,
) -> Iterator[Pipeline]:
    """The pipeline of ``role``, its parts open; closed in order on leaving."""
    from ordertrail.pipeline import Pipeline, trace_headers
    from tracer.clickhouse import Store
    from tracer.clock import WallClock

    if role in ("ingest", "tracer", "detectors") and not config.kafka:
        raise ConfigError(f"--bus: the {role} role runs on Kafka; give --bus kafka://host:port")
    wall = WallClock()
    with ExitStack() as stack:
        if role == "ingest":
            bus = stack.enter_context(_kafka_bus(config))
            yield Pipeline(
                config,
                journeys,
                producer=bus,
                source=None,
                store=None,
                wall=wall,
                partitions=[],
                headers=trace_headers,
                sinks=sinks,
            )
            return
        store = stack.enter_context(Store.open(config.store))
        if role == "lookup":
            yield Pipeline(
                config, journeys, producer=None, source=None, store=store, wall=wall, partitions=[], sinks=sinks
            )
        elif role == "detectors":
            yield stack.enter_context(_detecting(_Parts(config, journeys, store, wall, listeners, sinks, role)))
        else:
            tracing = _kafka_tracing if config.kafka else _local_tracing
            yield stack.enter_context(tracing(_Parts(config, journeys, store, wall, listeners, sinks, role)))


class _Parts(NamedTuple):
    """What a tracing pipeline is built from, whichever bus it reads."""

    config: RunConfig
    journeys: Journeys
    store: Store
    wall: WallClock
    listeners: tuple[FindingListener, ...]
    sinks: list[AlertSink] | None
    role: Role


@contextmanager
def _local_tracing(parts: _Parts) -> Iterator[Pipeline]:
    config, journeys, store, wall, listeners, sinks, _ = parts
    from ordertrail.pipeline import Pipeline
    from tracer.bus import HOPS_TOPIC, DeadLetters
    from tracer.localbus import LocalBus

    config.data_dir.mkdir(parents=True, exist_ok=True)
    with LocalBus(config.data_dir / "bus") as bus:
        consumer = bus.consumer(HOPS_TOPIC, config.group)
        try:
            yield Pipeline(
                config,
                journeys,
                producer=bus,
                source=consumer,
                store=store,
                wall=wall,
                partitions=bus.partitions(HOPS_TOPIC),
                dead_letter=DeadLetters(bus),
                listeners=listeners,
                sinks=sinks,
            )
        finally:
            consumer.wakeup()  # the pipeline stops (caller) before the consumer closes
            consumer.close()


@contextmanager
def _kafka_bus(config: RunConfig) -> Iterator[KafkaBus]:
    from tracer.kafkabus import KafkaBus

    with KafkaBus(config.bus_url, client_id=f"ordertrail-{config.group}") as bus:
        bus.ensure_topics()
        yield bus


@contextmanager
def _kafka_tracing(parts: _Parts) -> Iterator[Pipeline]:
    """The tracer over Kafka: a group consumer whose new partitions wait while their open orders
    are rebuilt (``tracer.ownership``), findings published before each store write."""
    config, journeys, store, wall, listeners, sinks, role = parts
    from ordertrail.pipeline import Pipeline, trace_headers
    from tracer.bus import HOPS_TOPIC, DeadLetters
    from tracer.findings_topic import PublishingSink
    from tracer.ownership import Ownership

    with _kafka_bus(config) as bus:
        consumer = bus.consumer(
            HOPS_TOPIC,
            config.group,
            hold_new=True,
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=max(100, config.session_timeout_ms // 6),
            max_poll_interval_ms=config.max_poll_interval_ms,
        )
        try:
            sink = PublishingSink(store, bus)
            ownership = Ownership(consumer, sink)
            consumer.listener = ownership
            pipeline = Pipeline(
                config,
                journeys,
                producer=bus,  # ingest (``run``) and re-keyed events forwarded to their order's partition
                source=ownership,
                store=store,
                wall=wall,
                partitions=[],
                sink=sink,
                dead_letter=DeadLetters(bus),
                listeners=listeners,
                sinks=sinks,
                headers=trace_headers,
                topic_partitions=len(bus.partitions(HOPS_TOPIC)),
                role=role,
            )
            ownership.bind(pipeline.processor)
            yield pipeline
        finally:
            consumer.close()


@contextmanager
def _detecting(parts: _Parts) -> Iterator[Pipeline]:
    """The detectors over Kafka: the findings topic → incidents → alerts, positions committed
    after the findings were folded in (incidents are rebuilt from the store's open findings on
    start, so a restart loses none)."""
    import threading

    from ordertrail.pipeline import Pipeline
    from tracer.bus import FINDINGS_TOPIC
    from tracer.findings_topic import FindingsFeed

    config, journeys, store, wall, _, sinks, _ = parts
    with _kafka_bus(config) as bus:
        consumer = bus.consumer(
            FINDINGS_TOPIC,
            f"{config.group}-detectors",
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=max(100, config.session_timeout_ms // 6),
            max_poll_interval_ms=config.max_poll_interval_ms,
        )
        pipeline = Pipeline(
            config, journeys, producer=None, source=None, store=store, wall=wall, partitions=[], sinks=sinks,
            role="detectors",
        )  # fmt: skip
        feed = FindingsFeed(consumer)
        stop = threading.Event()

        def run_feed() -> None:
            while not stop.is_set():
                try:
                    findings = feed.poll()
                    if findings:
                        pipeline.watch.on_findings(findings)
                    feed.commit()
                except Exception:  # keep consuming: a broker hiccup must not end the detectors
                    log.exception("findings feed failed; retrying")
                    stop.wait(1.0)

        thread = threading.Thread(target=run_feed, name="findings-feed", daemon=True)
        thread.start()
        try:
            yield pipeline
        finally:
            stop.set()
            consumer.wakeup()
            thread.join(10)
            consumer.close()


# -- the role commands --------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    run.add_arguments(parser)


def ingest_main(args: argparse.Namespace) -> int:
    return run.main(args, role="ingest")


def tracer_main(args: argparse.Namespace) -> int:
    return run.main(args, role="tracer")


def lookup_main(args: argparse.Namespace) -> int:
    return run.main(args, role="lookup")


def detectors_main(args: argparse.Namespace) -> int:
    return run.main(args, role="detectors")
