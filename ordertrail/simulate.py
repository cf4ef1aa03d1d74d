"""``ordertrail simulate``: the simulated shop (``collectors.simulator.demo_shop``) sending hop events,
with faults injected on a schedule, and a summary of what was injected at the end.

Two modes:

* real time (default): orders arrive at ``--rate`` per second and every hop is sent when it
  happens, in NDJSON batches to ``--url``'s ``POST /v1/events`` from a background thread, until
  ``--duration`` is over or Ctrl-C. The server is probed first (``GET /healthz``).
* offline: ``--ndjson FILE`` (``-`` for stdout) writes ``--duration`` of events from ``--start``
  (default: now) as fast as it can, in event-time order — a day of events for ``ordertrail
  backtest``. The same ``--seed`` and ``--start`` give the same file.

The shop matches ``ordertrail/demo_journeys.yaml``; ``--journeys-out FILE`` writes it out for
``ordertrail run --journeys FILE`` or ``backtest``. ``--ledger FILE`` writes what the faults did
(every fault's window and every order it touched) as JSON, to compare with what was detected.

Exit status: 0 done (also after Ctrl-C), 1 some events could not be delivered, 2 unusable arguments
or an unreachable server.
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
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import IO, Final, TextIO

import msgspec

from collectors.faults import Fault, FaultSpecError, Ledger, parse_schedule
from collectors.faults import __doc__ as _FAULTS_DOC
from collectors.simulator import RunStats, Simulation, demo_shop
from tracer.journeys import parse_journeys
from tracer.model import format_ts, now_ms
from tracer.times import DURATION_HELP, TS_HELP, format_duration, parse_duration, parse_ts

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_URL: Final = "http://127.0.0.1:4320"
_JSON: Final = msgspec.json.Encoder()

# (url, body or None for a GET) -> (HTTP status, response body); raises OSError when unreachable.
Send = Callable[[str, bytes | None], tuple[int, bytes]]


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
        "--drain",
        action="store_true",
        help="real time: after the duration, keep sending until the orders in flight end (--ndjson always does)",
    )
    parser.add_argument("--journeys-out", metavar="FILE", help="write the journeys file the simulated shop matches")
    parser.add_argument("--ledger", metavar="FILE", help="write what the faults did as JSON")
    parser.add_argument("--batch", type=int, default=1000, help="events per HTTP request (default 1000)")


def main(
    args: argparse.Namespace,
    *,
    send: Send | None = None,
    clock: Callable[[], float] = time.time,
    environ: dict[str, str] | None = None,
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
        status = _realtime(simulation, url, duration_ms, args, send or urllib_send, clock)
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
    duration_ms: int | None,
    args: argparse.Namespace,
    send: Send,
    clock: Callable[[], float],
) -> int:
    try:
        send(f"{url}/healthz", None)
    except OSError as exc:
        return _usage([f"--url: {url} cannot be reached ({exc}); start `ordertrail run` first or give --url"])
    poster = BatchPoster(f"{url}/v1/events", send, batch=args.batch)
    stop = threading.Event()
    outcome: list[RunStats] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            simulation.run_realtime(poster.emit, stop=stop, duration_ms=duration_ms, drain=args.drain, clock=clock)
        ),
        name="simulator",
        daemon=True,
    )
    lasting = f"for {format_duration(duration_ms)}" if duration_ms is not None else "until Ctrl-C"
    faults = ", ".join(f.spec() for f in simulation.ledger.schedule) or "none"
    sys.stderr.write(f"simulate: {simulation.rate:g} orders/s to {url} {lasting}; faults: {faults}\n")
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.2)
    except KeyboardInterrupt:
        stop.set()
        runner.join(5.0)
    poster.close(10.0)
    stats = outcome[0] if outcome else RunStats()
    sys.stdout.write(summary(stats, simulation.ledger, poster.describe()) + "\n")
    for problem in poster.errors:
        sys.stderr.write(f"warning: {problem}\n")
    return EXIT_OK if poster.failed == poster.dropped == 0 else EXIT_FAILED


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


def urllib_send(url: str, body: bytes | None) -> tuple[int, bytes]:
    """One HTTP request; HTTP errors are returned as statuses, unreachable servers raise OSError."""
    headers = {"Content-Type": "application/x-ndjson"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


class BatchPoster:
    """Hop events to ``POST /v1/events`` as NDJSON batches from a background thread.

    ``emit`` only appends to a bounded buffer: it never blocks or raises, and counts what it drops
    when the buffer is full. A batch is retried with backoff when the server is unreachable or
    answers 5xx; a 4xx answer is not retried. Counters say what happened to every event."""

    def __init__(
        self,
        url: str,
        send: Send,
        *,
        batch: int = 1000,
        interval_s: float = 0.2,
        max_buffered: int = 100_000,
        retries: int = 3,
        backoff_s: float = 0.2,
    ) -> None:
        self.url = url
        self._send = send
        self._batch = batch
        self._interval_s = interval_s
        self._max = max_buffered
        self._retries = retries
        self._backoff_s = backoff_s
        self._buffer: deque[dict[str, object]] = deque()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self.accepted = 0
        self.rejected = 0
        self.failed = 0  # in batches the server never took
        self.dropped = 0  # the buffer was full
        self.errors: list[str] = []  # the first few problems, for the user
        self._thread = threading.Thread(target=self._loop, name="simulate-poster", daemon=True)
        self._thread.start()

    def emit(self, event: dict[str, object]) -> None:
        if len(self._buffer) >= self._max:
            self.dropped += 1
            return
        self._buffer.append(event)
        if len(self._buffer) >= self._batch:
            self._wake.set()

    def close(self, timeout_s: float) -> None:
        """Send what is buffered, then stop (waiting at most ``timeout_s``)."""
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout_s)

    def describe(self) -> str:
        parts = [f"posted to {self.url}: {self.accepted:,} accepted, {self.rejected:,} rejected"]
        if self.failed:
            parts.append(f"{self.failed:,} not delivered")
        if self.dropped:
            parts.append(f"{self.dropped:,} dropped (buffer full)")
        return ", ".join(parts)

    def _loop(self) -> None:
        while True:
            closing = self._closing.is_set()
            self._wake.wait(self._interval_s)
            self._wake.clear()
            buffer = self._buffer
            while buffer:
                items = [buffer.popleft() for _ in range(min(len(buffer), self._batch))]
                if not self._post(items) and self._closing.is_set():
                    self.failed += len(buffer)
                    buffer.clear()
            if closing:
                return

    def _post(self, items: list[dict[str, object]]) -> bool:
        """One batch; False when it could not be delivered."""
        body = b"\n".join(_JSON.encode(e) for e in items) + b"\n"
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                self._closing.wait(self._backoff_s * 2 ** (attempt - 1))
            try:
                status, answer = self._send(self.url, body)
            except OSError as exc:
                problem = f"{self.url}: {exc}"
                continue
            if status == 202:
                self._count(answer, len(items))
                return True
            problem = f"{self.url} answered {status}: {answer[:200].decode(errors='replace')}"
            if status < 500:
                break
        self.failed += len(items)
        self._note(problem)
        return False

    def _count(self, answer: bytes, n: int) -> None:
        try:
            reply = json.loads(answer)
            accepted = int(reply["accepted"])
            rejected = list(reply.get("rejected", []))
        except (ValueError, KeyError, TypeError):
            self.accepted += n
            return
        self.accepted += accepted
        self.rejected += len(rejected)
        for item in rejected[:3]:
            self._note(f"rejected: {item}")

    def _note(self, problem: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(problem)
