"""OTLP ingest benchmark (issue 6): spans/s through ``POST /v1/traces`` in binary protobuf on one
core, next to a bare Starlette/uvicorn endpoint that parses the same requests with the same
protobuf classes (upb) and answers an empty ``ExportTraceServiceResponse``, on the same server
stack, pinned the same way, fed by the same client.

The requests are what an OpenTelemetry SDK's batch span processor sends: 512 spans per export,
one resource (eight attributes: service, host, pod, SDK), every span an HTTP server span with six
attributes plus ``app.order.id``, ``app.order.hop`` and ``app.customer.id`` — every span a hop, the
heaviest case for ordertrail. Orders walk the example shop's journey (five hops under one trace
id), event times start ten minutes ahead of the wall clock (no deadline fires because a run is
slow), and every request is encoded before the clock starts.

Rows: the ingest path alone (``ordertrail run``'s own app and pipeline with the tracer thread
stopped: HTTP, protobuf decoding, mapping and CONTRACT §1 validation of every span, the durable
bus append fsync'd before the 200), the same per second of server CPU, and ``ordertrail run``
itself with the tracer consuming on the same core. The OpenTelemetry Collector does ~12–15k
spans/s per core; the target is ≥ 20k.

Measurements run in fresh interpreters: ``python -m bench.otlp refserver|post``; the ingest-only
server is ``python -m bench.live serve``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from bench import Context, Row, Section, Target, report, run_child
from bench.live import _cpus, _flags, _run_argv, _server, _where, post_all, run_notes

TARGET: Final = Target("value", ">=", 20_000)
SPANS_PER_REQUEST: Final = 512  # the OpenTelemetry SDK batch span processor's max_export_batch_size
CLIENT_THREADS: Final = 4
REFERENCE_SPANS: Final = 500_000  # the reference gets every request until at least this many spans
MAX_SPANS: Final = 400_000  # the full run's size: long enough to time, short enough for the suite
HOPS: Final = ("checkout.placed", "payment.authorized", "inventory.reserved", "email.confirmation_sent")
LAST_HOP: Final = "fulfilment.shipped"
PROTOBUF: Final = "application/x-protobuf"


def otlp(ctx: Context) -> Section:
    spans = min(MAX_SPANS, ctx.scale.throughput_events)
    bodies = _bodies(ctx, spans)
    servers: dict[str, Callable[[Path], Callable[[int], list[str]]]] = {
        "reference": lambda data: lambda port: ["bench.otlp", "refserver", "--port", str(port)],
        "ingest": lambda data: (
            lambda port: [
                *("bench.live", "serve", "--journeys", str(ctx.journeys), "--data", str(data), "--port", str(port))
            ]
        ),
        "run": lambda data: _run_argv(ctx.journeys, data),
    }
    rounds = {"reference": max(1, -(-REFERENCE_SPANS // spans)), "ingest": 1, "run": 1}
    best: dict[str, dict[str, Any]] = {}
    for repeat in range(ctx.scale.repeats):
        for name, argv in servers.items():
            if name == "run" and repeat:
                continue
            data = ctx.scratch(f"otlp-{name}")
            with _server(ctx, f"otlp-{name}", argv(data)) as server:
                args = _flags(url=server.url, input=bodies, server_pid=server.proc.pid, rounds=rounds[name])
                result = run_child("bench.otlp", "post", "--cpus", ",".join(map(str, sorted(_cpus()[1]))), *args)
            shutil.rmtree(data, ignore_errors=True)
            if result["errors"] or result["rejected"]:
                raise RuntimeError(f"{name}: export failed: {result['errors'][:3]} rejected {result['rejected']}")
            ctx.log(f"  {name:10} {result['spans_per_s']:>10,.0f} spans/s ({result['seconds']:.1f} s)")
            if name not in best or result["spans_per_s"] > best[name]["spans_per_s"]:
                best[name] = result
    ref, alone, full = best["reference"], best["ingest"], best["run"]
    section = Section(
        reference="a bare Starlette app on uvicorn (the same server stack and settings) whose POST /v1/traces "
        "parses each request with the same protobuf classes (upb), counts its spans and answers an empty "
        "ExportTraceServiceResponse: no mapping, validation or durability; same requests, same client"
    )
    n = alone["spans"]
    section.rows += [
        Row(
            f"/v1/traces protobuf, ingest path alone, {n:,} spans",
            alone["spans_per_s"],
            "spans/s",
            ref["spans_per_s"],
            TARGET,
        ),
        Row(
            "the same, spans per second of server CPU",
            n / alone["server_cpu_s"],
            "spans/s",
            ref["spans"] / ref["server_cpu_s"],
        ),
        Row(f"ordertrail run, tracer consuming on the same core, {n:,} spans", full["spans_per_s"], "spans/s"),
    ]
    section.notes.append(
        f"{n // SPANS_PER_REQUEST:,} exports of {SPANS_PER_REQUEST} spans ({alone['bytes'] / n:.0f} B/span in "
        f"protobuf), every span carrying app.order.id (every span a hop), {CLIENT_THREADS} keep-alive "
        f"connections (http.client) in a client process {_where(best['ingest']['cpus'])}; each server process "
        f"pinned to {_where(_cpus()[0])}. The OpenTelemetry Collector does ~12–15k spans/s per core."
    )
    section.notes += run_notes(ctx, best, "spans", "request", "export")
    return section


def _bodies(ctx: Context, spans: int) -> Path:
    """The export requests, encoded once per run: length-prefixed protobuf in one file."""
    path = ctx.workdir / f"otlp-{spans}.bin"
    if not path.exists():
        with path.open("wb") as out:
            for body in requests(spans, start_ns=(time.time_ns() // 1_000_000 + 600_000) * 1_000_000):
                out.write(struct.pack(">I", len(body)) + body)
    return path


def requests(spans: int, *, start_ns: int, seed: int = 6) -> Iterator[bytes]:
    """``spans`` spans of orders walking the example journey, as ExportTraceServiceRequests."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    rng = random.Random(seed)
    journey = (*HOPS, LAST_HOP)
    resource = {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "service.instance.id": "checkout-7f9c",
        "host.name": "node-7",
        "k8s.pod.name": "checkout-7f9c-x2",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.45.2",
    }
    made = 0
    order = 0
    trace_id = b""
    while made < spans:
        request = ExportTraceServiceRequest()
        rs = request.resource_spans.add()
        for key, value in resource.items():
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        ss = rs.scope_spans.add()
        ss.scope.name = "opentelemetry.instrumentation.asgi"
        for _ in range(min(SPANS_PER_REQUEST, spans - made)):
            step = made % len(journey)
            if step == 0:
                order += 1
                trace_id = rng.randbytes(16)
            span = ss.spans.add()
            span.trace_id, span.span_id, span.parent_span_id = trace_id, rng.randbytes(8), rng.randbytes(8)
            span.name, span.kind = "POST /api/orders/{id}", 2
            span.start_time_unix_nano = start_ns + made * 1_000_000
            span.end_time_unix_nano = span.start_time_unix_nano + 4_000_000
            attrs: dict[str, str | int] = {
                "http.request.method": "POST",
                "http.route": "/api/orders/{id}",
                "url.scheme": "https",
                "server.address": "shop.example",
                "http.response.status_code": 200,
                "network.protocol.version": "1.1",
                "app.order.id": f"otlp-{order:09d}",
                "app.order.hop": journey[step],
                "app.customer.id": f"c-{order % 50_000}",
            }
            for key, value in attrs.items():
                kv = span.attributes.add()
                kv.key = key
                if isinstance(value, int):
                    kv.value.int_value = value
                else:
                    kv.value.string_value = value
            made += 1
        yield request.SerializeToString()


