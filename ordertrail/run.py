"""``ordertrail run``: the whole pipeline in one process (CONTRACT §4).

Builds the configuration once (arguments > ``ORDERTRAIL_*`` environment > defaults), opens the
bus and the store, restores the tracer's open orders, and serves the HTTP API until SIGTERM or
SIGINT; then stops accepting, lets the tracer write and commit what it has, and closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ordertrail.config import ConfigError, RunConfig, add_run_arguments

if TYPE_CHECKING:
    import uvicorn

    from detectors import AlertSink
    from ordertrail.pipeline import Pipeline
    from ordertrail.roles import Role
from tracer.errors import JourneysError, TracerError
from tracer.processor import FindingListener, tune_gc

log = logging.getLogger("ordertrail.run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ORDERTRAIL_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default info)",
    )


_SERVING: dict[str, str] = {
    "run": "lookup page, API, /metrics",
    "ingest": "POST /v1/events to the hops topic, /metrics",
    "tracer": "/metrics, /healthz, /readyz",
    "lookup": "lookup page, API, /metrics",
    "detectors": "findings topic → incidents → alerts; /v1/incidents, /metrics",
}


def main(args: argparse.Namespace, *, role: Role = "run") -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.log_level != "debug":
        logging.getLogger("kafka").setLevel(logging.WARNING)  # the client's INFO is every connection
    try:
        config = RunConfig.from_args(args, os.environ)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if role in ("run", "tracer"):
        tune_gc()  # this process streams records through a processor
    try:
        with running(config, role=role) as (_, server):
            log.info("ordertrail %s is serving on %s (%s)", role, config.lookup_url, _SERVING[role])
            server.run()
    except JourneysError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"error: {problem}\n")
        return 2
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except TracerError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


@contextmanager
def running(
    config: RunConfig,
    *,
    listeners: tuple[FindingListener, ...] = (),
    sinks: list[AlertSink] | None = None,
    role: Role = "run",
) -> Iterator[tuple[Pipeline, uvicorn.Server]]:
    """Open every part ``role`` needs (``ordertrail.roles``), start the tracer thread, and yield
    (pipeline, server). ``server.run()`` blocks until a signal or ``server.should_exit``; leaving
    the context stops and closes everything in order. ``sinks`` replaces the alert sinks the
    configuration names."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn raises a captured SIGTERM again after its shutdown, which would kill the
            # process before the tracer writes and commits its last batch. Shut down in order
            # instead, and exit 0.
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    from ordertrail.roles import open_role, serve_routes
    from ordertrail.server import create_app
    from tracer.journeys import load_journeys

    journeys = load_journeys(config.journeys)
    with open_role(config, journeys, role, listeners=listeners, sinks=sinks) as pipeline:
        pipeline.start()
        try:
            app = create_app(
                pipeline,
                max_body_bytes=config.max_body_bytes,
                on_rejected=pipeline.count_rejected,
                spans=config.spans,
                otlp_stats=pipeline.otlp_stats,
            )
            app = serve_routes(app, role)
            server = _Server(
                uvicorn.Config(
                    app,
                    host=config.host,
                    port=config.port,
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=5,
                )
            )
            yield pipeline, server
        finally:
            pipeline.stop()
