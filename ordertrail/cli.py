"""The ``ordertrail`` command line (CONTRACT §4): one subcommand per row of ``COMMANDS``.

A command is two functions: ``add_arguments(parser)`` declares its options and ``main(args) -> int``
runs it and returns the exit status. To add one, write a module with those two functions (say
``ordertrail/run.py``) and add a row ``Command("run", "…", run.add_arguments, run.main)``. Every
module in the table is imported to build the parser, so a command module keeps heavy imports
(servers, the store) inside its ``main``.

Exit statuses: 0 done, 1 failed while running, 2 unusable arguments or inputs, 130 interrupted.
``check`` lives here: it is a few lines over ``tracer.journeys``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from ordertrail import backtest, demo, lookup_cli, roles, run, simulate, tap
from tracer.errors import JourneysError
from tracer.journeys import Journey, Journeys, load_journeys
from tracer.model import format_ts
from tracer.times import format_duration

EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130


class Command(NamedTuple):
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


def _add_check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("journeys_file", metavar="JOURNEYS_FILE", help="the journeys file (YAML) to validate")


def _check(args: argparse.Namespace) -> int:
    try:
        journeys = load_journeys(args.journeys_file)
    except JourneysError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"error: {problem}\n")
        n = len(exc.problems)
        sys.stderr.write(f"{args.journeys_file}: {n} problem{'s' if n != 1 else ''}; the file is not usable\n")
        return EXIT_USAGE
    sys.stdout.write(describe(journeys))
    return 0


COMMANDS: Final = (
    Command("check", "validate a journeys file and show what it defines", _add_check_arguments, _check),
    Command(
        "backtest",
        "replay NDJSON hop events in event time and print the final findings as NDJSON",
        backtest.add_arguments,
        backtest.main,
    ),
    Command("run", "run the whole pipeline: ingest, tracer, store, lookup API and page", run.add_arguments, run.main),
    Command(
        "ingest", "the ingest role on Kafka: POST /v1/events to the hops topic", roles.add_arguments, roles.ingest_main
    ),
    Command(
        "tracer",
        "the tracer role on Kafka: hops topic → tracer → store, findings to their topic",
        roles.add_arguments,
        roles.tracer_main,
    ),
    Command("lookup-server", "the lookup role: API and page over the store", roles.add_arguments, roles.lookup_main),
    Command(
        "detectors",
        "the detectors role on Kafka: findings topic → incidents → one alert per incident",
        roles.add_arguments,
        roles.detectors_main,
    ),
    Command(
        "lookup",
        "look up one order: what happened and what to tell the customer",
        lookup_cli.add_arguments,
        lookup_cli.main,
    ),
    Command(
        "demo",
        "run the pipeline with a simulated shop and injected faults, and show what ordertrail catches",
        demo.add_arguments,
        demo.main,
    ),
    Command("simulate", "run a simulated shop with injected faults", simulate.add_arguments, simulate.main),
    Command(
        "tap",
        "turn JSON log lines or an existing Kafka topic into hop events, by a mapping file",
        tap.add_arguments,
        tap.main,
    ),
)


def build_parser(commands: Sequence[Command] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ordertrail",
        description="Follows every customer order across every hop, notices the hop that did not happen.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_main=command.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``ordertrail``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse already printed (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "_main", None)
    if run is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read stdout went away (`| head`): stop quietly, and keep the interpreter from
        # complaining about the broken pipe again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def describe(journeys: Journeys) -> str:
    """What ``check`` prints for a valid file: each journey, its steps, and notes worth knowing."""
    n = len(journeys.journeys)
    lines = [f"{journeys.source}: OK, {n} journe{'ys' if n != 1 else 'y'}", ""]
    learned = False
    for journey in journeys.journeys.values():
        lines.extend(_describe_journey(journey))
        learned = learned or any(s.stall_after_ms is None for s in journey.steps)
    if learned:
        lr = journeys.learning
        lines.append(
            f"stall learning (steps without stall_after): p{lr.percentile:g} of recent transit times "
            f"x {lr.factor:g}, at least {format_duration(lr.floor_ms)}, once an edge has {lr.min_samples} samples"
        )
    lines.extend(_describe_schedules(journeys))
    notes = _notes(journeys)
    lines.append("notes:" if notes else "notes: none")
    lines.extend(f"  - {note}" for note in notes)
    return "\n".join(lines) + "\n"


def _describe_journey(j: Journey) -> list[str]:
    title = f"journey {j.name}" + (f": {j.description}" if j.description else "")
    rows = [("step", "after", "within", "stall after", "")]
    for s in j.steps:
        stall = format_duration(s.stall_after_ms) if s.stall_after_ms is not None else "learned"
        rows.append((s.hop, s.after, format_duration(s.within_ms), stall, "confirmation" if s.confirmation else ""))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    table = ["    " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    keys = [
        f"    {k.name}: {', '.join(k.steps)} reported under it; linked by attrs.{k.attr} on "
        f"{', '.join(k.linked_by) if k.linked_by else 'any other hop'}; waits up to {format_duration(k.within_ms)}"
        for k in j.keys
    ]
    return [
        title,
        f"  start: {j.start}",
        "  steps:",
        *table,
        f"  complete when seen: {', '.join(j.complete)}",
        *(["  other keys:", *keys] if keys else []),
        "",
    ]


def _describe_schedules(journeys: Journeys, now_ms: int | None = None) -> list[str]:
    if not journeys.schedules:
        return []
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    lines = [f"schedules: {len(journeys.schedules)}"]
    for s in journeys.schedules:
        zone = str(getattr(s.due.zone, "key", "UTC"))
        expect = f"at least {s.at_least} x {s.hop}" if s.at_least > 1 or s.every_key is None else f"{s.hop}"
        if s.every_key is not None:
            expect += f" again for every {s.every_key} seen in the period before"
        nxt = s.due.next_after(now)
        lines.append(
            f"  {s.name}: {expect}; due {s.due.text!r} ({zone}), grace {format_duration(s.grace_ms)}; "
            f"next due {format_ts(nxt) if nxt is not None else 'never'}"
            + (f" - {s.description}" if s.description else "")
        )
    lines.append("")
    return lines


def _notes(journeys: Journeys) -> list[str]:
    notes = [
        f"hop {hop!r} is in journeys {', '.join(names)}: it cannot be used to infer an order's journey; "
        f"orders seen only at that hop need 'journey' in their events"
        for hop, names in sorted(journeys.shared_hops.items())
    ]
    for j in journeys.journeys.values():
        awaited = {s.after for s in j.steps}
        for s in j.steps:
            if s.hop not in awaited and s.hop not in j.complete:
                notes.append(
                    f"journey {j.name!r}, step {s.hop!r}: nothing waits for it and it is not in 'complete'; "
                    f"an order can complete without it, and is no longer watched for it once complete"
                )
    return notes
