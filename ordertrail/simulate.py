"""``ordertrail simulate``: the simulated shop (``collectors.simulator.demo_shop``) sending hop events,
with faults injected on a schedule, and a summary of what was injected at the end.

Two modes:

* real time (default): orders arrive at ``--rate`` per second and every hop is sent when it
  happens, through the SDK's client (``collectors.sdk.Client.emit``: background NDJSON batches to
  ``--url``'s ``POST /v1/events``, or straight to Kafka with ``--bus kafka://host:port``; retries,
  drops counted), until ``--duration`` is over or Ctrl-C. A server is probed first (``GET
  /healthz``). Other ``ORDERTRAIL_*`` SDK settings apply.
* offline: ``--ndjson FILE`` (``-`` for stdout) writes ``--duration`` of events from ``--start``
  (default: now) as fast as it can, in event-time order — a day of events for ``ordertrail
  backtest``. The same ``--seed`` and ``--start`` give the same file.

The shop matches ``ordertrail/demo_journeys.yaml``; ``--journeys-out FILE`` writes it out for
``ordertrail run --journeys FILE`` or ``backtest``. ``--ledger FILE`` writes what the faults did
(every fault's window and every order it touched) as JSON, to compare with what was detected.

Exit status: 0 done (also after Ctrl-C), 1 some events were not delivered or were rejected, 2
unusable arguments or an unreachable server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from importlib import resources
from typing import IO, Final, TextIO

import msgspec

from collectors.faults import Fault, FaultSpecError, Ledger, parse_schedule
from collectors.faults import __doc__ as _FAULTS_DOC
from collectors.sdk import Client, SdkConfig, SdkConfigError, Transport
from collectors.simulator import RunStats, Simulation, demo_shop
from tracer.journeys import parse_journeys
from tracer.model import format_ts, now_ms
from tracer.times import DURATION_HELP, TS_HELP, format_duration, parse_duration, parse_ts

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_URL: Final = "http://127.0.0.1:4320"
_JSON: Final = msgspec.json.Encoder()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    doc = _FAULTS_DOC or "::\n    see collectors/faults.py"  # python -OO strips docstrings
    syntax = doc.split("::", 1)[1].split("A fault is active")[0].rstrip().replace("``", "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "fault syntax (--fault, repeatable):"
        + syntax
        + (
            "\n\nexamples:\n"
            "  ordertrail simulate --rate 20 --duration 2m --fault drop:payment.authorized:0.3@30s+60s\n"
            "  ordertrail simulate --ndjson day.ndjson --start 2026-11-22T00:00:00Z --duration 1d --rate 5 --seed 1"
        )
    )
    parser.add_argument(
        "--url", default=None, help=f"the ordertrail server (default: $ORDERTRAIL_URL or {DEFAULT_URL})"
    )
    parser.add_argument(
        "--bus",
        default=None,
        help="kafka://host:port: produce straight to the hops topic instead of posting (default: $ORDERTRAIL_BUS)",
    )
    parser.add_argument("--ndjson", metavar="FILE", help="write the events to FILE ('-': stdout) as fast as possible")
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second (default 20)")
    parser.add_argument(
        "--duration",
        metavar="DURATION",
        help=f"how long orders arrive ({DURATION_HELP}); real time default: until Ctrl-C; required with --ndjson",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="SPEC", help="inject a fault (syntax below); repeatable"
    )
    parser.add_argument("--seed", type=int, help="random seed: the same seed gives the same orders (default: random)")
    parser.add_argument("--start", metavar="TIME", help=f"with --ndjson: the first event time ({TS_HELP}; default now)")
    parser.add_argument(
        "--no-drain",
        dest="drain",
        action="store_false",
        help="real time: stop at the end of the duration, with orders in flight (the tracer will report them); "
        "by default arrivals stop and the orders in flight run to their end",
    )
    parser.add_argument("--journeys-out", metavar="FILE", help="write the journeys file the simulated shop matches")
    parser.add_argument("--ledger", metavar="FILE", help="write what the faults did as JSON")
    parser.add_argument("--batch", type=int, default=1000, help="events per HTTP request (default 1000)")


def probe_healthz(url: str) -> None:
    """``GET {url}/healthz``; raises OSError when nothing answers there (an HTTP error status is an answer)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5):
            pass
    except urllib.error.HTTPError:
        pass


