"""The HTTP API of ``ordertrail run`` (CONTRACT §5), as a Starlette app.

Routes: ``POST /v1/events`` (JSON array or NDJSON, gzip allowed), ``GET /v1/orders/{id}``,
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
from typing import Any, Protocol

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tracer.errors import BodyError, TracerError
from tracer.events import decode_batch
from tracer.model import FINDING_KINDS, HopEvent

MAX_BODY_BYTES = 8 * 1024 * 1024
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
    api: Api, *, max_body_bytes: int = MAX_BODY_BYTES, on_rejected: Callable[[int], None] | None = None
) -> Starlette:
    """The ASGI app over ``api``; ``on_rejected`` hears how many events of a request were
    rejected (for the metrics)."""

    async def post_events(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"the body is {declared} bytes; at most {max_body_bytes} are accepted per request")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, f"the body exceeds {max_body_bytes} bytes; send smaller batches")
            chunks.append(chunk)
        body = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding == "gzip":
            try:
                body = _gunzip(body, max_body_bytes)
            except ValueError as exc:
                return _error(413 if "exceeds" in str(exc) else 400, str(exc))
        elif encoding not in ("identity", ""):
            return _error(415, f"content-encoding {encoding!r} is not supported; use gzip or none")
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
