"""Benchmarks of the live pipeline (issue 3): ``ordertrail run`` as a subprocess on a free port,
pinned to one core, driven over HTTP from measuring children on the other cores.

* ``ingest``: events/s of ``POST /v1/events`` in 1000-event NDJSON batches from a few keep-alive
  connections with pre-encoded bodies — the ingest path alone (the tracer thread stopped: HTTP,
  validation, durable bus append) and ``ordertrail run`` itself (the tracer consuming on the same
  core) — next to a bare Starlette/uvicorn endpoint on the same server stack that reads each body
  and splits its lines, without decoding or durability.
* ``e2e``: the ``ordertrail run`` pass of ``ingest`` timed from the first POST until
  ``/metrics`` shows every event processed by the tracer and stored, next to the reference loop
  of issue 2 with its chDB insert (``bench.reference``: no HTTP, no bus) on the same input size.
* ``delay``: orders whose next hop never comes (a 2 s step), posted with event time = now; a client
  polls ``GET /v1/findings`` every 20 ms and notes when each finding first shows, minus its
  ``due_at`` — idle and under background traffic. Reference: how long an event takes to be
  visible in ``GET /v1/orders/{id}``, measured the same way.
* ``sdk``: ``collectors.track()`` timed on the caller's thread (``perf_counter_ns`` around each
  call) against a live server, at a steady rate so the sender keeps up, next to a plain function
  doing one ``deque.append``, in alternating blocks of the same loop.
* ``lookup-api``: ``GET /v1/orders/{id}`` at ≥ 1M orders (full run): the store is loaded first
  (``Tracer`` + ``Store.write``, event times ending a day ago, a tail of stalled orders), closed,
  then served; random orders, orders with open findings and unknown ids, each lookup followed
  by ``GET /healthz`` on the same server as the reference.

Every measurement runs in a fresh interpreter (``python -m bench.live refserver|serve|post|delay|
sdk|load|lookups``); the benchmark functions here start the servers and the children.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from bench import ROOT, Context, Row, Section, Target, percentile, report, run_child, workload
from bench.reference import read_lines
from bench.store import _latency as latency

INGEST_TARGET: Final = Target("value", ">=", 40_000)
DELAY_TARGET: Final = Target("value", "<=", 1_000)
TRACK_TARGET: Final = Target("value", "<=", 10_000)
LOOKUP_TARGET: Final = Target("value", "<=", 20)
BATCH: Final = 1000  # events per POST, as the issue asks
REFERENCE_EVENTS: Final = 1_000_000  # at least this many events posted to the reference server
CLIENT_THREADS: Final = 4
WITHIN_MS: Final = 2000  # the step of the delay journey
POLL_S: Final = 0.02
BACKGROUND_RATE: Final = 2000  # events/s of completing orders behind the delay measurement
TRACK_RATE: Final = 10_000  # timed calls/s (SDK and reference together)
DELAY_JOURNEY: Final = "bench_delay"
_OPENED, _CLOSED = "delay.opened", "delay.closed"
_WARMUP_LOOKUPS: Final = 20
_JSON = msgspec.json.Encoder()


# -- benchmarks (run in the parent) ---------------------------------------------------------------


def ingest(ctx: Context) -> Section:
    runs = _ingest_runs(ctx)
    ref, alone, full = runs["reference"], runs["ingest"], runs["run"]
    n = alone["accepted"]
    section = Section(
        reference="a bare Starlette app on uvicorn (the same server stack and settings) whose POST /v1/events "
        "reads the body and splits its lines, no decoding, validation or durability; same bodies, same client"
    )
    section.rows.append(
        Row(
            f"ingest path alone (tracer stopped), {n:,} events",
            alone["events_per_s"],
            "events/s",
            ref["events_per_s"],
            INGEST_TARGET,
        )
    )
    section.rows.append(
        Row(
            "ingest path alone, events per second of server CPU",
            n / alone["server_cpu_s"],
            "events/s",
            ref["accepted"] / ref["server_cpu_s"],
        )
    )
    section.rows.append(
        Row(f"ordertrail run, tracer consuming on the same core, {n:,} events", full["events_per_s"], "events/s")
    )
    section.notes.append(
        f"{n // BATCH:,} POSTs of {BATCH:,} NDJSON lines ({alone['bytes'] / n:.0f} B/event), bodies encoded before "
        f"the clock starts, {CLIENT_THREADS} keep-alive connections (http.client) in a client process "
        f"{_where(runs['client_cpus'])}; each server process pinned to {_where(runs['server_cpus'])}. "
        "'Ingest path alone' is ordertrail run's own app and pipeline with the tracer thread stopped: "
        "HTTP, validation of every event, and the bus append fsync'd before the 202. Per second of server CPU: "
        "events over the user + system CPU time of the server process (/proc) while the client posted, what one "
        "core would take if nothing else ran on it (the machine is shared; fsync waits cost no CPU)."
    )
    section.notes += run_notes(ctx, runs, "events", "body", "POST", " (it also gives e2e, the longest run)")
    return section


def run_notes(ctx: Context, runs: dict[str, Any], unit: str, body: str, request: str, about_run: str = "") -> list[str]:
    """The notes on the ``post_all`` runs of the reference, the ingest path alone and ordertrail run:
    how many, how long, the CPU of both sides, request latency; how the best run was chosen."""
    notes = []
    for name, label in (("reference", "reference"), ("ingest", "ingest path alone"), ("run", "ordertrail run")):
        r = runs[name]
        notes.append(
            f"{label}: {r['accepted']:,} {unit}"
            + (f" (every {body} {r['rounds']} times)" if r["rounds"] > 1 else "")
            + f" in {r['seconds']:.2f} s, server CPU {r['server_cpu_s'] / r['seconds']:.0%} of one core, "
            f"client CPU {r['client_cpu_s'] / r['seconds']:.0%}; {request} latency p50 {r['request']['p50']:.1f} "
            f"ms, p99 {r['request']['p99']:.1f} ms."
        )
    notes.append(
        f"Best of {ctx.scale.repeats} run(s) of the reference and of the ingest path alone, alternating, one of "
        f"ordertrail run{about_run}; each server fresh, with a new data directory."
    )
    return notes


def e2e(ctx: Context) -> Section:
    runs = _ingest_runs(ctx)
    full = runs["run"]
    n = full["accepted"]
    ref_eps, ref_note = _reference_loop(ctx, runs["input"])
    section = Section(
        reference="the reference loop of issue 2 with its chDB insert (bench/reference.py: msgspec decode, dict "
        "state, column-oriented insert) on the same events, offline: no HTTP, no bus, no durability wait"
    )
    section.rows.append(
        Row(
            f"first POST → all {n:,} events processed and stored (ordertrail run, one core)",
            full["e2e_events_per_s"],
            "events/s",
            ref_eps,
        )
    )
    section.rows.append(
        Row("the same, events per second of server CPU", n / full["e2e_server_cpu_s"], "events/s", ref_eps)
    )
    section.notes.append(
        f"Ingest took {full['seconds']:.1f} s; the tracer had processed {full['processed_at_ingest_end']:,.0f} "
        f"events by then and the last one {full['e2e_seconds'] - full['seconds']:.1f} s later "
        f"({full['e2e_seconds']:.1f} s in all; /metrics polled every {POLL_S * 1000:.0f} ms); the server used "
        f"{full['e2e_server_cpu_s'] / full['e2e_seconds']:.0%} of its core over that time. The bus, the tracer, "
        "chDB and the HTTP server share one core; event times start ten minutes ahead of the wall clock, so "
        "deadlines fire in event time as in a fast replay, never because the run is behind."
    )
    section.notes.append(ref_note)
    return section


def delay(ctx: Context) -> Section:
    n = ctx.scale.delay_orders
    journeys = _delay_journeys(ctx)
    section = Section(
        reference="the time from POSTing an event until GET /v1/orders/{id} shows it, measured the same way "
        f"(polled every {POLL_S * 1000:.0f} ms): the pipeline's own latency, which any finding also pays"
    )
    data = ctx.scratch("live-delay")
    with _server(ctx, "delay", _run_argv(journeys, data)) as server:
        phases = {}
        for tag, rate in (("idle", 0), ("busy", BACKGROUND_RATE)):
            r = phases[tag] = _child(
                "delay", *_flags(url=server.url, orders=n, background=rate, probes=max(2, n // 10), tag=tag)
            )
            ctx.log(
                f"  {tag}: finding seen p50 {r['seen']['p50']:.0f} ms, p99 {r['seen']['p99']:.0f} ms after due; "
                f"{r['found']}/{n} found"
            )
    for tag, label in (("idle", "idle"), ("busy", f"under {BACKGROUND_RATE:,} events/s")):
        r = phases[tag]
        for p, target in (("p50", None), ("p99", DELAY_TARGET)):
            section.rows.append(
                Row(
                    f"finding seen by a client after its deadline, {p}, {label}",
                    r["seen"][p],
                    "ms",
                    r["visible"][p],
                    target,
                )
            )
        section.rows.append(Row(f"the finding's detected_at − due_at, p99, {label}", r["own"]["p99"], "ms"))
    for tag in ("idle", "busy"):
        r = phases[tag]
        section.notes.append(
            f"{tag}: {r['found']:,} of {n:,} findings seen ({r['due_mismatch']} with another due_at than posted); "
            f"seen after due max {r['seen']['max']:.0f} ms; detected_at − due_at p50 {r['own']['p50']:.0f} ms, "
            f"max {r['own']['max']:.0f} ms; event visible in the lookup p50 {r['visible']['p50']:.0f} ms, p99 "
            f"{r['visible']['p99']:.0f} ms over {r['probes']} probes; background {r['background_per_s']:,.0f} events/s."
        )
    section.notes.append(
        f"One ordertrail run (ORDERTRAIL_WARMUP=0s) with examples/journeys.yaml plus a journey `{DELAY_JOURNEY}` whose "
        f"step is due {WITHIN_MS / 1000:g} s after its start. {n:,} orders per phase, one POST each, spread over "
        f"{_spread_s(n):g} s, event time = the client's wall clock at sending; the client polls GET /v1/findings?"
        f"kind=missing&journey={DELAY_JOURNEY} every {POLL_S * 1000:.0f} ms and takes the time it received the "
        "first answer holding a finding (an upper bound). The clock rule allows 250 ms for events in flight "
        "before wall time moves a caught-up partition's clock, so that much delay is by design. Background: "
        "orders of web_order posted every 100 ms with all five hops (they complete, no findings)."
    )
    return section


def sdk(ctx: Context) -> Section:
    calls = ctx.scale.sdk_calls
    data = ctx.scratch("live-sdk")
    with _server(ctx, "sdk", _run_argv(ctx.journeys, data)) as server:
        r = _child("sdk", *_flags(url=server.url, calls=calls, rate=TRACK_RATE))
        received = _wait_metric(server.url, 'ordertrail_ingest_events_total{result="accepted"}', r["stats"]["sent"])
    ours, ref = r["track"], r["reference"]
    ctx.log(f"  track() p50 {ours['p50']:.0f} ns, p99 {ours['p99']:.0f} ns; reference p99 {ref['p99']:.0f} ns")
    section = Section(
        reference="a function of the same call shape whose body is one deque.append of a tuple, timed the same "
        "way in the same loop"
    )
    section.rows.append(Row(f"collectors.track() p50, {calls:,} calls", ours["p50"], "ns", ref["p50"]))
    section.rows.append(Row(f"collectors.track() p99, {calls:,} calls", ours["p99"], "ns", ref["p99"], TRACK_TARGET))
    lone, lone_ref = r["track_isolated"], r["reference_isolated"]
    n = r["isolated"]
    section.rows.append(
        Row(f"track() p99, {n:,} calls each after 1 ms of other work", lone["p99"], "ns", lone_ref["p99"])
    )
    s = r["stats"]
    section.notes.append(
        f"track(order_id, hop, psp='adyen') through the default client (collectors.configure), each timing "
        "perf_counter_ns() before and after one call, in a client process "
        f"{_where(r['cpus'])}. Main rows: blocks of 1,000 calls back to back, track() and reference blocks "
        f"alternating, a sleep after each pair keeping {r['rate']:,.0f} calls/s on average (the sender thread "
        f"sends while the blocks run and during the sleeps). track(): p99.9 {ours['p999']:.0f} ns, max "
        f"{ours['max'] / 1000:.0f} µs, mean {ours['mean']:.0f} ns; reference p99.9 {ref['p999']:.0f} ns, max "
        f"{ref['max'] / 1000:.0f} µs."
    )
    section.notes.append(
        f"Isolated calls (the thread spins 1 ms before each call, alternating track() and the reference): p50 "
        f"{lone['p50']:.0f} ns vs {lone_ref['p50']:.0f} ns, p99 {lone['p99']:.0f} ns vs {lone_ref['p99']:.0f} ns. "
        "On this machine a call after a pause costs several times a call in a burst, the plain deque.append "
        "included: caches and the CPU go cold; the ratio is the comparable part."
    )
    section.notes.append(
        f"The sender thread delivered {s['sent']:,} events to a live ordertrail run (pinned to "
        f"{_where(_cpus()[0])}), which counted {received:,.0f} accepted; dropped: buffer full {s['dropped_full']}, "
        f"failed {s['dropped_failed']}, invalid {s['invalid']}; retries {s['retries']}."
    )
    return section


def lookup_api(ctx: Context) -> Section:
    scale = ctx.scale
    section = Section(
        reference="GET /healthz on the same server, right after each lookup (HTTP, routing and the JSON answer, "
        "no store)"
    )
    data = ctx.scratch("live-lookup")
    ids = data / "ids.json"
    loaded = run_child(
        "bench.live",
        "load",
        *_flags(orders=scale.lookup_orders, lookups=scale.lookups, journeys=ctx.journeys, store=data / "store"),
        *_flags(batch=scale.batch, ids=ids),
    )
    ctx.log(f"  loaded {loaded['events']:,} events of {loaded['orders']:,} orders in {loaded['seconds']:.0f} s")
    started = time.perf_counter()
    with _server(ctx, "lookup", _run_argv(ctx.journeys, data)) as server:
        ready_s = time.perf_counter() - started
        r = _child("lookups", *_flags(url=server.url, ids=ids))
    at = f"{loaded['orders']:,} orders, {loaded['events']:,} events"
    ours, ref = r["all"], r["healthz"]
    ctx.log(f"  GET /v1/orders p50 {ours['p50']:.2f} ms, p99 {ours['p99']:.2f} ms at {at}")
    section.rows.append(Row(f"GET /v1/orders/{{id}} p50 at {at}", ours["p50"], "ms", ref["p50"]))
    section.rows.append(Row(f"GET /v1/orders/{{id}} p99 at {at}", ours["p99"], "ms", ref["p99"], LOOKUP_TARGET))
    cats = r["by_kind"]
    section.notes.append(
        f"{r['lookups']:,} lookups after {_WARMUP_LOOKUPS} untimed ones, one at a time over a keep-alive connection "
        f"from {_where(r['cpus'])}, server pinned to {_where(_cpus()[0])}: "
        + "; ".join(
            f"{kind} ({c['n']}): p50 {c['p50']:.2f} ms, p99 {c['p99']:.2f} ms, max {c['max']:.2f} ms"
            for kind, c in sorted(cats.items())
        )
        + f". Answers: {', '.join(f'{k} {v}' for k, v in sorted(r['statuses'].items()))}; "
        f"{r['unexpected']} unexpected HTTP statuses. /healthz max {ref['max']:.2f} ms."
    )
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(loaded["open_kinds"].items()))
    section.notes.append(
        f"Loaded before the server started (Tracer + Store.write in batches of {scale.batch:,}, "
        f"{loaded['seconds']:.0f} s): bench/workload.py orders whose event times end a day ago, the clock then "
        f"moved to the present so every deadline fired, plus {loaded['tail']} recent orders stuck before "
        f"inventory.reserved (stalled, missing later). Open findings: {kinds} (first {loaded['open_sampled']:,} "
        f"read). The server restored its open orders and was ready in {ready_s:.0f} s. Order ids: 70 % random "
        "among all, 20 % among orders with open findings (their explanation counts the orders waiting at the "
        "same step, Store.waiting_at, cached 5 s), 10 % unknown."
    )
    return section


# -- servers and children -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Live:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def _server(ctx: Context, name: str, argv: Callable[[int], list[str]], ready_s: float = 1800) -> Iterator[_Live]:
    """A server subprocess (``python -m argv(port)``) pinned to the server core, ready, stopped after."""
    port = _free_port()
    log = ctx.workdir / f"{name}-{port}.log"
    env = dict(os.environ, ORDERTRAIL_WARMUP="0s")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH", ""))))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *argv(port)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env
        )
    live = _Live(proc, f"http://127.0.0.1:{port}", log)
    try:
        os.sched_setaffinity(proc.pid, _cpus()[0])
        deadline = time.monotonic() + ready_s
        while _get(live.url + "/readyz") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} server not ready after {ready_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield live
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run_argv(journeys: Path, data: Path) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return ["ordertrail", "run", "--journeys", str(journeys), "--data", str(data), "--listen", f"127.0.0.1:{port}"]

    return argv


def _flags(**values: object) -> list[str]:
    """Command-line flags: ``_flags(server_pid=1)`` is ``["--server-pid", "1"]``."""
    return [x for name, value in values.items() for x in (f"--{name.replace('_', '-')}", str(value))]


def _child(what: str, *args: str) -> dict[str, Any]:
    """A measuring child on the client cores."""
    return run_child("bench.live", what, "--cpus", ",".join(map(str, sorted(_cpus()[1]))), *args)


def _ingest_runs(ctx: Context) -> dict[str, Any]:
    """Best of ``repeats`` POST runs against each server (memoized: ``ingest`` and ``e2e`` share them)."""
    if "live:ingest" in ctx.memo:
        found: dict[str, Any] = ctx.memo["live:ingest"]
        return found
    path = _live_input(ctx)
    servers: dict[str, Callable[[Path], Callable[[int], list[str]]]] = {
        "reference": lambda data: lambda port: ["bench.live", "refserver", "--port", str(port)],
        "ingest": lambda data: (
            lambda port: [
                *("bench.live", "serve", "--journeys", str(ctx.journeys), "--data", str(data), "--port", str(port))
            ]
        ),
        "run": lambda data: _run_argv(ctx.journeys, data),
    }
    # The reference is fast: it gets every body several times over, so that its run lasts long enough to time.
    rounds = {"reference": max(1, -(-REFERENCE_EVENTS // ctx.scale.throughput_events)), "ingest": 1, "run": 1}
    best: dict[str, Any] = {"input": path, "server_cpus": _cpus()[0], "client_cpus": _cpus()[1]}
    for repeat in range(ctx.scale.repeats):
        for name, argv in servers.items():
            if name == "run" and repeat:
                continue  # the longest run, and e2e is informational: once
            data = ctx.scratch(f"live-{name}")
            with _server(ctx, name, argv(data)) as server:
                args = _flags(url=server.url, input=path, server_pid=server.proc.pid, rounds=rounds[name])
                result = _child("post", *args, *(["--wait-processed"] if name == "run" else []))
            shutil.rmtree(data, ignore_errors=True)
            if result["errors"]:
                raise RuntimeError(f"{name}: POST failed: {result['errors'][:3]}")
            ctx.log(f"  {name:10} {result['events_per_s']:>10,.0f} events/s ({result['seconds']:.1f} s)")
            if name not in best or result["events_per_s"] > best[name]["events_per_s"]:
                best[name] = result
    ctx.memo["live:ingest"] = best
    return best


def _live_input(ctx: Context) -> Path:
    """The throughput workload with event times starting ten minutes from now: the live runs see event
    time ahead of the wall clock, as a fast replay, so no deadline fires because a run is slow."""
    orders = workload.orders_for_events(ctx.scale.throughput_events)
    path = ctx.workdir / f"live-{orders}.ndjson"
    if not path.exists():
        start = time.time_ns() // 1_000_000 + 600_000
        summary = workload.write(path, workload.Spec(orders, start_ms=start))
        ctx.log(f"  generated {summary.events:,} live events of {orders:,} orders")
    return path


def _reference_loop(ctx: Context, path: Path) -> tuple[float, str]:
    """The reference loop's events/s with its store: from the throughput benchmark of this run on an
    input of the same size when it ran, else measured here on the live input."""
    for key, best in ctx.memo.items():
        if key.startswith("throughput:") and key.endswith(":True") and "reference+store" in best:
            ours = best["engine+store"]["events_per_s"]
            eps = float(best["reference+store"]["events_per_s"])
            return eps, (
                f"Reference from the throughput benchmark of this run (the same generator and size, event times "
                f"fixed); offline ordertrail there (decode + engine + Store.write) did {ours:,.0f} events/s."
            )
    db = ctx.scratch("live-ref-chdb")
    result = run_child("bench.reference", "throughput", *_flags(input=path, db=db, batch=ctx.scale.batch))
    shutil.rmtree(db, ignore_errors=True)
    return float(result["events_per_s"]), (
        f"Reference measured here on the same file (one run, batches of {ctx.scale.batch:,}, no pinning)."
    )


def _delay_journeys(ctx: Context) -> Path:
    doc = yaml.safe_load(ctx.journeys.read_text())
    doc["journeys"][DELAY_JOURNEY] = {
        "description": "bench: an order whose closing hop never comes",
        "start": _OPENED,
        "steps": {_CLOSED: {"after": _OPENED, "within": f"{WITHIN_MS}ms"}},
        "complete": [_CLOSED],
    }
    path = ctx.workdir / "journeys-delay.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _wait_metric(url: str, name: str, at_least: float, timeout_s: float = 60) -> float:
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
            value = _metric(r.read(), name)
        if value >= at_least:
            break
        time.sleep(0.1)
    return value


def _where(cpus: set[int] | list[int]) -> str:
    cpus = sorted(cpus)
    return f"core {cpus[0]}" if len(cpus) == 1 else f"cores {','.join(map(str, cpus))}"


def _cpus() -> tuple[set[int], set[int]]:
    """(server cores, client cores): the server alone on the first usable core, clients on the rest."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return set(usable), set(usable)
    return {usable[0]}, set(usable[1:])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def _spread_s(orders: int) -> float:
    return max(1.0, orders / 50)  # 50 orders/s


