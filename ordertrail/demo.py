"""``ordertrail demo``: the first thing a new user runs (CONTRACT §4).

Starts the whole pipeline on the embedded defaults (a fresh data directory), runs the simulated
shop through the SDK against it, injects faults on a schedule, prints each finding as it appears,
and at the end a summary — what was injected versus what was detected, and how fast — then leaves
the lookup page up with its URL printed until Ctrl-C (``--exit`` stops instead, for scripts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from ordertrail.config import ConfigError, RunConfig, parse_listen
from tracer.model import OPEN, Finding, format_ts
from tracer.times import format_duration, parse_duration

if TYPE_CHECKING:
    from detectors import Alert

DEFAULT_FAULTS: Final = (
    "drop:payment.authorized:30%@15s+30s",  # payments lost between checkout and the payment service
    "break:email.confirmation_sent@35s+30s",  # confirmations never sent: customers think it is lost
    "stop:inventory.reserved@60s+25s",  # the warehouse stops answering for a while, then catches up
    "fail:refund.approved:50%:retry=10s@20s+40s",  # refund approvals fail, then succeed on retry
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", default="2m", help="how long the simulated shop runs (default 2m)")
    parser.add_argument("--rate", type=float, default=8.0, help="orders per second (default 8)")
    parser.add_argument("--listen", default="127.0.0.1:4320", help="HOST:PORT for the API and page")
    parser.add_argument("--data", help="data directory (default: a fresh temporary one)")
    parser.add_argument(
        "--fault",
        action="append",
        metavar="SPEC",
        help="a fault to inject instead of the default schedule (repeatable; see `ordertrail simulate --help`)",
    )
    parser.add_argument("--no-faults", action="store_true", help="run the shop without faults")
    parser.add_argument("--seed", type=int, default=7, help="the simulation's random seed (default 7)")
    parser.add_argument("--exit", action="store_true", help="stop after the summary instead of leaving the page up")
    parser.add_argument(
        "--settle", default="35s", help="after the shop stops, wait this long for the last deadlines (default 35s)"
    )


def main(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    from collectors.faults import FaultSpecError, compare, parse_schedule
    from collectors.sdk import Client, SdkConfig
    from collectors.simulator import Simulation, demo_shop
    from ordertrail.run import running
    from ordertrail.simulate import demo_journeys_text

    stream = out or sys.stdout
    try:
        duration_ms = parse_duration(args.duration)
        settle_ms = parse_duration(args.settle)
        host, port = parse_listen(args.listen)
        specs = [] if args.no_faults else (args.fault or list(DEFAULT_FAULTS))
        schedule = parse_schedule(specs)
        simulation = Simulation(demo_shop(), schedule, rate=args.rate, seed=args.seed)
    except (ValueError, ConfigError, FaultSpecError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="ordertrail-demo-"))
    data.mkdir(parents=True, exist_ok=True)
    journeys_file = data / "journeys.yaml"
    journeys_file.write_text(demo_journeys_text())
    config = RunConfig(journeys=journeys_file, host=host, port=port, data_dir=data, warmup_ms=0)
    url = config.lookup_url
    printer = _FindingPrinter(stream, url)
    with running(config, listeners=(printer,), sinks=[_AlertPrinter(stream)]) as (pipeline, server):
        stream.write(
            f"ordertrail demo: the pipeline is up at {url} (data in {data})\n"
            f"  shop: {args.rate:g} orders/s for {format_duration(duration_ms)}; faults: "
            f"{', '.join(specs) or 'none'}\n  findings appear below as ordertrail notices them:\n\n"
        )
        stream.flush()

        def shop() -> None:
            client = Client(
                SdkConfig.load(os.environ, url=url, service="demo-shop", flush_interval=0.2, buffer=100_000)
            )
            stop = threading.Event()
            try:
                simulation.run_realtime(client.emit, stop=stop, duration_ms=duration_ms, drain=True)
                client.flush(10.0)
                time.sleep(settle_ms / 1000)
                found = pipeline.store.findings(status="all", limit=100_000)
                stream.write("\n" + report(compare(simulation.ledger, found), found, client.stats().sent) + "\n")
                stream.write(
                    f"\nLook an order up: {url}/?q=<order id>   (or `ordertrail lookup <order id> --server {url}`)\n"
                )
                if args.exit:
                    server.should_exit = True
                else:
                    stream.write("The lookup page stays up; press Ctrl-C to stop.\n")
                stream.flush()
            finally:
                client.shutdown(5.0)

        threading.Thread(target=shop, name="demo-shop", daemon=True).start()
        server.run()
    return 0


class _FindingPrinter:
    """Prints each new finding (and each resolution) as one line, the first few of each kind in
    full and then a count, so a large fault does not flood the terminal."""

    def __init__(self, out: TextIO, url: str, per_kind: int = 5) -> None:
        self._out = out
        self._url = url
        self._per_kind = per_kind
        self._shown: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __call__(self, findings: list[Finding]) -> None:
        with self._lock:
            for f in findings:
                key = (f.kind, f.status)
                n = self._shown.get(key, 0) + 1
                self._shown[key] = n
                if n <= self._per_kind:
                    self._out.write(_line(f) + "\n")
                elif n in (self._per_kind * 4, self._per_kind * 20, self._per_kind * 100):
                    self._out.write(f"  … {n} {f.kind} findings {f.status} so far\n")
            self._out.flush()


def _line(f: Finding) -> str:
    at = format_ts(f.detected_at if f.status == OPEN else (f.resolved_at or f.detected_at))[11:19]
    if f.status == OPEN:
        due = format_ts(f.due_at)[11:19]
        return f"  {at}  {f.kind.upper():<11} {f.order_id}: {f.hop} (after {f.after or '—'}), due {due}"
    return f"  {at}  resolved    {f.order_id}: {f.hop} {f.kind} — arrived {f.late_by_ms} ms late"


class _AlertPrinter:
    """An alert sink printing each alert as it fires and resolves, so the demo shows the early
    warning (``EdgeDegraded``) coming before the findings' deadlines."""

    name = "demo"
    resends = False

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def send(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            at = format_ts(a.starts_at if a.firing else (a.ends_at or a.starts_at))[11:19]
            where = f"{a.journey}/{a.hop}" if a.hop else "ordertrail"
            state = f"ALERT {a.severity}" if a.firing else "ALERT resolved"
            self._out.write(f"  {at}  {state:<16} {a.name} {where}: {a.summary}\n")
        self._out.flush()


def report(comparison: object, findings: list[Finding], sent: int) -> str:
    """Injected versus detected, per fault, with detection delays."""
    from collectors.faults import Comparison

    assert isinstance(comparison, Comparison)
    lines = [f"Summary: {sent:,} hop events sent, {len(findings):,} findings recorded.", "Injected vs detected:"]
    for r in comparison.reports:
        spec = r.window.fault.spec()
        if r.injected == 0:
            lines.append(f"  {spec:<44} no order was touched")
            continue
        delays = sorted(r.delays_ms)
        typical = f", detected {delays[len(delays) // 2] / 1000:.1f} s after the effect (median)" if delays else ""
        lines.append(f"  {spec:<44} {r.detected}/{r.injected} orders detected{typical}")
    unexplained = [f for f in comparison.unexplained if f.status == OPEN]
    lines.append(
        f"  findings with no injected cause: {len(comparison.unexplained)} "
        f"({len(unexplained)} still open) — the shop's own slow tail and errors"
    )
    return "\n".join(lines)