def main(
    args: argparse.Namespace,
    *,
    transport: Transport | None = None,
    probe: Callable[[str], None] = probe_healthz,
    clock: Callable[[], float] = time.time,
    environ: Mapping[str, str] | None = None,
) -> int:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    schedule: tuple[Fault, ...] = ()
    try:
        schedule = parse_schedule(args.fault)
    except FaultSpecError as exc:
        problems.append(f"--fault: {exc}")
    duration_ms = _duration(args.duration, problems)
    offline = args.ndjson is not None
    if offline and duration_ms is None and args.duration is None:
        problems.append("--duration: required with --ndjson (how much simulated time to write, e.g. 1h)")
    start_ms = None
    if args.start is not None:
        if not offline:
            problems.append("--start: only with --ndjson; in real time events carry the time they are sent")
        try:
            start_ms = parse_ts(int(args.start) if args.start.isdigit() else args.start)
        except ValueError as exc:
            problems.append(f"--start: {exc}")
    if args.batch < 1:
        problems.append(f"--batch: {args.batch} must be at least 1")
    simulation = None
    if not problems:
        try:
            simulation = Simulation(demo_shop(), schedule, rate=args.rate, seed=args.seed)
        except (FaultSpecError, ValueError) as exc:
            problems.append(f"--fault: {exc}" if isinstance(exc, FaultSpecError) else f"--rate: {exc}")
    if problems or simulation is None:
        return _usage(problems)
    if args.journeys_out is not None:
        try:
            with open(args.journeys_out, "w", encoding="utf-8") as out:
                out.write(demo_journeys_text())
        except OSError as exc:
            return _usage([f"--journeys-out: {args.journeys_out}: cannot be written: {exc.strerror or exc}"])
    if offline:
        assert duration_ms is not None
        status = _offline(simulation, args.ndjson, start_ms if start_ms is not None else now_ms(), duration_ms)
    else:
        url = (args.url or env.get("ORDERTRAIL_URL") or DEFAULT_URL).rstrip("/")
        bus = getattr(args, "bus", None) or env.get("ORDERTRAIL_BUS") or ""
        status = _realtime(simulation, url, bus, duration_ms, args, env, transport, probe, clock)
    if status == EXIT_USAGE:
        return status
    if args.ledger is not None:
        try:
            with open(args.ledger, "w", encoding="utf-8") as out:
                json.dump(simulation.ledger.to_wire(), out, indent=1)
        except OSError as exc:
            sys.stderr.write(f"error: --ledger: {args.ledger}: cannot be written: {exc.strerror or exc}\n")
            return EXIT_FAILED
    return status


def demo_journeys_text() -> str:
    """The bundled journeys file the simulated shop matches."""
    return resources.files("ordertrail").joinpath("demo_journeys.yaml").read_text(encoding="utf-8")


def _duration(text: str | None, problems: list[str]) -> int | None:
    if text is None:
        return None
    try:
        ms = parse_duration(text)
    except ValueError as exc:
        problems.append(f"--duration: {exc}")
        return None
    if ms <= 0:
        problems.append(f"--duration: {text!r} must be longer than 0")
        return None
    return ms


