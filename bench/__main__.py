"""``python -m bench [--quick] [--only NAME ...] [--update] [--out PATH] [--keep]``: run the
benchmarks and write the report (docs/benchmarks.md for a full run of everything).

``--only NAME ... --update`` re-measures some benchmarks at full scale and replaces just their rows
and sections in docs/benchmarks.md, keeping the others; the report's header then lists which
benchmarks were measured when, at which commit, so a mixed report never passes for one run.

The registry ``BENCHES`` lists every benchmark: a name (for ``--only``), the issue whose targets it
shows, a title, and a function ``(Context) -> Section`` that measures ordertrail next to its
reference in the same run. To add one (e.g. the live pipeline of issue 3), write a module such as
``bench/live.py`` with that function and append a ``Bench`` here; the report picks it up. Issue 3
asks for: ingest events/s over HTTP (1000-event NDJSON batches, ≥ 40k/s on one core), end-to-end
live throughput, finding delay after deadline (p99 ≤ 1 s), SDK ``track()`` cost on the caller's
thread (p99 ≤ 10 µs), lookup API p50/p99 at ≥ 1M orders (p99 ≤ 20 ms). Give each its reference
measured in the same run (e.g. a bare HTTP server accepting the same bodies, a no-op call), and
sizes in ``bench.Scale`` so ``--quick`` stays short.

A run works in a fresh directory under bench/.work/ and removes it at the end. Numbers in the
report come from this code only: never edit docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    FULL,
    QUICK,
    ROOT,
    Context,
    Row,
    Scale,
    Section,
    detection,
    engine,
    kafka,
    live,
    metrics,
    otlp,
    store,
    taps,
)


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    issue: int
    title: str
    run: Callable[[Context], Section]


BENCHES: list[Bench] = [
    Bench("throughput", 2, "Engine throughput next to the reference loop", engine.throughput),
    Bench("memory", 2, "Memory per open order", engine.memory),
    Bench("lookup", 2, "Lookup by order id in chDB", store.lookup),
    Bench("backtest", 2, "`ordertrail backtest` end to end", engine.backtest),
    Bench("ingest", 3, "HTTP ingest of 1000-event NDJSON batches", live.ingest),
    Bench("e2e", 3, "End-to-end live throughput", live.e2e),
    Bench("delay", 3, "Finding delay after the deadline", live.delay),
    Bench("sdk", 3, "SDK `track()` on the caller's thread", live.sdk),
    Bench("lookup-api", 3, "Lookup API at ≥ 1M orders", live.lookup_api),
    Bench("metrics", 5, "A `/metrics` scrape at many open orders", metrics.scrape),
    Bench("otlp", 6, "OTLP/HTTP ingest of protobuf spans (`POST /v1/traces`)", otlp.otlp),
    Bench("stitch", 6, "Stitching re-keyed orders in front of the engine", taps.stitch),
    Bench("tap", 6, "Tap mapping of JSON lines to hop events", taps.tap),
    Bench("lead-time", 5, "Detection lead time per injected fault", detection.lead_time),
    Bench("kafka", 4, "Tracer throughput over Kafka next to a kafka-python loop; two processes vs one", kafka.kafka),
]
DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"
WORK = ROOT / "bench" / ".work"


@dataclass(slots=True)
class Outcome:
    bench: Bench
    section: Section
    seconds: float
    load: tuple[float, float]  # 1-minute load average before and after
    error: str = ""


@dataclass(slots=True)
class Run:
    scale: Scale
    started: datetime
    load_before: tuple[float, float, float]
    outcomes: list[Outcome] = field(default_factory=list)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    seconds: float = 0.0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n for item in args.only for n in item.split(",") if n]
    unknown = sorted(set(names) - {b.name for b in BENCHES})
    if unknown:
        known = ", ".join(b.name for b in BENCHES)
        print(f"--only: {', '.join(unknown)} unknown; choose from {known}", file=sys.stderr)
        return 2
    chosen = [b for b in BENCHES if not names or b.name in names]
    scale = QUICK if args.quick else FULL
    if args.update and (args.quick or not names):
        print("--update: needs --only NAME ... and the full scale (not --quick)", file=sys.stderr)
        return 2
    published = args.out or DEFAULT_OUT
    if args.update and not published.exists():
        print(f"--update: {published} does not exist; run every benchmark first", file=sys.stderr)
        return 2
    out: Path = args.out or (DEFAULT_OUT if args.update or not (args.quick or names) else WORK / "benchmarks.md")
    WORK.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="run-", dir=WORK))
    try:
        run = run_benches(chosen, Context(scale, workdir))
    finally:
        if args.keep:
            print(f"kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(update(published.read_text(), run) if args.update else render(run))
    print(f"wrote {out}", file=sys.stderr)
    return 1 if any(o.error for o in run.outcomes) else 0


def run_benches(chosen: Sequence[Bench], ctx: Context) -> Run:
    run = Run(ctx.scale, datetime.now(tz=UTC), os.getloadavg())
    started = time.perf_counter()
    for i, bench in enumerate(chosen, 1):
        ctx.log(f"[{i}/{len(chosen)}] {bench.name}: {bench.title} ({ctx.scale.name})")
        load = os.getloadavg()[0]
        began = time.perf_counter()
        try:
            section, error = bench.run(ctx), ""
        except Exception as exc:  # one broken benchmark must not cost the others their numbers
            ctx.log(traceback.format_exc())
            section, error = Section(reference=""), f"{type(exc).__name__}: {str(exc)[:2000]}"
        seconds = time.perf_counter() - began
        ctx.log(f"  {bench.name} took {seconds:.0f} s")
        run.outcomes.append(Outcome(bench, section, seconds, (load, os.getloadavg()[0]), error))
    run.seconds = time.perf_counter() - started
    run.load_after = os.getloadavg()
    return run


# -- the report -------------------------------------------------------------------------------------


def render(run: Run) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m bench`); do not edit by hand. Every ordertrail number is",
        "measured next to its reference in the same run, on the same input, each side in a fresh",
        "interpreter; the ratio is ordertrail ÷ reference. Targets come from the issues.",
        "",
        "## Machine and run",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in machine_facts(run)]
    lines += [
        "",
        "## Summary",
        "",
        "| benchmark | measure | ordertrail | reference | ratio | target | result |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for o in run.outcomes:
        if o.error:
            lines.append(f"| {o.bench.name} | (failed) | | | | | ERROR |")
        for row in o.section.rows:
            lines.append(f"| {o.bench.name} | {_cells(row)} |")
    for o in run.outcomes:
        lines += ["", f"## {o.bench.name} — {o.bench.title} (issue {o.bench.issue})", ""]
        if o.error:
            lines += [f"**Failed:** `{o.error}`", ""]
        if o.section.reference:
            lines += [f"Reference: {o.section.reference}.", ""]
        if o.section.rows:
            lines += [
                "| measure | ordertrail | reference | ratio | target | result |",
                "|---|---:|---:|---:|---|---|",
            ]
            lines += [f"| {_cells(row)} |" for row in o.section.rows]
            lines.append("")
        lines += [f"- {note}" for note in o.section.notes]
        lines.append(f"- Took {o.seconds:.0f} s; 1-minute load average {o.load[0]:.2f} before, {o.load[1]:.2f} after.")
    lines.append("")
    return "\n".join(lines)


def update(published: str, run: Run) -> str:
    """``published`` (a report of ``render``) with the summary rows and sections of ``run``'s
    benchmarks replaced by ``run``'s, and a header line saying what was re-measured when."""
    fresh = render(run).split("\n")
    names = [o.bench.name for o in run.outcomes]
    order = {b.name: i for i, b in enumerate(BENCHES)}

    def ours(line: str) -> bool:
        return any(line.startswith(f"| {n} | ") for n in names)

    def rank(line: str) -> int:
        return order.get(line.split(" | ", 1)[0].removeprefix("| "), len(order))

    lines = published.split("\n")
    top, bottom = _summary_rows(lines)
    fresh_top, fresh_bottom = _summary_rows(fresh)
    # The summary's rows (only they: a machine fact may share a benchmark's name) in the registry's order.
    rows = [x for x in lines[top:bottom] if not ours(x)] + [x for x in fresh[fresh_top:fresh_bottom] if ours(x)]
    lines[top:bottom] = sorted(rows, key=rank)
    # An older re-measure line whose benchmarks are all measured again now is superseded.
    lines = [x for x in lines if not (x.startswith("| re-measured | ") and _stamped(x) <= set(names))]
    for name in names:
        lines = _replace_section(lines, name, _section(fresh, name))
    stamp = (
        f"| re-measured | {', '.join(names)} on {run.started:%Y-%m-%d %H:%M} UTC at {_commit()}, "
        f"{run.seconds:.0f} s, load {_load(run.load_before)} → {_load(run.load_after)}, tracer hot path "
        f"{_hot_path().split(':', 1)[0]} (`--update`: the other sections are from the run above) |"
    )
    end = lines.index("## Summary") - 1
    while end > 0 and not lines[end - 1].startswith("| "):
        end -= 1
    lines.insert(end, stamp)
    return "\n".join(lines)


