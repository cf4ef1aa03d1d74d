"""The OpenTelemetry SDK adapter: a ``SpanProcessor`` that reports hop events for ended spans.

A service already instrumented with OpenTelemetry joins ordertrail with one line::

    provider.add_span_processor(OrdertrailSpanProcessor())

Every ended span that carries the order attribute (``app.order.id``) becomes a hop event by the
same rules as ``POST /v1/traces`` (``collectors.spanmap``): hop from ``app.order.hop`` else the
span name, ts from the start time, ``error`` from the span status, the service from the
resource's ``service.name``, ids from the span and the event id from (trace id, span id) — so a
span that also reaches ordertrail over OTLP is one event, not two. Spans of ordertrail's own
``hop()`` are skipped: ``hop()`` reports them itself.

Contract: ``on_end`` runs on the thread that ends the span, so it only maps the span and appends
to the SDK client's bounded queue (``Client.emit``); it never blocks, never does I/O and never
raises. Spans it cannot use are counted (``unusable``), the reason of the last one kept.

This is the only module of ordertrail that imports the OpenTelemetry SDK (``opentelemetry-sdk``,
which a service with a ``TracerProvider`` already has); the rest of the SDK needs the API only.
"""

from __future__ import annotations

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import StatusCode

from collectors.sdk import Client, get_client
from collectors.spanmap import SERVICE_NAME, SpanMapping, span_event

_OWN_SCOPE = "ordertrail"  # the tracer name of collectors.sdk's hop() spans


class OrdertrailSpanProcessor(SpanProcessor):
    """Turns ended spans carrying the order attribute into hop events sent by an SDK ``Client``
    (default: the SDK's default client at the time each span ends)."""

    def __init__(self, client: Client | None = None, *, mapping: SpanMapping | None = None) -> None:
        self._client = client
        self._mapping = mapping or SpanMapping()
        self.reported = 0  # spans handed to the client as hop events
        self.unusable = 0  # spans with an order id that could not be mapped
        self.last_problem = ""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        try:
            attributes = span.attributes
            if not attributes or self._mapping.order not in attributes:
                return
            scope = span.instrumentation_scope
            if scope is not None and scope.name == _OWN_SCOPE:
                return
            ctx = span.context
            if ctx is None:
                return
            parent = span.parent
            service = span.resource.attributes.get(SERVICE_NAME)
            wire = span_event(
                self._mapping,
                attributes,
                name=span.name,
                trace_id=f"{ctx.trace_id:032x}",
                span_id=f"{ctx.span_id:016x}",
                parent_span_id=f"{parent.span_id:016x}" if parent is not None and parent.is_valid else "",
                start_ns=span.start_time or 0,
                end_ns=span.end_time or 0,
                error=span.status.status_code is StatusCode.ERROR,
                # the SDK's default resource says unknown_service: let the client's setting speak
                service=service if isinstance(service, str) and not service.startswith("unknown_service") else "",
            )
            if wire is None:
                return
            (self._client or get_client()).emit(wire)
            self.reported += 1
        except Exception as exc:  # never into the code that ended the span
            self.unusable += 1
            self.last_problem = f"{getattr(span, 'name', '?')!r}: {exc}"[:300]

    def shutdown(self) -> None:
        """Sends what is queued; the client itself stays up for ``track`` and other users."""
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return (self._client or get_client()).flush(timeout_millis / 1000)
        except Exception:
            return False


__all__ = ["OrdertrailSpanProcessor"]
