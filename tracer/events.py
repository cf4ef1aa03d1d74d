"""Decoding and validating hop events (CONTRACT §1) — the ingest hot path.

``decode_batch`` takes a JSON array or NDJSON body and returns the valid events and, for every
rejected item, its index and a reason that names the field, the value and the rule. One bad item
never costs the others. ``validate`` does the same for one already-parsed mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

import msgspec

from tracer.errors import ABSENT, BodyError, EventError
from tracer.model import (
    ATTRS,
    CUSTOMER_ID,
    EVENT_FIELDS,
    EVENT_ID,
    HOP,
    JOURNEY,
    ORDER_ID,
    PARENT_SPAN_ID,
    SERVICE,
    SPAN_ID,
    STATUS,
    STATUS_ERROR,
    STATUS_OK,
    TRACE_ID,
    TS,
    HopEvent,
    derive_event_id,
    derive_trace_id,
)
from tracer.times import MAX_TS_MS, MIN_TS_MS, parse_ts
from tracer.wire import MAX_ID, Batch, Valid, Wire

HOP_RE: Final = re.compile(r"[a-z0-9_.-]{1,64}")
HOP_RULE: Final = "must match [a-z0-9_.-]{1,64}: lowercase letters, digits, '_', '.', '-', e.g. payment.authorized"
_TRACE_RE: Final = re.compile(r"[0-9a-f]{32}")
_SPAN_RE: Final = re.compile(r"[0-9a-f]{16}")
_TRACE_OK: Final = re.compile(r"(?!0{32})[0-9a-f]{32}")  # the whole trace id rule in one match
_HOPS: Final[set[str]] = set()  # hop names seen valid: most inputs have a few dozen
_HOPS_MAX: Final = 4096
MAX_ATTRS: Final = 64
MAX_ATTR_KEY: Final = 64
MAX_ATTR_VALUE: Final = 1024


_ARRAY = msgspec.json.Decoder(list[Wire])
_ONE = msgspec.json.Decoder(Wire)
_VALID_ARRAY = msgspec.json.Decoder(list[Valid])
_VALID_ONE = msgspec.json.Decoder(Valid)
_RAW_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_FIELDS: Final = msgspec.structs.astuple  # a Wire's fields in declaration order
_BOM: Final = "\ufeff".encode()


def decode_batch(body: bytes | str) -> Batch:
    """A JSON array or NDJSON of hop events. Raises BodyError when the body is not JSON at all."""
    data = body.encode() if isinstance(body, str) else body
    if data.startswith(_BOM):
        data = data[len(_BOM) :]  # some Windows tools write one; it is not part of the JSON
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        return _decode_array(data)
    return _decode_lines(data)


def decode_line(line: bytes | str | msgspec.Raw) -> HopEvent:
    """One JSON object (an NDJSON line). Raises EventError."""
    try:
        valid = _VALID_ONE.decode(line)
    except msgspec.ValidationError:
        pass  # a rule is broken: the careful way below says which
    except msgspec.DecodeError as exc:
        raise EventError("body", ABSENT, f"is not a JSON object ({exc})") from None
    else:
        ev = _fast(valid)
        return ev if ev is not None else _checked(valid)
    try:
        wire = _ONE.decode(line)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(str(exc), msgspec.json.decode(line)) from None
    return _checked(wire)


def validate(obj: Mapping[str, object]) -> HopEvent:
    """One event already parsed into a mapping (taps, OTLP). Raises EventError."""
    try:
        valid = msgspec.convert(obj, Valid)
    except msgspec.ValidationError:
        pass  # a rule is broken: the careful way below says which
    else:
        ev = _fast(valid)
        return ev if ev is not None else _checked(valid)
    try:
        wire = msgspec.convert(obj, Wire)
    except msgspec.ValidationError as exc:
        raise _from_msgspec(str(exc), obj) from None
    return _checked(wire)


def _decode_array(data: bytes) -> Batch:
    try:
        valids = _VALID_ARRAY.decode(data)
    except msgspec.ValidationError:
        pass  # some items break a rule: the careful way below
    except msgspec.DecodeError as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from None
    else:
        events: list[HopEvent] = []
        rejected: list[tuple[int, str]] = []
        for i, valid in enumerate(valids):
            ev = _fast(valid)
            if ev is None:
                try:
                    ev = _checked(valid)
                except EventError as exc:
                    rejected.append((i, str(exc)))
                    continue
            events.append(ev)
        return Batch(events, rejected)
    try:
        wires = _ARRAY.decode(data)
    except msgspec.ValidationError:
        pass  # some items are bad: decode them one by one below
    else:
        events = []
        rejected = []
        for i, wire in enumerate(wires):
            try:
                events.append(_checked(wire))
            except EventError as exc:
                rejected.append((i, str(exc)))
        return Batch(events, rejected)
    try:
        raws = _RAW_ARRAY.decode(data)
    except msgspec.ValidationError as exc:
        raise BodyError(f"expected a JSON array of hop events or NDJSON: {exc}") from None
    events = []
    rejected = []
    for i, raw in enumerate(raws):
        try:
            events.append(decode_line(raw))
        except EventError as exc:
            rejected.append((i, str(exc)))
    return Batch(events, rejected)


def _decode_lines(data: bytes) -> Batch:
    events: list[HopEvent] = []
    rejected: list[tuple[int, str]] = []
    parsed_any = False
    for i, line in enumerate(data.split(b"\n")):
        if not line.strip():
            continue
        try:
            events.append(decode_line(line))
            parsed_any = True
        except EventError as exc:
            if exc.field != "body":
                parsed_any = True
            rejected.append((i, str(exc)))
    if rejected and not parsed_any:
        raise BodyError("the body is neither a JSON array nor NDJSON (one JSON object a line)")
    return Batch(events, rejected)


def _fast(w: Wire) -> HopEvent | None:
    """The event of an item that decoded as a ``Valid`` (msgspec checked the lengths and the
    status), after the checks msgspec left to us; None when one of them fails (the caller then
    asks ``_checked``, which words the reason). It accepts exactly what ``_checked`` accepts
    (tests/tracer/test_events_fast.py)."""
    # One call for all the fields (in Wire's order; Valid keeps it): compiled, each attribute
    # read of a Struct would be a generic lookup.
    fields = _FIELDS(w)
    order_id: str = fields[0]
    hop: str = fields[1]
    ts: str | int | float = fields[2]
    event_id: str | None = fields[3]
    trace_id: str | None = fields[4]
    span_id: str | None = fields[5]
    parent: str | None = fields[6]
    service: str | None = fields[7]
    status: str | None = fields[8]
    journey: str | None = fields[9]
    customer: str | None = fields[10]
    attrs: dict[str, str] | None = fields[11]
    if hop not in _HOPS:
        if HOP_RE.fullmatch(hop) is None:
            return None
        if len(_HOPS) >= _HOPS_MAX:
            _HOPS.clear()
        _HOPS.add(hop)
    if type(ts) is not int or not MIN_TS_MS <= ts < MAX_TS_MS:
        try:
            ts = parse_ts(ts)
        except ValueError:
            return None
    # Absent texts are "" (msgspec refused empty ones): one printable check covers them all.
    service = service or ""
    journey = journey or ""
    customer = customer or ""
    if not (order_id + service + journey + customer).isprintable():
        return None
    if event_id is None:
        event_id = derive_event_id(order_id, hop, ts)
    elif not event_id.isprintable():
        return None
    if trace_id is None:
        trace_id = derive_trace_id(order_id)
    elif _TRACE_OK.fullmatch(trace_id) is None:
        return None
    if span_id is None:
        span_id = ""
    elif _SPAN_RE.fullmatch(span_id) is None:
        return None
    if parent is None:
        parent = ""
    elif _SPAN_RE.fullmatch(parent) is None:
        return None
    if not attrs:
        attrs = {}
    elif len(attrs) > MAX_ATTRS:
        return None
    else:
        for key, value in attrs.items():  # compiled, a C loop (max(map(len, ...)) looks up builtins)
            if not key or len(key) > MAX_ATTR_KEY or len(value) > MAX_ATTR_VALUE:
                return None
    return HopEvent(
        order_id,
        hop,
        ts,
        event_id,
        trace_id,
        span_id,
        parent,
        service,
        STATUS_ERROR if status == STATUS_ERROR else STATUS_OK,
        journey,
        customer,
        attrs,
    )


def _checked(w: Wire) -> HopEvent:
    """The event, or an EventError naming the first rule ``w`` breaks: the field, the value and
    the rule. The rules of CONTRACT §1 are written out here, one by one, in field order."""
    order_id = w.order_id
    if not (0 < len(order_id) <= MAX_ID and order_id.isprintable()):
        raise EventError(ORDER_ID, order_id, "must be 1–128 printable characters")
    if HOP_RE.fullmatch(w.hop) is None:
        raise EventError(HOP, w.hop, HOP_RULE)
    try:
        parse_ts(w.ts)
    except ValueError as exc:
        raise EventError(TS, ABSENT, str(exc)) from None
    event_id = w.event_id
    if event_id is not None and not (0 < len(event_id) <= MAX_ID and event_id.isprintable()):
        raise EventError(EVENT_ID, event_id, "must be 1–128 printable characters")
    trace_id = w.trace_id
    if trace_id is not None and (_TRACE_RE.fullmatch(trace_id) is None or not trace_id.strip("0")):
        raise EventError(TRACE_ID, trace_id, "must be 32 lowercase hex digits, not all zero")
    if w.span_id is not None and _SPAN_RE.fullmatch(w.span_id) is None:
        raise EventError(SPAN_ID, w.span_id, "must be 16 lowercase hex digits")
    if w.parent_span_id is not None and _SPAN_RE.fullmatch(w.parent_span_id) is None:
        raise EventError(PARENT_SPAN_ID, w.parent_span_id, "must be 16 lowercase hex digits")
    service = w.service
    if service is not None and not (0 < len(service) <= MAX_ID and service.isprintable()):
        raise EventError(SERVICE, service, "must be 1–128 printable characters")
    if w.status is not None and w.status != STATUS_OK and w.status != STATUS_ERROR:
        raise EventError(STATUS, w.status, "must be 'ok' or 'error'")
    journey = w.journey
    if journey is not None and not (0 < len(journey) <= 64 and journey.isprintable()):
        raise EventError(JOURNEY, journey, "must be a journey name of 1–64 printable characters")
    customer = w.customer_id
    if customer is not None and not (0 < len(customer) <= MAX_ID and customer.isprintable()):
        raise EventError(CUSTOMER_ID, customer, "must be 1–128 printable characters")
    if w.attrs:
        _check_attrs(w.attrs)
    ev = _fast(w)  # every rule holds: the fast way builds the event
    if ev is None:  # pragma: no cover - the fast way accepts what passes the checks above
        raise EventError("event", ABSENT, "breaks a rule the checks above missed")
    return ev


def _check_attrs(attrs: dict[str, str]) -> None:
    if len(attrs) > MAX_ATTRS:
        raise EventError(ATTRS, f"<{len(attrs)} keys>", f"may have at most {MAX_ATTRS} keys")
    for key, value in attrs.items():
        if not 0 < len(key) <= MAX_ATTR_KEY:
            raise EventError(f"{ATTRS}.{key[:64]}", key, f"keys must be 1–{MAX_ATTR_KEY} characters")
        if len(value) > MAX_ATTR_VALUE:
            raise EventError(f"{ATTRS}.{key}", value, f"values may be at most {MAX_ATTR_VALUE} characters")


_MSGSPEC_AT = re.compile(r" - at `\$(?:\[\d+\])?\.?([^`]*)`$")
_TYPE_RULES: Final = {
    ORDER_ID: "must be a string of 1–128 printable characters",
    HOP: "must be a string matching [a-z0-9_.-]{1,64}, e.g. payment.authorized",
    EVENT_ID: "must be a string of 1–128 printable characters",
    TRACE_ID: "must be a string of 32 lowercase hex digits",
    SPAN_ID: "must be a string of 16 lowercase hex digits",
    PARENT_SPAN_ID: "must be a string of 16 lowercase hex digits",
    SERVICE: "must be a string of 1–128 printable characters",
    STATUS: "must be 'ok' or 'error'",
    JOURNEY: "must be a string: a journey name of 1–64 printable characters",
    CUSTOMER_ID: "must be a string of 1–128 printable characters",
}
_ATTRS_RULE: Final = "must be an object of string keys to string values"


def _from_msgspec(message: str, item: object) -> EventError:
    """Turn msgspec's message into one that names the field, the value and the rule. ``item`` is
    the offending event as plain JSON data, to show the value (this is the error path: no hurry)."""
    where = _MSGSPEC_AT.search(message)
    path = where.group(1) if where else ""
    text = message[: where.start()] if where else message
    if text.startswith("Object contains unknown field"):
        name = text.split("`")[1]
        value = item.get(name, ABSENT) if isinstance(item, Mapping) else ABSENT
        return EventError(name, value, f"is not a hop event field; allowed: {', '.join(EVENT_FIELDS)}")
    if text.startswith("Object missing required field"):
        name = text.split("`")[1]
        return EventError(name, ABSENT, "is required")
    if not isinstance(item, Mapping):
        return EventError("event", item, f"must be a JSON object with the fields {', '.join(EVENT_FIELDS)}")
    if path == "" and "key" in message:
        bad = next((k for k in item if not isinstance(k, str)), ABSENT)
        return EventError("event", bad, "field names must be strings")
    field = path.split(".")[0].split("[")[0] if path else "event"
    value = item.get(field, ABSENT)
    if field == ATTRS:
        if isinstance(value, Mapping):
            bad = next(((k, v) for k, v in value.items() if not isinstance(v, str)), None)
            if bad is not None:
                return EventError(
                    f"{ATTRS}.{str(bad[0])[:MAX_ATTR_KEY]}", bad[1], "must be a string (attrs map strings to strings)"
                )
        return EventError(ATTRS, value, _ATTRS_RULE)
    if field == TS:
        try:
            parse_ts(value)
        except ValueError as exc:
            return EventError(TS, ABSENT, str(exc))
    rule = _TYPE_RULES.get(field, text[0].lower() + text[1:] if text else "is invalid")
    return EventError(field, value, f"{rule} ({text[0].lower() + text[1:]})" if text else rule)


__all__ = ["Batch", "decode_batch", "decode_line", "validate"]
