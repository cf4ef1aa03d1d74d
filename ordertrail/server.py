"""The HTTP API of ``ordertrail run`` (CONTRACT §5), as a Starlette app.

Routes: ``POST /v1/events`` (JSON array or NDJSON, gzip allowed), ``POST /v1/traces`` (OTLP/HTTP,
decoded by ``collectors.otlp``), ``GET /v1/orders/{id}``,
``GET /v1/orders?customer_id=|trace_id=``, ``GET /v1/findings``, ``GET /v1/incidents``,
``GET /metrics``, ``/healthz``, ``/readyz``, ``/openapi.json`` and the lookup page at ``/``.

The app only translates HTTP: it is handed an ``Api`` (below) that does the work, so it can be
tested with fakes and served by any ASGI server. Blocking work (the durable bus append, store
queries) runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from collectors import otlp
from collectors.otlp import encoding_of
from collectors.spanmap import SpanMapping
from tracer.errors import BodyError, TracerError
from tracer.events import decode_batch
from tracer.model import FINDING_KINDS, HopEvent

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_INFLIGHT = 16  # OTLP export requests waiting for the bus at once; more get 429
_JSON = msgspec.json.Encoder()


class Api(Protocol):
    """What the HTTP layer asks of the running pipeline."""

    def ingest(self, events: Sequence[HopEvent]) -> None: ...  # durable when it returns
    def order_view(self, order_id: str) -> dict[str, Any] | None: ...
    def unknown_order(self, order_id: str) -> dict[str, Any]: ...
    def search(self, *, customer_id: str | None, trace_id: str | None, limit: int) -> list[dict[str, Any]]: ...
    def findings(self, *, status: str, kind: str | None, journey: str | None, limit: int) -> list[dict[str, Any]]: ...
    def incidents(self) -> list[dict[str, Any]]: ...
    def metrics(self) -> tuple[bytes, str]: ...
    def ready(self) -> tuple[bool, dict[str, Any]]: ...
    def page(self, query: str) -> str: ...


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _JSON.encode(content)


def _error(status: int, message: str, **extra: Any) -> Response:
    return _Json({"error": message, **extra}, status_code=status)


def create_app(
    api: Api,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    on_rejected: Callable[[int], None] | None = None,
    spans: SpanMapping | None = None,
    otlp_stats: otlp.OtlpStats | None = None,
    max_inflight: int = MAX_INFLIGHT,
) -> Starlette:
    """The ASGI app over ``api``; ``on_rejected`` hears how many events of a request were
    rejected (for the metrics). ``spans`` names the span attributes ``/v1/traces`` maps (default:
    ``app.order.id`` and friends); ``otlp_stats`` receives its counters; past ``max_inflight``
    export requests waiting for the bus, further ones are answered 429 with Retry-After."""
    spans = spans or SpanMapping()
    otlp_stats = otlp_stats if otlp_stats is not None else otlp.OtlpStats()

    async def post_events(request: Request) -> Response:
        try:
            body = await _read_body(request, max_body_bytes)
        except _Refused as exc:
            return _error(exc.status, exc.message)
        if not body.strip():
            return _error(400, "the body is empty; send a JSON array or NDJSON of hop events")
        try:
            batch = decode_batch(body)
        except BodyError as exc:
            return _error(400, str(exc))
        if batch.events:
            try:
                await run_in_threadpool(api.ingest, batch.events)
            except TracerError as exc:
                return _error(503, f"the events could not be stored durably: {exc}; retry later", accepted=0)
        if batch.rejected and on_rejected is not None:
            on_rejected(len(batch.rejected))
        rejected = [{"index": i, "error": e} for i, e in batch.rejected]
        return _Json({"accepted": len(batch.events), "rejected": rejected}, status_code=202)

    in_flight = 0

    async def post_traces(request: Request) -> Response:
        nonlocal in_flight
        encoding = encoding_of(request.headers.get("content-type"))
        stats = otlp_stats
        stats.requests += 1
        if encoding is None:
            given = request.headers.get("content-type", "none")
            message = f"content-type {given!r} is not supported; send {otlp.PROTOBUF} or {otlp.JSON}"
            return _otlp_error("json", 415, message, stats)
        if in_flight >= max_inflight:
            return _otlp_error(encoding, 429, f"{in_flight} export requests are in progress; retry shortly", stats)
        try:
            body = await _read_body(request, max_body_bytes)
        except _Refused as exc:
            return _otlp_error(encoding, exc.status, exc.message, stats)
        try:
            batch = otlp.decode_traces(body, encoding, spans)
        except otlp.OtlpError as exc:
            return _otlp_error(encoding, 400, str(exc), stats)
        if batch.events:
            in_flight += 1
            try:
                await run_in_threadpool(api.ingest, batch.events)
            except TracerError as exc:
                return _otlp_error(encoding, 503, f"the spans could not be stored durably: {exc}; retry later", stats)
            finally:
                in_flight -= 1
        stats.add(batch)
        if batch.rejected and on_rejected is not None:
            on_rejected(len(batch.rejected))
        return Response(otlp.export_response(encoding, batch), media_type=_MEDIA[encoding])

    async def get_order(request: Request) -> Response:
        order_id = request.path_params["order_id"]
        view = await run_in_threadpool(api.order_view, order_id)
        if view is None:
            return _Json(api.unknown_order(order_id), status_code=404)
        return _Json(view)

    async def search_orders(request: Request) -> Response:
        customer_id = request.query_params.get("customer_id")
        trace_id = request.query_params.get("trace_id")
        if not customer_id and not trace_id:
            return _error(400, "give customer_id=… or trace_id=… to search, or GET /v1/orders/{order_id}")
        limit = _limit(request, 100)
        if isinstance(limit, Response):
            return limit
        found = await run_in_threadpool(
            lambda: api.search(customer_id=customer_id or None, trace_id=trace_id or None, limit=limit)
        )
        return _Json({"orders": found})

    async def get_findings(request: Request) -> Response:
        status = request.query_params.get("status", "open")
        if status not in ("open", "resolved", "all"):
            return _error(400, f"status: {status!r} is not one of open, resolved, all")
        kind = request.query_params.get("kind") or None
        if kind is not None and kind not in FINDING_KINDS:
            return _error(400, f"kind: {kind!r} is not one of {', '.join(FINDING_KINDS)}")
        journey = request.query_params.get("journey") or None
        limit = _limit(request, 1000)
        if isinstance(limit, Response):
            return limit
        found = await run_in_threadpool(lambda: api.findings(status=status, kind=kind, journey=journey, limit=limit))
        return _Json({"findings": found})

    async def get_incidents(request: Request) -> Response:
        return _Json({"incidents": await run_in_threadpool(api.incidents)})

    async def metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(api.metrics)
        return Response(body, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return _Json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, detail = api.ready()
        return _Json({"status": "ready" if ok else "starting", **detail}, status_code=200 if ok else 503)

    async def openapi(request: Request) -> Response:
        return _Json(OPENAPI)

    async def page(request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        html = await run_in_threadpool(api.page, query)
        return HTMLResponse(html)

    routes = [
        Route("/v1/events", post_events, methods=["POST"]),
        Route("/v1/traces", post_traces, methods=["POST"]),
        Route("/v1/orders/{order_id:path}", get_order, methods=["GET"]),
        Route("/v1/orders", search_orders, methods=["GET"]),
        Route("/v1/findings", get_findings, methods=["GET"]),
        Route("/v1/incidents", get_incidents, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, gunzipped when Content-Encoding says gzip. Raises _Refused: 413 past ``limit``
    bytes (sent or decompressed), 400 for a broken gzip body, 415 for another encoding."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _Refused(413, f"the body is {declared} bytes; at most {limit} are accepted per request")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, f"the body exceeds {limit} bytes; send smaller batches")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "gzip":
        try:
            return _gunzip(body, limit)
        except ValueError as exc:
            raise _Refused(413 if "exceeds" in str(exc) else 400, str(exc)) from None
    if encoding not in ("identity", ""):
        raise _Refused(415, f"content-encoding {encoding!r} is not supported; use gzip or none")
    return body


_MEDIA: Final = {"protobuf": otlp.PROTOBUF, "json": otlp.JSON}
RETRY_AFTER_S: Final = 1


def _otlp_error(encoding: otlp.Encoding, status: int, message: str, stats: otlp.OtlpStats) -> Response:
    """An OTLP error answer: a google.rpc.Status in the request's encoding; Retry-After on 429/503."""
    stats.refused[status] = stats.refused.get(status, 0) + 1
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return Response(otlp.status_body(encoding, status, message), status, headers, media_type=_MEDIA[encoding])