def _offline(simulation: Simulation, name: str, start_ms: int, duration_ms: int) -> int:
    to_stdout = name == "-"
    try:
        out: IO[bytes] = sys.stdout.buffer if to_stdout else open(name, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        return _usage([f"--ndjson: {name}: cannot be written: {exc.strerror or exc}"])
    encode = _JSON.encode
    lines: list[bytes] = []

    def emit(event: dict[str, object]) -> None:
        lines.append(encode(event))
        if len(lines) >= 10_000:
            out.write(b"\n".join(lines) + b"\n")
            lines.clear()

    try:
        stats = simulation.run_offline(emit, start_ms=start_ms, duration_ms=duration_ms)
        if lines:
            out.write(b"\n".join(lines) + b"\n")
        out.flush()
    finally:
        if not to_stdout:
            out.close()
    report = sys.stderr if to_stdout else sys.stdout
    report.write(summary(stats, simulation.ledger, f"written to {name}") + "\n")
    if stats.last_ts is not None:
        longest = max(s.within_ms for j in parse_journeys(demo_journeys_text()).journeys.values() for s in j.steps)
        report.write(
            f"backtest with --until {format_ts(stats.last_ts + longest)} to let every deadline of these orders pass\n"
        )
    return EXIT_OK


def _realtime(
    simulation: Simulation,
    url: str,
    bus: str,
    duration_ms: int | None,
    args: argparse.Namespace,
    env: Mapping[str, str],
    transport: Transport | None,
    probe: Callable[[str], None],
    clock: Callable[[], float],
) -> int:
    if not bus:
        try:
            probe(url)
        except OSError as exc:
            return _usage([f"--url: {url} cannot be reached ({exc}); start `ordertrail run` first or give --url"])
    try:
        config = SdkConfig.load(
            env, url=url, bus=bus, service="shop-simulator", batch=args.batch, buffer=100_000, flush_interval=0.2
        )
    except SdkConfigError as exc:
        return _usage([f"--bus: {exc}" if bus else f"--url: {exc}"])
    target = bus or url
    client = Client(config, transport=transport)
    stop = threading.Event()
    outcome: list[RunStats] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            simulation.run_realtime(client.emit, stop=stop, duration_ms=duration_ms, drain=args.drain, clock=clock)
        ),
        name="simulator",
        daemon=True,
    )
    lasting = f"for {format_duration(duration_ms)}" if duration_ms is not None else "until Ctrl-C"
    faults = ", ".join(f.spec() for f in simulation.ledger.schedule) or "none"
    sys.stderr.write(f"simulate: {simulation.rate:g} orders/s to {target} {lasting}; faults: {faults}\n")
    runner.start()
    ends = None if duration_ms is None else time.monotonic() + duration_ms / 1000
    try:
        while runner.is_alive():
            runner.join(0.2)
            if ends is not None and time.monotonic() > ends and runner.is_alive():
                ends = None
                sys.stderr.write(
                    "simulate: orders stopped arriving; sending the hops of orders in flight (Ctrl-C stops)\n"
                )
    except KeyboardInterrupt:
        stop.set()
        runner.join(5.0)
    client.shutdown(10.0)
    stats = outcome[0] if outcome else RunStats()
    sdk = client.stats()
    lost = sdk.dropped_full + sdk.dropped_failed + sdk.invalid
    verb = "produced to" if bus else "posted to"
    delivery = f"{verb} {target}: {sdk.sent:,} accepted, {sdk.rejected_by_server:,} rejected"
    if lost:
        delivery += f", {lost:,} not delivered ({sdk.dropped_full:,} buffer full, {sdk.dropped_failed:,} failed)"
    sys.stdout.write(summary(stats, simulation.ledger, delivery) + "\n")
    return EXIT_OK if lost == 0 and sdk.rejected_by_server == 0 else EXIT_FAILED


def summary(stats: RunStats, ledger: Ledger, delivery: str) -> str:
    """What a run did: orders per journey, events, their time span, delivery, and the ledger."""
    journeys = ", ".join(f"{name} {n:,}" for name, n in stats.orders.items())
    span = ""
    if stats.first_ts is not None and stats.last_ts is not None:
        span = f" from {format_ts(stats.first_ts)} to {format_ts(stats.last_ts)}"
    lines = [
        f"simulate: {sum(stats.orders.values()):,} orders ({journeys or 'none'}), {stats.events:,} events{span}, "
        f"{stats.errors:,} errors the shop made by itself; {delivery}"
    ]
    faults = ledger.summary()
    lines.append("faults injected:" if faults else "faults injected: none")
    lines.extend(f"  {line}" for line in faults)
    return "\n".join(lines)


def _usage(problems: list[str], stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    for problem in problems:
        err.write(f"error: {problem}\n")
    return EXIT_USAGE
