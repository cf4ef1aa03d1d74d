"""W3C trace context and baggage: round trips, the order id in baggage, and bad input ignored."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

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

TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def span_context(ctx: Context) -> SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def a_trace() -> Context:
    sc = SpanContext(trace_id=TRACE, span_id=SPAN, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(sc))


def test_inject_then_extract_carries_the_trace_and_span_ids() -> None:
    headers = inject({}, a_trace())
    assert headers["traceparent"] == TRACEPARENT
    got = span_context(extract(headers))
    assert (got.trace_id, got.span_id, got.is_remote, got.trace_flags.sampled) == (TRACE, SPAN, True, True)


def test_inject_uses_the_current_context_by_default() -> None:
    with activated(a_trace()):
        assert inject({})["traceparent"] == TRACEPARENT


def test_inject_without_a_trace_writes_nothing() -> None:
    assert inject({}, Context()) == {}


def test_the_order_id_travels_in_baggage() -> None:
    headers = inject({}, order_context("o-1", a_trace()))
    assert headers["baggage"] == "app.order.id=o-1"
    ctx = extract(headers)
    assert order_id_from(ctx) == "o-1"
    assert span_context(ctx).trace_id == TRACE


def test_order_context_ignores_an_order_id_that_is_not_a_string() -> None:
    ctx = a_trace()
    assert order_context(42, ctx) is ctx  # type: ignore[arg-type]
    assert order_context("", ctx) is ctx


def test_order_id_from_a_context_without_baggage_is_none() -> None:
    assert order_id_from(Context()) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Traceparent": TRACEPARENT},
        {"TRACEPARENT": TRACEPARENT},
        {"HTTP_TRACEPARENT": TRACEPARENT},
        {"traceparent": TRACEPARENT.encode()},
        {"traceparent": [TRACEPARENT]},
    ],
    ids=["capitalised", "upper", "wsgi", "bytes", "list"],
)
def test_extract_finds_the_header_however_the_carrier_spells_it(headers: dict[str, Any]) -> None:
    assert span_context(extract(headers)).trace_id == TRACE


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        TRACEPARENT + "-extra",  # version 00 has no more fields
        TRACEPARENT[:-3],  # truncated
        TRACEPARENT + " " * 600,  # oversized
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        b"\xff\xfe\x00",
        None,
        42,
        [None, 3],
        {"nested": "dict"},
    ],
)
def test_a_bad_traceparent_is_ignored(value: object) -> None:
    ctx = extract({"traceparent": value, "tracestate": value, "baggage": value})
    assert not span_context(ctx).is_valid
    assert parse_traceparent(value) is None


@pytest.mark.parametrize(
    "baggage",
    ["app.order.id", "=;=;,,", "app.order.id=" + "x" * 9000, "ключ=значение", "app order id=o-1"],
)
def test_a_bad_baggage_header_is_ignored(baggage: str) -> None:
    ctx = extract({"traceparent": TRACEPARENT, "baggage": baggage})
    assert order_id_from(ctx) is None
    assert span_context(ctx).trace_id == TRACE


class _Unreadable(dict[str, str]):
    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("broken carrier")

    def items(self) -> Any:
        raise RuntimeError("broken carrier")


class _ReadOnly(dict[str, str]):
    def __setitem__(self, key: str, value: str) -> None:
        raise TypeError("read only")


def test_an_unreadable_carrier_gives_an_empty_context() -> None:
    assert not span_context(extract(_Unreadable())).is_valid
    assert not span_context(extract(None)).is_valid  # type: ignore[arg-type]
    assert not span_context(extract(["traceparent", TRACEPARENT])).is_valid  # type: ignore[arg-type]


def test_a_carrier_that_refuses_writes_is_left_alone() -> None:
    carrier: MutableMapping[str, str] = _ReadOnly()
    assert inject(carrier, a_trace()) is carrier
    assert dict(carrier) == {}


def test_record_headers_round_trip() -> None:
    headers = record_headers(order_context("o-7", a_trace()))
    assert ("traceparent", TRACEPARENT.encode()) in headers
    ctx = extract_record_headers(headers)
    assert span_context(ctx).span_id == SPAN
    assert order_id_from(ctx) == "o-7"


def test_the_first_record_header_of_a_key_wins() -> None:
    other = format_traceparent("1" * 32, "2" * 16)
    headers = [("traceparent", TRACEPARENT.encode()), ("traceparent", other)]
    assert span_context(extract_record_headers(headers)).trace_id == TRACE


@pytest.mark.parametrize("headers", [None, 5, [None], [("traceparent", None)], [("a", "b", "c")]])
def test_unusable_record_headers_give_an_empty_context(headers: Any) -> None:
    assert not span_context(extract_record_headers(headers)).is_valid


def test_parse_traceparent_gives_hex_ids_and_the_sampled_flag() -> None:
    assert parse_traceparent(TRACEPARENT) == TraceParent(f"{TRACE:032x}", f"{SPAN:016x}", True)
    assert parse_traceparent(TRACEPARENT[:-2] + "00") == TraceParent(f"{TRACE:032x}", f"{SPAN:016x}", False)


def test_format_traceparent_accepts_hex_or_integers() -> None:
    assert format_traceparent(TRACE, SPAN) == TRACEPARENT
    assert format_traceparent(f"{TRACE:032x}", f"{SPAN:016x}", sampled=False) == TRACEPARENT[:-2] + "00"


@pytest.mark.parametrize(
    ("trace_id", "span_id", "field"),
    [("0" * 32, "1" * 16, "trace_id"), ("xyz", "1" * 16, "trace_id"), ("1" * 32, "1" * 15, "span_id")],
)
def test_format_traceparent_names_the_bad_id(trace_id: str, span_id: str, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        format_traceparent(trace_id, span_id)


def test_activated_restores_the_previous_context() -> None:
    with activated(a_trace()):
        assert trace.get_current_span().get_span_context().trace_id == TRACE
    assert not trace.get_current_span().get_span_context().is_valid