def _limit(request: Request, default: int) -> int | Response:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        return _error(400, f"limit: {raw!r} must be a whole number from 1 to 10000")
    return int(raw)


def _gunzip(body: bytes, limit: int) -> bytes:
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out = d.decompress(body, limit + 1)
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise ValueError(f"content-encoding is gzip but the body is not gzip data: {exc}") from None
    if len(out) > limit:
        raise ValueError(f"the decompressed body exceeds {limit} bytes; send smaller batches")
    return out


def _schema(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


_STR = {"type": "string"}
_OPT = {"type": ["string", "null"]}
_HOP_EVENT = _schema(
    {
        "order_id": {"type": "string", "minLength": 1, "maxLength": 128},
        "hop": {"type": "string", "pattern": "^[a-z0-9_.-]{1,64}$"},
        "ts": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer"}]},
        "event_id": _STR,
        "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "span_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "parent_span_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        "service": _STR,
        "status": {"type": "string", "enum": ["ok", "error"]},
        "journey": _STR,
        "customer_id": _STR,
        "attrs": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 64},
    },
    ["order_id", "hop", "ts"],
)
_FINDING = _schema(
    {
        k: _STR
        for k in (
            "order_id",
            "journey",
            "kind",
            "hop",
            "after",
            "due_at",
            "detected_at",
            "status",
            "trace_id",
        )
    }
    | {"resolved_at": _OPT, "customer_id": _OPT, "late_by_ms": {"type": ["integer", "null"]}}
)
_ORDER = _schema(
    {
        "order_id": _STR,
        "journey": _OPT,
        "trace_id": _STR,
        "customer_id": _OPT,
        "status": {
            "type": "string",
            "enum": ["in_progress", "completed", "missing", "stalled", "unconfirmed", "failed"],
        },
        "explanation": _STR,
        "advice": {"type": "string", "description": "what to tell the customer (an addition to CONTRACT §5)"},
        "hops": {"type": "array", "items": _schema({"hop": _STR, "ts": _STR, "service": _OPT, "status": _STR})},
        "next": {"oneOf": [{"type": "null"}, _schema({"hop": _STR, "due_at": _STR})]},
        "findings": {"type": "array", "items": {"$ref": "#/components/schemas/Finding"}},
        "incident": {"type": ["object", "null"]},
    }
)