def _metric(text: bytes, name: str) -> float:
    prefix = name.encode() + b" "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


# -- measurements (run in fresh interpreters) -----------------------------------------------------


def serve_reference(port: int) -> None:
    """The reference server: read the body, split the lines, answer like ordertrail."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def events(request: Request) -> Response:
        body = await request.body()
        n = sum(1 for line in body.split(b"\n") if line)
        return Response(b'{"accepted":%d,"rejected":[]}' % n, status_code=202, media_type="application/json")

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    app = Starlette(routes=[Route("/v1/events", events, methods=["POST"]), Route("/readyz", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_ingest_only(journeys: Path, data: Path, port: int) -> None:
    """ordertrail run's own wiring (``running``) with the tracer thread stopped: only the ingest path works."""
    from ordertrail.config import RunConfig
    from ordertrail.run import running

    with running(RunConfig(journeys=journeys, port=port, data_dir=data, warmup_ms=0)) as (pipeline, server):
        pipeline.stop()
        server.run()


class _Conn:
    """One keep-alive HTTP connection."""

    def __init__(self, url: str, timeout_s: float = 120) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        headers = {"content-type": "application/x-ndjson"} if body is not None else {}
        self._conn.request(method, path, body, headers)
        r = self._conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self._conn.close()


def post_all(
    url: str,
    path: str,
    bodies: list[bytes],
    *,
    threads: int,
    server_pid: int,
    content_type: str,
    ok: int,
    count: Callable[[int, bytes], tuple[int, int]],
) -> dict[str, Any]:
    """POST every body from ``threads`` keep-alive connections at once, timing each request and the
    whole, with the client's and the server's CPU time. ``count(i, answer)`` gives (accepted,
    rejected) for body ``i`` answered with status ``ok``; any other status is an error."""
    accepted = [0] * threads
    rejected = [0] * threads
    took: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)
    host, _, port = url.removeprefix("http://").partition(":")

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        barrier.wait()
        for i in range(k, len(bodies), threads):
            t0 = time.perf_counter()
            conn.request("POST", path, bodies[i], {"content-type": content_type})
            r = conn.getresponse()
            data = r.read()
            took.append((time.perf_counter() - t0) * 1000)
            if r.status != ok:
                errors.append(f"HTTP {r.status}: {data[:300]!r}")
                continue
            good, bad = count(i, data)
            accepted[k] += good
            rejected[k] += bad
        conn.close()

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    cpu0, server0 = _cpu_self(), _cpu_of(server_pid)
    barrier.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - t0
    return {
        "bytes": sum(len(b) for b in bodies),
        "accepted": sum(accepted),
        "rejected": sum(rejected),
        "seconds": seconds,
        "client_cpu_s": _cpu_self() - cpu0,
        "server_cpu_s": _cpu_of(server_pid) - server0,
        "request": latency(took),
        "errors": errors[:10],
        "started": t0,
        "server_cpu_at_start": server0,
    }


