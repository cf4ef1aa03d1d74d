"""W3C trace context and baggage across process boundaries, and the order id riding in baggage.

``inject(carrier)`` writes ``traceparent``, ``tracestate`` and ``baggage`` of the current (or a
given) context into a mutable mapping of HTTP headers; ``extract(carrier)`` reads them back into an
OpenTelemetry ``Context``. ``record_headers``/``extract_record_headers`` do the same for message
headers given as ``(key, bytes)`` pairs, the way Kafka clients hold them. Both sides are the
OpenTelemetry W3C TraceContext and W3C Baggage propagators, composed.

``order_context(order_id)`` puts the order id in baggage under ``app.order.id``: a downstream
service that extracts the context can tag its hops (``collectors.track(None, hop)``) without being
told the order id. ``order_id_from(context)`` reads it back.

Contract: nothing here raises on bad input. A malformed, oversized or mistyped header is ignored
(the context stays empty) and logged at debug level; an unusable carrier is left unchanged.
Header lookup is case-insensitive for plain dicts and also finds WSGI ``HTTP_TRACEPARENT`` keys.

Imports only the standard library and opentelemetry-api (never the OpenTelemetry SDK).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ORDER_ID_KEY: Final = "app.order.id"  # baggage key, and the span attribute of the OTel demo convention
TRACEPARENT: Final = "traceparent"
PROPAGATOR: Final[TextMapPropagator] = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
_HEX: Final = re.compile(r"[0-9a-fA-F]+")
_log = logging.getLogger("ordertrail.propagation")


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A parsed ``traceparent``: ids as lowercase hex, as hop events carry them."""

    trace_id: str
    span_id: str
    sampled: bool


def inject(carrier: MutableMapping[str, str], context: Context | None = None) -> MutableMapping[str, str]:
    """Write the W3C headers of ``context`` (default: the current one) into ``carrier``; returns it."""
    try:
        PROPAGATOR.inject(carrier, context)
    except Exception as exc:  # a carrier that refuses writes must not break the request
        _log.debug("could not inject trace context into %s: %r", type(carrier).__name__, exc)
    return carrier


def extract(carrier: Mapping[str, Any], context: Context | None = None) -> Context:
    """The context carried by ``carrier`` (HTTP headers), on top of ``context`` (default: empty).

    Bad or missing headers give back ``context`` (or an empty ``Context``) unchanged.
    """
    base = context if context is not None else Context()
    try:
        return PROPAGATOR.extract(carrier, base, getter=_HEADERS)
    except Exception as exc:
        _log.debug("ignored unusable trace context headers: %r", exc)
        return base


def record_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """The W3C headers of ``context`` as ``(key, UTF-8 bytes)`` pairs for a message record."""
    carrier: dict[str, str] = {}
    inject(carrier, context)
    return [(key, value.encode()) for key, value in carrier.items()]


def extract_record_headers(headers: Iterable[tuple[str, bytes | str | None]] | None) -> Context:
    """The context carried by a message's ``(key, value)`` headers; the first value of a key wins."""
    carrier: dict[str, Any] = {}
    try:
        for key, value in headers or ():
            carrier.setdefault(key, value)
    except Exception as exc:
        _log.debug("ignored unusable record headers: %r", exc)
    return extract(carrier)


def parse_traceparent(value: object) -> TraceParent | None:
    """A ``traceparent`` header value, or None when it is not a valid one (W3C rules)."""
    ctx = extract({TRACEPARENT: value})
    span = trace.get_current_span(ctx).get_span_context()
    if not span.is_valid:
        return None
    return TraceParent(
        trace.format_trace_id(span.trace_id), trace.format_span_id(span.span_id), span.trace_flags.sampled
    )


def format_traceparent(trace_id: str | int, span_id: str | int, *, sampled: bool = True) -> str:
    """``00-{trace_id}-{span_id}-{flags}``. Raises ValueError naming a bad id."""
    trace_int = _id(trace_id, 32, "trace_id")
    span_int = _id(span_id, 16, "span_id")
    return f"00-{trace_int:032x}-{span_int:016x}-{1 if sampled else 0:02x}"


def order_context(order_id: str, context: Context | None = None) -> Context:
    """``context`` (default: the current one) with ``order_id`` in baggage under ``app.order.id``.

    Attach it (``activated``) around outgoing calls, and ``inject`` carries the order id along.
    A non-string or empty order id leaves the context unchanged.
    """
    base = context if context is not None else otel_context.get_current()
    if not isinstance(order_id, str) or not order_id:
        return base
    return baggage.set_baggage(ORDER_ID_KEY, order_id, base)


def order_id_from(context: Context | None = None) -> str | None:
    """The order id in the baggage of ``context`` (default: the current one), if any."""
    try:
        value = baggage.get_baggage(ORDER_ID_KEY, context)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None


@contextmanager
def activated(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` the current context for the block, e.g. ``with activated(extract(headers)):``."""
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)


def _id(value: str | int, digits: int, name: str) -> int:
    number = -1
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _HEX.fullmatch(value) and len(value) == digits:
        number = int(value, 16)
    if not 0 < number < 16**digits:
        raise ValueError(f"{name}: {value!r} must be {digits} hex digits, not all zero")
    return number


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Case-insensitive lookup in any mapping; values may be str, bytes or lists of them."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        try:
            value = carrier.get(key)
            if value is None:
                value = _scan(carrier, key)
            if value is None:
                return None
            values = value if isinstance(value, list | tuple) else [value]
            texts = [_text(v) for v in values]
            return [t for t in texts if t is not None] or None
        except Exception:
            return None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        try:
            return [k for k in carrier if isinstance(k, str)]
        except Exception:
            return []


def _scan(carrier: Mapping[str, Any], key: str) -> Any:
    wsgi = "HTTP_" + key.upper().replace("-", "_")
    for name, value in carrier.items():
        if isinstance(name, str) and (name.lower() == key or name == wsgi):
            return value
    return None


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return None


_HEADERS: Final = _HeaderGetter()

__all__ = [
    "ORDER_ID_KEY",
    "PROPAGATOR",
    "TRACEPARENT",
    "TraceParent",
    "activated",
    "extract",
    "extract_record_headers",
    "format_traceparent",
    "inject",
    "order_context",
    "order_id_from",
    "parse_traceparent",
    "record_headers",
]