def _json_op(summary: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
        **extra,
    }


def _query(name: str, description: str, enum: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if enum:
        schema["enum"] = enum
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "ordertrail", "version": "1", "description": "Order tracing: ingest hop events, look up orders."},
    "components": {"schemas": {"HopEvent": _HOP_EVENT, "Finding": _FINDING, "Order": _ORDER}},
    "paths": {
        "/v1/events": {
            "post": {
                "summary": "Ingest hop events (JSON array or NDJSON; gzip allowed)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/HopEvent"}}
                        },
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "202": {
                        "description": "Accepted; rejected items listed with their reasons",
                        "content": {
                            "application/json": {
                                "schema": _schema(
                                    {
                                        "accepted": {"type": "integer"},
                                        "rejected": {
                                            "type": "array",
                                            "items": _schema({"index": {"type": "integer"}, "error": _STR}),
                                        },
                                    }
                                )
                            }
                        },
                    },
                    "400": {"description": "The body is not JSON at all"},
                    "413": {"description": "The body is too large"},
                    "503": {"description": "The events could not be stored durably; retry"},
                },
            }
        },
        "/v1/traces": {
            "post": {
                "summary": "OTLP/HTTP trace export: spans carrying app.order.id become hop events",
                "description": "An ExportTraceServiceRequest in binary protobuf or OTLP/JSON, gzip allowed. A span "
                "carrying the order attribute becomes a hop event: hop from app.order.hop, else the span name made "
                "into a hop name; ts from the start time; status error when the span's status is ERROR; service "
                "from the resource's service.name; ids from the span; the event id derives from (trace id, span id), "
                "so re-sent spans are dropped as duplicates. Other spans are counted and ignored. The attribute "
                "names are configurable (ordertrail run --order-attribute etc.).",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                        "application/json": {"schema": {"type": "object", "description": "OTLP/JSON"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "ExportTraceServiceResponse in the request's encoding; partial_success "
                        "counts the spans with an order id that could not be used, with the first reasons",
                        "content": {
                            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
                            "application/json": {
                                "schema": _schema(
                                    {
                                        "partialSuccess": _schema(
                                            {"rejectedSpans": {"type": ["string", "integer"]}, "errorMessage": _STR}
                                        )
                                    }
                                )
                            },
                        },
                    },
                    "400": {"description": "Malformed body (google.rpc.Status); do not retry"},
                    "413": {"description": "The body is too large (google.rpc.Status)"},
                    "415": {"description": "Neither application/x-protobuf nor application/json"},
                    "429": {"description": "Too many exports in progress; retry after Retry-After seconds"},
                    "503": {"description": "The spans could not be stored durably; retry after Retry-After seconds"},
                },
            }
        },
        "/v1/orders/{order_id}": {
            "get": _json_op(
                "One order: its trail, status, plain-language explanation and findings",
                {"$ref": "#/components/schemas/Order"},
                parameters=[{"name": "order_id", "in": "path", "required": True, "schema": _STR}],
            )
            | {
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Order"}}},
                    },
                    "404": {"description": "Unknown order, with what was checked"},
                }
            }
        },
        "/v1/orders": {
            "get": _json_op(
                "Search orders by customer or trace id",
                _schema({"orders": {"type": "array", "items": {"type": "object"}}}),
                parameters=[
                    _query("customer_id", "customer id"),
                    _query("trace_id", "trace id"),
                    _query("limit", "1–10000"),
                ],
            )
        },
        "/v1/findings": {
            "get": _json_op(
                "Findings",
                _schema({"findings": {"type": "array", "items": {"$ref": "#/components/schemas/Finding"}}}),
                parameters=[
                    _query("status", "open (default), resolved or all", ["open", "resolved", "all"]),
                    _query("kind", "finding kind", list(FINDING_KINDS)),
                    _query("journey", "journey name"),
                    _query("limit", "1–10000"),
                ],
            )
        },
        "/v1/incidents": {
            "get": _json_op("Grouped findings with blast radius", _schema({"incidents": {"type": "array"}}))
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text format"}}}},
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {"200": {"description": "ready"}, "503": {"description": "starting"}},
            }
        },
        "/": {"get": {"summary": "The lookup page", "responses": {"200": {"description": "HTML"}}}},
    },
}