def measure_post(
    url: str, path: Path, threads: int, server_pid: int, rounds: int, wait_processed: bool
) -> dict[str, Any]:
    lines = read_lines(path)
    bodies = [b"\n".join(lines[i : i + BATCH]) + b"\n" for i in range(0, len(lines), BATCH)] * rounds

    def count(i: int, data: bytes) -> tuple[int, int]:
        reply = msgspec.json.decode(data)
        return reply["accepted"], len(reply["rejected"])

    posted = post_all(
        url,
        "/v1/events",
        bodies,
        threads=threads,
        server_pid=server_pid,
        content_type="application/x-ndjson",
        ok=202,
        count=count,
    )
    t0, server0 = posted.pop("started"), posted.pop("server_cpu_at_start")
    total, seconds, errors = posted["accepted"], posted["seconds"], posted["errors"]
    result: dict[str, Any] = {
        "events": len(lines) * rounds,
        "rounds": rounds,
        **posted,
        "events_per_s": total / seconds,
    }
    if wait_processed and not errors:
        conn = _Conn(url)
        name = "ordertrail_events_processed_total"
        result["processed_at_ingest_end"] = _metric(conn.request("GET", "/metrics")[1], name)
        deadline = time.monotonic() + max(300.0, total / 1000)
        while _metric(conn.request("GET", "/metrics")[1], name) < total:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the tracer did not process {total:,} events in time")
            time.sleep(POLL_S)
        result["e2e_seconds"] = time.perf_counter() - t0
        result["e2e_server_cpu_s"] = _cpu_of(server_pid) - server0
        result["e2e_events_per_s"] = total / result["e2e_seconds"]
        conn.close()
    return result