def _summary_rows(lines: list[str]) -> tuple[int, int]:
    """[start, end) of the summary table's rows (after its header and rule)."""
    start = lines.index("## Summary") + 4
    end = start
    while end < len(lines) and lines[end].startswith("| "):
        end += 1
    return start, end


def _stamped(line: str) -> set[str]:
    return set(line.removeprefix("| re-measured | ").split(" on ", 1)[0].split(", "))


def _section(lines: list[str], name: str) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith(f"## {name} — "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    block = lines[start:end]
    while block and not block[-1]:
        block.pop()
    return block


def _replace_section(lines: list[str], name: str, block: list[str]) -> list[str]:
    try:
        old = _section(lines, name)
    except StopIteration:
        return [*lines[: len(lines) - (not lines[-1])], "", *block, ""]
    start = lines.index(old[0])
    return lines[:start] + block + lines[start + len(old) :]


def _cells(row: Row) -> str:
    value = "—" if row.value is None else _number(row.value, row.unit)
    reference = "" if row.reference is None else _number(row.reference, row.unit)
    ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
    target = "" if row.target is None else row.target.text(row.unit)
    result = row.result
    if row.value is None and row.why:
        result = f"{result} ({row.why})"
    elif result:
        result = f"**{result}**"
    return f"{row.what} | {value} | {reference} | {ratio} | {target} | {result}"


def _number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f} {unit}"


