"""``ordertrail tap logs|kafka``: hop events from systems that cannot be changed (docs/taps.md).

    ordertrail tap logs  --mapping FILE --server URL [--state DIR] PATH_OR_GLOB...
    ordertrail tap kafka --mapping FILE --server URL --brokers HOST:PORT --topic T [--group G]

Both send the mapped events to a running ``ordertrail run`` over ``POST /v1/events`` (the tap runs
next to its sources, which are seldom where the pipeline keeps its bus), and write records that
cannot become events — not JSON, a mapping error, or the server's per-item rejection — to an NDJSON
dead-letter file with their reason. The log tap keeps its file positions under ``--state``; the
Kafka tap keeps its position in its consumer group. SIGTERM or SIGINT stop a tap cleanly: what it
delivered is recorded, what it did not is read again next time.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collectors.taps import Tap

DEFAULT_SERVER = "http://127.0.0.1:4320"
DEFAULT_STATE = ".ordertrail-tap"
log = logging.getLogger("ordertrail.tap")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tap_kind", metavar="{logs,kafka}", required=True)
    logs = sub.add_parser("logs", help="follow JSON-lines log files (rotation, new files by glob)")
    kafka = sub.add_parser("kafka", help="consume an existing business topic in its own consumer group")
    for p in (logs, kafka):
        p.add_argument("--mapping", required=True, help="the mapping file (YAML): record fields -> hop event fields")
        p.add_argument(
            "--server",
            default=os.environ.get("ORDERTRAIL_URL", DEFAULT_SERVER),
            help=f"the ordertrail run to send to (default {DEFAULT_SERVER}; env ORDERTRAIL_URL)",
        )
        p.add_argument("--dead-letters", help="NDJSON file for rejected records (default STATE/deadletters.ndjson)")
        p.add_argument(
            "--state", default=DEFAULT_STATE, help=f"directory for the tap's state (default {DEFAULT_STATE})"
        )
        p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    logs.add_argument(
        "paths", nargs="+", metavar="PATH", help="files or glob patterns (quote globs), e.g. '/var/log/shop/*.log'"
    )
    logs.add_argument(
        "--from-end",
        action="store_true",
        help="on a first run (no saved positions), start at the end of the files instead of their start",
    )
    kafka.add_argument("--brokers", required=True, help="bootstrap servers, HOST:PORT[,HOST:PORT…]")
    kafka.add_argument("--topic", required=True, help="the business topic to read")
    kafka.add_argument("--group", help="the tap's consumer group (default ordertrail-tap-TOPIC)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from collectors.taps import DeadLetterFile, HttpDelivery, MappingError, Tap, load_mapping

    try:
        mapping = load_mapping(args.mapping)
    except MappingError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"error: {problem}\n")
        return 2
    if not args.server.startswith(("http://", "https://")):
        sys.stderr.write(f"error: --server: {args.server!r} must be an http(s):// URL of ordertrail run\n")
        return 2
    state = Path(args.state)
    dead = DeadLetterFile(args.dead_letters or state / "deadletters.ndjson")
    stop = threading.Event()
    delivery = HttpDelivery(args.server)
    tap = Tap(mapping, delivery, dead, stop=stop)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.tap_kind == "logs":
            return _logs(args, tap, state)
        return _kafka(args, tap)
    except OSError as exc:  # the state directory or the dead-letter file cannot be written
        sys.stderr.write(f"error: {exc}; the tap stopped, and reads again from its last saved position\n")
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        delivery.close()
        s = tap.stats
        log.info(
            "tap stopped: %d records, %d events accepted, %d skipped, %d dead letters (%s)",
            s.records,
            s.events,
            s.skipped,
            s.dead_letters,
            dead.path,
        )


def _logs(args: argparse.Namespace, tap: Tap, state: Path) -> int:
    from collectors.taps import PositionFile, open_log_tap

    positions = PositionFile(state / "positions.json")
    log_tap = open_log_tap(tap, args.paths, positions, start_at_end=args.from_end)
    log.info("tapping %s -> %s (positions in %s)", ", ".join(args.paths), args.server, positions.path)
    log_tap.run()
    return 0


def _kafka(args: argparse.Namespace, tap: Tap) -> int:
    from collectors.taps.kafka import KafkaSource, KafkaTap

    group = args.group or f"ordertrail-tap-{args.topic}"
    try:
        source = KafkaSource(args.brokers.split(","), args.topic, group)
    except Exception as exc:  # kafka-python raises its own errors (NoBrokersAvailable, …)
        sys.stderr.write(f"error: --brokers {args.brokers}: cannot connect: {exc!r}\n")
        return 1
    log.info("tapping topic %s (group %s) at %s -> %s", args.topic, group, args.brokers, args.server)
    KafkaTap(tap, source).run()
    return 0