def measure_delay(url: str, orders: int, background: int, probes: int, tag: str) -> dict[str, Any]:
    from tracer.times import parse_ts

    stop = threading.Event()
    background_rate = [0.0]

    def traffic() -> None:  # orders of web_order that complete at once: load without findings
        conn = _Conn(url)
        per = max(1, background // 10 // len(workload.HOPS))
        n = sent = 0
        began = next_at = time.perf_counter()
        while not stop.is_set():
            ts = _wall_ms()
            events = []
            for _ in range(per):
                oid = f"bg-{tag}-{n:08d}"
                n += 1
                events += [
                    {"order_id": oid, "hop": hop, "ts": ts, "journey": workload.JOURNEY} for hop in workload.HOPS
                ]
            conn.request("POST", "/v1/events", b"\n".join(map(_JSON.encode, events)))
            sent += len(events)
            next_at += 0.1
            stop.wait(max(0.0, next_at - time.perf_counter()))
        background_rate[0] = sent / (time.perf_counter() - began)
        conn.close()

    feeder = threading.Thread(target=traffic) if background else None
    if feeder is not None:
        feeder.start()
        time.sleep(1.0)
    conn = _Conn(url)
    visible: list[float] = []
    for k in range(probes):  # how long until an event shows in the lookup
        oid = f"vis-{tag}-{k:06d}"
        events = [
            {"order_id": oid, "hop": hop, "ts": _wall_ms(), "journey": DELAY_JOURNEY} for hop in (_OPENED, _CLOSED)
        ]
        t0 = time.perf_counter()
        conn.request("POST", "/v1/events", b"\n".join(map(_JSON.encode, events)))
        while conn.request("GET", f"/v1/orders/{oid}")[0] != 200:
            time.sleep(POLL_S)
        visible.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)

    expected: dict[str, int] = {}
    spread = _spread_s(orders)

    def post_late() -> None:
        poster = _Conn(url)
        began = time.perf_counter()
        for i in range(orders):
            time.sleep(max(0.0, began + i * spread / orders - time.perf_counter()))
            oid = f"late-{tag}-{i:06d}"
            ts = _wall_ms()
            expected[oid] = ts + WITHIN_MS
            event = {"order_id": oid, "hop": _OPENED, "ts": ts, "journey": DELAY_JOURNEY}
            poster.request("POST", "/v1/events", _JSON.encode(event))
        poster.close()

    poster = threading.Thread(target=post_late)
    poster.start()
    seen: dict[str, tuple[int, int, int]] = {}  # order id -> (seen, detected_at, due_at) in epoch ms
    limit = 200
    give_up = time.monotonic() + spread + WITHIN_MS / 1000 + 60
    while time.monotonic() < give_up and (poster.is_alive() or len(seen) < len(expected)):
        status, data = conn.request(
            "GET", f"/v1/findings?status=all&kind=missing&journey={DELAY_JOURNEY}&limit={limit}"
        )
        now = _wall_ms()
        if status == 200:
            found = msgspec.json.decode(data)["findings"]
            new = 0
            for f in found:
                oid = f["order_id"]
                if oid in expected and oid not in seen:
                    seen[oid] = (now, parse_ts(f["detected_at"]), parse_ts(f["due_at"]))
                    new += 1
            if new == limit:  # more may have been cut off: read them all next time
                limit = 10_000
        time.sleep(POLL_S)
    stop.set()
    poster.join()
    if feeder is not None:
        feeder.join()
    conn.close()
    if not seen:
        raise RuntimeError(f"no finding of the {orders} late orders was seen")
    return {
        "found": len(seen),
        "due_mismatch": sum(1 for oid, (_, _, due) in seen.items() if due != expected[oid]),
        "seen": latency([float(s - due) for s, _, due in seen.values()]),
        "own": latency([float(d - due) for _, d, due in seen.values()]),
        "visible": latency(visible),
        "probes": probes,
        "background_per_s": background_rate[0],
    }


