"""The benchmark suite: ``python -m bench`` (``make bench``) measures and writes docs/benchmarks.md.

The rule of the project: a performance target is shown here, never in a timed unit test. Every
number is measured next to its reference in the same run, on the same input, so the ratio means
something on whatever machine ran it; the report states the machine and the load around the run.

This module is the vocabulary the benchmark modules share: the sizes of a run (``Scale``), a
measured row with its reference and target (``Row``, ``Target``), a benchmark's outcome
(``Section``), what a benchmark gets to work with (``Context``), and ``run_child``: measurements
run in fresh interpreters, so one side never pays for the other's heap, and because chDB allows
one embedded database path per process.

Nothing here imports chDB or the store; the modules that measure them do.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import workload

ROOT: Final = Path(__file__).resolve().parent.parent
JOURNEYS: Final = ROOT / "examples" / "journeys.yaml"


@dataclass(frozen=True, slots=True)
class Scale:
    """How big a run is. ``repeats``: runs of each side of a throughput pair, best kept."""

    name: str
    throughput_events: int
    repeats: int
    memory_orders: int
    lookup_orders: int
    lookups: int
    batch: int = 20_000  # events per store write, as ordertrail backtest writes
    sdk_calls: int = 100_000  # timed track() calls (bench.live)
    delay_orders: int = 200  # orders per phase whose deadline passes (bench.live)


TOY: Final = Scale(
    "toy",
    2_000,
    repeats=1,
    memory_orders=2_000,
    lookup_orders=500,
    lookups=20,
    batch=500,
    sdk_calls=2_000,
    delay_orders=10,
)
QUICK: Final = Scale("quick", 60_000, repeats=1, memory_orders=100_000, lookup_orders=20_000, lookups=300)
# Full: ≥ 1M events of throughput, 1M open orders, ≥ 5M events (≥ 1M orders) behind the lookups.
FULL: Final = Scale(
    "full",
    1_200_000,
    repeats=2,
    memory_orders=1_000_000,
    lookup_orders=1_020_000,
    lookups=1000,
    sdk_calls=300_000,
    delay_orders=1_000,
)


@dataclass(frozen=True, slots=True)
class Target:
    """``on`` is ``"ratio"`` (ordertrail / reference) or ``"value"``; ``op`` is ``">="`` or ``"<="``."""

    on: str
    op: str
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def text(self, unit: str) -> str:
        if self.on == "ratio":
            return f"ratio {self.op} {self.bound:g}"
        return f"{self.op} {self.bound:g} {unit}"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured number. ``value`` is None when it could not be measured (``why`` says why)."""

    what: str
    value: float | None
    unit: str
    reference: float | None = None
    target: Target | None = None
    why: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.reference:
            return None
        return self.value / self.reference

    @property
    def result(self) -> str:
        """PASS, FAIL, NOT RUN, or empty when the row has no target."""
        if self.target is None:
            return ""
        measured = self.ratio if self.target.on == "ratio" else self.value
        if measured is None:
            return "NOT RUN"
        return "PASS" if self.target.met(measured) else "FAIL"


@dataclass(slots=True)
class Section:
    """The outcome of one benchmark: what its reference is, its rows, and notes on the run."""

    reference: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Context:
    """What a benchmark works with: the scale, a scratch directory, the journeys file, a log."""

    scale: Scale
    workdir: Path
    journeys: Path = JOURNEYS
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    memo: dict[str, Any] = field(default_factory=dict)  # results later benchmarks of the run reuse
    _inputs: dict[int, tuple[Path, workload.Summary]] = field(default_factory=dict)

    def workload(self, orders: int) -> tuple[Path, workload.Summary]:
        """An NDJSON file of ``orders`` orders (generated once per run and size)."""
        if orders not in self._inputs:
            path = self.workdir / f"workload-{orders}.ndjson"
            started = time.perf_counter()
            summary = workload.write(path, workload.Spec(orders))
            took = time.perf_counter() - started
            self.log(f"  generated {summary.events:,} events of {orders:,} orders in {took:.1f}s")
            self._inputs[orders] = (path, summary)
        return self._inputs[orders]

    def scratch(self, name: str) -> Path:
        """A fresh directory inside the run's work directory."""
        path = self.workdir / name
        n = 1
        while path.exists():
            n += 1
            path = self.workdir / f"{name}-{n}"
        path.mkdir(parents=True)
        return path


class ChildError(RuntimeError):
    """A measuring subprocess failed; the message carries its stderr."""


def run_child(module: str, *args: str, timeout_s: float = 3600) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh interpreter; it prints one JSON object last."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH", ""))))
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise ChildError(f"python -m {module} {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    out = done.stdout.strip().splitlines()
    if not out:
        raise ChildError(f"python -m {module} {' '.join(args)} printed nothing:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out[-1])
    return result


def streaming_gc() -> dict[str, Any]:
    """Set the garbage collector as ordertrail's streaming processes set it (``backtest``, ``run``,
    ``tracer``: ``tracer.processor.tune_gc``), in a child of either side of a comparison: the
    ratio then compares the loops, not a runtime setting either could use. Returns the setting,
    for the report."""
    from tracer.processor import tune_gc

    tune_gc()
    return {"gc_thresholds": list(gc.get_threshold())}


def report(result: dict[str, Any]) -> None:
    """What a measuring child ends with: its result as one JSON line on stdout."""
    print(json.dumps(result), flush=True)


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def rss_growth(before: int, orders: int) -> dict[str, float]:
    """RSS growth since ``before`` per order (after a full collection), and how long a full
    collection of what is now held takes."""
    gc.collect()
    after = rss_bytes()
    started = time.perf_counter()
    gc.collect()
    return {
        "rss_before": before,
        "rss_after": after,
        "bytes_per_order": (after - before) / orders,
        "gc_full_ms": (time.perf_counter() - started) * 1000,
    }


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]
