"""How an OpenTelemetry span becomes a hop event (CONTRACT §1, §5 ``/v1/traces``).

A span is a hop when it carries the order attribute (``app.order.id``, the OpenTelemetry demo's
convention). Its hop is the hop attribute (``app.order.hop``) when set, else the span name made
into a hop name (lowercased, every run of characters outside ``[a-z0-9_.-]`` turned into ``_``,
at most 64 characters: ``oteldemo.CheckoutService/PlaceOrder`` becomes
``oteldemo.checkoutservice_placeorder``). The hop attribute is taken as given, so a bad one is
refused with its reason rather than silently rewritten.

``ts`` is the span's start time (its end time when it has no start); ``status`` is ``error``
when the span's status is ERROR; ``service`` is the resource's ``service.name``; trace, span and
parent span ids come from the span; ``customer_id`` and ``journey`` from their attributes. The
event id is derived from (trace id, span id), so a re-sent span is the same event and the
tracer drops the copy. Every other span attribute rides along in ``attrs`` within CONTRACT §1's
limits: keys longer than 64 characters are left out, values are cut to 1024 characters, and
after 64 keys the rest are left out.

Used by the OTLP ingest (``collectors.otlp``) and the SDK's span processor
(``collectors.otel_sdk``). Imports only the standard library and the tracer's model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tracer import model as m
from tracer.errors import EventError

ORDER_ATTRIBUTE: Final = "app.order.id"
HOP_ATTRIBUTE: Final = "app.order.hop"
CUSTOMER_ATTRIBUTE: Final = "app.customer.id"
JOURNEY_ATTRIBUTE: Final = "app.order.journey"
SERVICE_NAME: Final = "service.name"  # the resource attribute naming the emitting service
MAX_ATTRS: Final = 64
MAX_KEY: Final = 64
MAX_VALUE: Final = 1024
_NOT_HOP: Final = re.compile(r"[^a-z0-9_.-]+")


@dataclass(frozen=True, slots=True)
class SpanMapping:
    """The span attributes that carry an order's fields (configurable: ``ordertrail run
    --order-attribute`` etc.)."""

    order: str = ORDER_ATTRIBUTE
    hop: str = HOP_ATTRIBUTE
    customer: str = CUSTOMER_ATTRIBUTE
    journey: str = JOURNEY_ATTRIBUTE

    def problems(self) -> dict[str, str]:
        """What is wrong with these names: setting (``order``, ``hop``, ...) -> what is wrong."""
        out: dict[str, str] = {}
        seen: dict[str, str] = {}
        for field in ("order", "hop", "customer", "journey"):
            name = getattr(self, field)
            if not (0 < len(name) <= 255 and name.isprintable() and name.strip() == name):
                out[field] = f"{name!r} must be 1–255 printable characters without outer spaces"
            elif name in seen:
                out[field] = f"{name!r} is already the {seen[name]} attribute; each must differ"
            seen.setdefault(name, field)
        return out


def span_event_id(trace_id: str, span_id: str) -> str:
    """The event id of the hop a span reports: the same span, resent, is the same event."""
    raw = f"{trace_id}\x1f{span_id}".encode()
    return hashlib.blake2b(raw, digest_size=16, person=b"ordertrail-span").hexdigest()


def hop_name(span_name: str) -> str:
    """A span name made into a hop name (see the module docstring); may be empty."""
    return _NOT_HOP.sub("_", span_name.lower())[:64].strip("_")


def span_event(
    mapping: SpanMapping,
    attributes: Mapping[str, object],
    *,
    name: str,
    trace_id: str,
    span_id: str,
    parent_span_id: str = "",
    start_ns: int = 0,
    end_ns: int = 0,
    error: bool = False,
    service: str = "",
) -> dict[str, object] | None:
    """The CONTRACT §1 object of a span, or None when it does not carry the order attribute.

    Ids are lowercase hex (``parent_span_id`` empty for a root span); times are epoch
    nanoseconds. Raises EventError when the span carries an order id that cannot be used; the
    rest of CONTRACT §1 (id formats, lengths, the hop rule) is the caller's to check.
    """
    order = attributes.get(mapping.order)
    if order is None:
        return None
    order_id = order if isinstance(order, str) else attr_text(order)
    hop_attr = attributes.get(mapping.hop)
    if hop_attr is not None:
        hop = attr_text(hop_attr)
    else:
        hop = hop_name(name)
        if not hop:
            raise EventError(m.HOP, name, f"the span name gives no hop name; set the span attribute {mapping.hop}")
    when = start_ns or end_ns
    if when <= 0:
        raise EventError("start_time_unix_nano", when, "the span has no start or end time")
    wire: dict[str, object] = {
        m.ORDER_ID: order_id,
        m.HOP: hop,
        m.TS: when // 1_000_000,
        m.EVENT_ID: span_event_id(trace_id, span_id),
        m.TRACE_ID: trace_id,
        m.SPAN_ID: span_id,
    }
    if parent_span_id:
        wire[m.PARENT_SPAN_ID] = parent_span_id
    if service:
        wire[m.SERVICE] = service[:128]
    if error:
        wire[m.STATUS] = m.STATUS_ERROR
    customer = attributes.get(mapping.customer)
    if customer is not None:
        wire[m.CUSTOMER_ID] = attr_text(customer)
    journey = attributes.get(mapping.journey)
    if journey is not None:
        wire[m.JOURNEY] = attr_text(journey)
    mapped = (mapping.order, mapping.hop, mapping.customer, mapping.journey)
    attrs: dict[str, str] = {}
    for key, value in attributes.items():
        if key in mapped or not 0 < len(key) <= MAX_KEY:
            continue
        text = value if type(value) is str else attr_text(value)
        attrs[key] = text if len(text) <= MAX_VALUE else text[:MAX_VALUE]
        if len(attrs) == MAX_ATTRS:
            break
    if attrs:
        wire[m.ATTRS] = attrs
    return wire


def attr_text(value: object) -> str:
    """An attribute value as event attributes hold it: strings as they are, booleans as
    ``true``/``false``, numbers in decimal, bytes in base64 (as OTLP/JSON writes them), arrays
    and maps as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return json.dumps(_jsonable(value), separators=(",", ":"), ensure_ascii=False)


def _jsonable(value: object) -> object:
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return attr_text(value)


__all__ = [
    "CUSTOMER_ATTRIBUTE",
    "HOP_ATTRIBUTE",
    "JOURNEY_ATTRIBUTE",
    "ORDER_ATTRIBUTE",
    "SERVICE_NAME",
    "SpanMapping",
    "attr_text",
    "hop_name",
    "span_event",
    "span_event_id",
]