def measure_sdk(url: str, calls: int, rate: float) -> dict[str, Any]:
    import collectors
    from collectors.sdk import SdkConfig

    collectors.configure(SdkConfig.load({}, url=url, service="bench-shop"))
    track = collectors.track
    queue: collections.deque[tuple[str, str, dict[str, object]]] = collections.deque(maxlen=10_000)

    def reference(order_id: str, hop: str, **attrs: object) -> None:
        queue.append((order_id, hop, attrs))

    isolated = min(2000, calls // 20)
    total = calls + isolated + 2000
    ids = [f"sdk-{i // 5:09d}" for i in range(total)]
    hops = [workload.HOPS[i % 5] for i in range(total)]
    for i in range(total - 2000, total):  # untimed: starts the sender thread, warms both paths
        track(ids[i], hops[i], psp="adyen")
        reference(ids[i], hops[i], psp="adyen")
    time.sleep(0.5)
    perf = time.perf_counter_ns
    ours: list[int] = []
    theirs: list[int] = []
    block = 1000
    began = time.perf_counter()
    for start in range(0, calls, block):  # bursts, paced to ``rate`` on average
        for fn, out in ((track, ours), (reference, theirs)):
            for i in range(start, min(calls, start + block)):
                oid, hop = ids[i], hops[i]
                t0 = perf()
                fn(oid, hop, psp="adyen")
                out.append(perf() - t0)
        time.sleep(max(0.0, began + 2 * (start + block) / rate - time.perf_counter()))
    seconds = time.perf_counter() - began
    lone_ours: list[int] = []
    lone_theirs: list[int] = []
    for i in range(calls, calls + isolated):  # one call after a millisecond of other work
        for fn, out in ((track, lone_ours), (reference, lone_theirs)):
            busy = time.perf_counter() + 0.001
            while time.perf_counter() < busy:
                pass
            t0 = perf()
            fn(ids[i], hops[i], psp="adyen")
            out.append(perf() - t0)
    collectors.flush(60)
    stats = collectors.stats()
    collectors.shutdown(10)

    def summary(ns: list[int]) -> dict[str, float]:
        ordered = sorted(float(x) for x in ns)
        return {**latency(ordered), "p999": percentile(ordered, 99.9)}

    return {
        "calls": calls,
        "isolated": isolated,
        "rate": 2 * calls / seconds,
        "track": summary(ours),
        "reference": summary(theirs),
        "track_isolated": summary(lone_ours),
        "reference_isolated": summary(lone_theirs),
        "stats": dataclasses.asdict(stats),
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def load_store(
    orders: int, lookups: int, journeys_path: Path, store_dir: Path, batch: int, ids: Path
) -> dict[str, Any]:
    from tracer.bus import HOPS_PARTITIONS, KeyPartitioner
    from tracer.clickhouse import Store
    from tracer.engine import Tracer
    from tracer.events import decode_line
    from tracer.journeys import load_journeys
    from tracer.model import format_ts

    now = _wall_ms()
    start = now - 26 * 3_600_000 - int(orders / workload.Spec(1).orders_per_s * 1000)
    store = Store.open(f"chdb://{store_dir.resolve()}")
    tracer = Tracer(load_journeys(journeys_path), track_snapshots=True)
    partition = KeyPartitioner(HOPS_PARTITIONS)
    events: list[Any] = []

    def feed(line: bytes) -> None:
        ev = decode_line(line)
        if ev.ts > tracer.now:
            tracer.advance(ev.ts)
        tracer.on_event(ev, partition(ev.order_id))
        events.append(ev)
        if len(events) >= batch:
            flush()

    def flush() -> None:
        store.write(events, tracer.drain_findings(), tracer.drain_snapshots())
        events.clear()

    began = time.perf_counter()
    n = 0
    for line in workload.lines(workload.Spec(orders, start_ms=start)):
        feed(line)
        n += 1
    tracer.advance(now)  # everything due by now has fired
    tail = max(10, lookups // 5)
    for k in range(tail):  # recent orders stuck before inventory.reserved
        oid = f"ord-{workload.FIRST_ORDER + orders + k:09d}"
        t = now - 50_000 + k * 20_000 // tail
        for hop, ts in ((workload.CHECKOUT, t), (workload.PAYMENT, t + 5_000)):
            event = {"order_id": oid, "hop": hop, "ts": format_ts(ts), "journey": workload.JOURNEY}
            feed(_JSON.encode(event))
            n += 1
    tracer.advance(_wall_ms())
    flush()
    seconds = time.perf_counter() - began
    open_findings = store.findings(status="open", limit=10_000)
    store.close()

    rng = random.Random(11)
    total = lookups + _WARMUP_LOOKUPS
    with_findings = sorted({f.order_id for f in open_findings})
    picks = [("unknown", f"ord-{900_000_000 + rng.randrange(99_999_999):09d}") for _ in range(total // 10)]
    if with_findings:
        picks += [("with open findings", rng.choice(with_findings)) for _ in range(total * 2 // 10)]
    picks += [("any", f"ord-{workload.FIRST_ORDER + rng.randrange(orders):09d}") for _ in range(total - len(picks))]
    rng.shuffle(picks)
    ids.write_text(json.dumps(picks))
    return {
        "events": n,
        "orders": orders + tail,
        "tail": tail,
        "seconds": seconds,
        "open_sampled": len(open_findings),
        "open_kinds": dict(collections.Counter(f.kind for f in open_findings)),
    }


def measure_lookups(url: str, ids: Path) -> dict[str, Any]:
    picks: list[list[str]] = json.loads(ids.read_text())
    conn = _Conn(url)
    by_kind: dict[str, list[float]] = collections.defaultdict(list)
    health: list[float] = []
    statuses: collections.Counter[str] = collections.Counter()
    unexpected = 0
    for i, (kind, oid) in enumerate(picks):
        t0 = time.perf_counter()
        status, body = conn.request("GET", f"/v1/orders/{oid}")
        t1 = time.perf_counter()
        conn.request("GET", "/healthz")
        t2 = time.perf_counter()
        if status != (404 if kind == "unknown" else 200):
            unexpected += 1
        if i < _WARMUP_LOOKUPS:
            continue
        by_kind[kind].append((t1 - t0) * 1000)
        health.append((t2 - t1) * 1000)
        statuses[msgspec.json.decode(body).get("status", "unknown") if status == 200 else f"HTTP {status}"] += 1
    conn.close()
    every = [ms for values in by_kind.values() for ms in values]
    return {
        "lookups": len(every),
        "all": latency(every),
        "healthz": latency(health),
        "by_kind": {kind: {**latency(v), "n": len(v)} for kind, v in by_kind.items()},
        "statuses": dict(statuses),
        "unexpected": unexpected,
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.live", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    ref = sub.add_parser("refserver")
    ref.add_argument("--port", type=int, required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--journeys", type=Path, required=True)
    serve.add_argument("--data", type=Path, required=True)
    serve.add_argument("--port", type=int, required=True)
    for name in ("post", "delay", "sdk", "lookups"):
        p = sub.add_parser(name)
        p.add_argument("--cpus", default="", help="pin this process to these cores (comma-separated)")
        p.add_argument("--url", required=True)
    post = sub.choices["post"]
    post.add_argument("--input", type=Path, required=True)
    post.add_argument("--threads", type=int, default=CLIENT_THREADS)
    post.add_argument("--server-pid", type=int, required=True)
    post.add_argument("--rounds", type=int, default=1, help="post every body this many times")
    post.add_argument("--wait-processed", action="store_true")
    dl = sub.choices["delay"]
    dl.add_argument("--orders", type=int, required=True)
    dl.add_argument("--background", type=int, default=0)
    dl.add_argument("--probes", type=int, default=10)
    dl.add_argument("--tag", default="idle")
    sd = sub.choices["sdk"]
    sd.add_argument("--calls", type=int, required=True)
    sd.add_argument("--rate", type=float, default=TRACK_RATE)
    sub.choices["lookups"].add_argument("--ids", type=Path, required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--orders", type=int, required=True)
    ld.add_argument("--lookups", type=int, required=True)
    ld.add_argument("--journeys", type=Path, required=True)
    ld.add_argument("--store", type=Path, required=True)
    ld.add_argument("--batch", type=int, default=20_000)
    ld.add_argument("--ids", type=Path, required=True)
    args = parser.parse_args()
    if getattr(args, "cpus", ""):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.what == "refserver":
        serve_reference(args.port)
    elif args.what == "serve":
        serve_ingest_only(args.journeys, args.data, args.port)
    elif args.what == "post":
        report(measure_post(args.url, args.input, args.threads, args.server_pid, args.rounds, args.wait_processed))
    elif args.what == "delay":
        report(measure_delay(args.url, args.orders, args.background, args.probes, args.tag))
    elif args.what == "sdk":
        report(measure_sdk(args.url, args.calls, args.rate))
    elif args.what == "lookups":
        report(measure_lookups(args.url, args.ids))
    else:
        report(load_store(args.orders, args.lookups, args.journeys, args.store, args.batch, args.ids))


if __name__ == "__main__":
    _main()