def machine_facts(run: Run) -> list[tuple[str, str]]:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return [
        ("date", f"{run.started:%Y-%m-%d %H:%M} UTC"),
        ("code", _commit()),
        ("CPU", f"{_cpu_model()}, {cores} cores ({usable} usable by this process)"),
        ("memory", _memory()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("tracer hot path", _hot_path()),
        ("packages", ", ".join(f"{p} {_version(p)}" for p in ("chdb", "chdb-core", "clickhouse-connect", "msgspec"))),
        ("scale", f"{run.scale.name}: {_scale(run.scale)}"),
        ("duration", f"{run.seconds:.0f} s"),
        (
            "load average (1/5/15 min)",
            f"{_load(run.load_before)} at the start, {_load(run.load_after)} at the end "
            "(the machine is shared: other work running shows here)",
        ),
    ]


def _hot_path() -> str:
    """Compiled with mypyc or pure Python, and why (docs/performance.md); the children inherit it."""
    from tracer import native

    return native.status()


def _scale(s: Scale) -> str:
    return (
        f"throughput ≈{s.throughput_events:,} events (best of {s.repeats}), memory {s.memory_orders:,} orders, "
        f"lookup {s.lookup_orders:,} orders / {s.lookups:,} lookups, store batches of {s.batch:,} events"
    )


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown (not a git checkout)"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "tracer", "ordertrail", "bench")
    return f"{head}" + (" with uncommitted changes to tracer/ordertrail/bench" if changed else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run ordertrail's benchmarks next to their references and write the report.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development (a minute or two)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these benchmarks (repeatable or comma-separated): {', '.join(b.name for b in BENCHES)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write the report (default: {DEFAULT_OUT.relative_to(ROOT)} for a full run of everything, "
        f"else {(WORK / 'benchmarks.md').relative_to(ROOT)} so partial numbers never replace the published ones)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help=f"with --only at full scale: replace those benchmarks' rows and sections in "
        f"{DEFAULT_OUT.relative_to(ROOT)} (or --out), keeping the others",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (inputs, databases)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