# -- measurements (run in fresh interpreters) -----------------------------------------------------


def serve_reference(port: int) -> None:
    """The reference server: parse each request, count its spans, answer an empty response."""
    import uvicorn
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    empty = ExportTraceServiceResponse().SerializeToString()
    counted = [0]

    async def traces(request: Request) -> Response:
        parsed = ExportTraceServiceRequest()
        parsed.ParseFromString(await request.body())
        counted[0] += sum(len(ss.spans) for rs in parsed.resource_spans for ss in rs.scope_spans)
        return Response(empty, media_type=PROTOBUF)

    async def ready(request: Request) -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]), Route("/readyz", ready)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def read_bodies(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out = []
    at = 0
    while at < len(data):
        (size,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4 : at + 4 + size])
        at += 4 + size
    return out


def measure_post(url: str, path: Path, threads: int, server_pid: int, rounds: int) -> dict[str, Any]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    bodies = read_bodies(path) * rounds
    spans = [
        sum(len(ss.spans) for rs in ExportTraceServiceRequest.FromString(b).resource_spans for ss in rs.scope_spans)
        for b in bodies
    ]

    def count(i: int, answer: bytes) -> tuple[int, int]:
        rejected = ExportTraceServiceResponse.FromString(answer).partial_success.rejected_spans
        return spans[i] - rejected, rejected

    posted = post_all(
        url, "/v1/traces", bodies, threads=threads, server_pid=server_pid, content_type=PROTOBUF, ok=200, count=count
    )
    return {
        **posted,
        "spans": posted["accepted"],
        "rounds": rounds,
        "spans_per_s": posted["accepted"] / posted["seconds"],
        "cpus": sorted(os.sched_getaffinity(0)),
    }


def _main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.otlp", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("refserver").add_argument("--port", type=int, required=True)
    post = sub.add_parser("post")
    post.add_argument("--cpus", default="", help="pin this process to these cores (comma-separated)")
    post.add_argument("--url", required=True)
    post.add_argument("--input", type=Path, required=True)
    post.add_argument("--threads", type=int, default=CLIENT_THREADS)
    post.add_argument("--server-pid", type=int, required=True)
    post.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    if getattr(args, "cpus", ""):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.what == "refserver":
        serve_reference(args.port)
    else:
        report(measure_post(args.url, args.input, args.threads, args.server_pid, args.rounds))


if __name__ == "__main__":
    _main()
