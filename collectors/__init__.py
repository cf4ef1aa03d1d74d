"""Collectors: everything that produces hop events (SDK, ingest routes, taps, the shop simulator).

The names below are the public API of the Python SDK; modules are internals::

    import collectors

    collectors.track(order_id, "payment.authorized", amount="12.50")
    with collectors.hop(order_id, "inventory.reserved"):
        reserve(order)
    requests.post(url, headers=collectors.inject({}))       # trace context and order id downstream
    with collectors.activated(collectors.extract(request.headers)):
        collectors.track(None, "fulfilment.shipped")         # order id from baggage
    provider.add_span_processor(collectors.OrdertrailSpanProcessor())   # OTel spans with app.order.id

``OrdertrailSpanProcessor`` needs the OpenTelemetry SDK and is imported on first use, so
``import collectors`` works with the OpenTelemetry API alone.
"""

from typing import TYPE_CHECKING, Any

from collectors.propagation import (
    TraceParent,
    activated,
    extract,
    extract_record_headers,
    format_traceparent,
    inject,
    order_context,
    order_id_from,
    parse_traceparent,
    record_headers,
)
from collectors.sdk import (
    Client,
    HopScope,
    HttpTransport,
    MemoryTransport,
    RetryPolicy,
    SdkConfig,
    SdkConfigError,
    SdkStats,
    SendResult,
    Transport,
    configure,
    flush,
    get_client,
    hop,
    shutdown,
    stats,
    track,
)

if TYPE_CHECKING:
    from collectors.otel_sdk import OrdertrailSpanProcessor


def __getattr__(name: str) -> Any:
    if name == "OrdertrailSpanProcessor":
        from collectors.otel_sdk import OrdertrailSpanProcessor

        return OrdertrailSpanProcessor
    raise AttributeError(f"module 'collectors' has no attribute {name!r}")


__all__ = [
    "Client",
    "HopScope",
    "HttpTransport",
    "MemoryTransport",
    "OrdertrailSpanProcessor",
    "RetryPolicy",
    "SdkConfig",
    "SdkConfigError",
    "SdkStats",
    "SendResult",
    "TraceParent",
    "Transport",
    "activated",
    "configure",
    "extract",
    "extract_record_headers",
    "flush",
    "format_traceparent",
    "get_client",
    "hop",
    "inject",
    "order_context",
    "order_id_from",
    "parse_traceparent",
    "record_headers",
    "shutdown",
    "stats",
    "track",
]
