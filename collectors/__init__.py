"""Collectors: everything that produces hop events (SDK, ingest routes, taps, the shop simulator).

The names below are the public API of the Python SDK; modules are internals::

    import collectors

    collectors.track(order_id, "payment.authorized", amount="12.50")
    with collectors.hop(order_id, "inventory.reserved"):
        reserve(order)
    requests.post(url, headers=collectors.inject({}))       # trace context and order id downstream
    with collectors.activated(collectors.extract(request.headers)):
        collectors.track(None, "fulfilment.shipped")         # order id from baggage
"""

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

__all__ = [
    "Client",
    "HopScope",
    "HttpTransport",
    "MemoryTransport",
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
