"""Hop events (CONTRACT §1): every rule of every field, unknown and missing fields, wrong types,
the two body shapes (JSON array, NDJSON), bodies that are not JSON, and that a rejection names the
field, the value and the rule while the other items of the body still get through."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tracer.errors import BodyError, EventError
from tracer.events import decode_batch, decode_line, validate
from tracer.model import EVENT_FIELDS, derive_event_id, derive_trace_id, event_to_wire

TS = 1_795_341_723_123
TS_TEXT = "2026-11-22T10:02:03.123Z"
GOOD: dict[str, Any] = {"order_id": "ord-1", "hop": "payment.authorized", "ts": TS_TEXT}


def line(**fields: Any) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


def without(name: str) -> bytes:
    return json.dumps({k: v for k, v in GOOD.items() if k != name}).encode()


def rejected(raw: bytes) -> EventError:
    with pytest.raises(EventError) as err:
        decode_line(raw)
    return err.value


# -- valid events and their defaults -----------------------------------------------------------


def test_a_minimal_event_gets_its_defaults() -> None:
    ev = decode_line(line())
    assert (ev.order_id, ev.hop, ev.ts, ev.status) == ("ord-1", "payment.authorized", TS, "ok")
    assert ev.event_id == derive_event_id("ord-1", "payment.authorized", TS)
    assert ev.trace_id == derive_trace_id("ord-1")
    assert (ev.span_id, ev.service, ev.journey, ev.customer_id, ev.attrs) == ("", "", "", "", {})


def test_the_default_event_id_is_a_stable_hash_of_order_hop_and_time() -> None:
    as_text = decode_line(line())
    as_ms = decode_line(line(ts=TS))
    assert as_text.event_id == as_ms.event_id
    assert decode_line(line(ts=TS + 1)).event_id != as_text.event_id
    assert decode_line(line(hop="inventory.reserved")).event_id != as_text.event_id
    assert decode_line(line(order_id="ord-2")).event_id != as_text.event_id


def test_every_hop_of_an_order_shares_the_derived_trace_id() -> None:
    a = decode_line(line())
    b = decode_line(line(hop="checkout.placed", ts=TS - 5000))
    assert a.trace_id == b.trace_id
    assert len(a.trace_id) == 32 and a.trace_id == a.trace_id.lower() and a.trace_id.strip("0")
    assert decode_line(line(order_id="ord-2")).trace_id != a.trace_id


def test_a_full_event_keeps_every_field() -> None:
    fields = {
        "event_id": "evt-42",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "00f067aa0ba902b8",
        "service": "payments",
        "status": "error",
        "journey": "web_order",
        "customer_id": "cus-7",
        "attrs": {"psp": "adyen", "amount": "12.50"},
    }
    ev = decode_line(line(**fields))
    for name, value in fields.items():
        assert getattr(ev, name) == value


def test_an_event_goes_to_the_wire_and_back_unchanged() -> None:
    ev = decode_line(line(service="payments", status="error", attrs={"k": "v"}, customer_id="c"))
    assert decode_line(msgspec.json.encode(event_to_wire(ev))) == ev


def test_validate_applies_the_same_rules_to_a_parsed_mapping() -> None:
    assert validate(GOOD) == decode_line(line())
    with pytest.raises(EventError, match="hop: 'Payment' must match"):
        validate({**GOOD, "hop": "Payment"})
    with pytest.raises(EventError, match="order_id: 5 must be a string"):
        validate({**GOOD, "order_id": 5})


# -- each field's rules ------------------------------------------------------------------------

LONG = "x" * 129


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("order_id", "", "must be 1–128 printable characters"),
        ("order_id", LONG, "must be 1–128 printable characters"),
        ("order_id", "ord\n1", "must be 1–128 printable characters"),
        ("order_id", "ord\x001", "must be 1–128 printable characters"),
        ("hop", "", "must match [a-z0-9_.-]{1,64}"),
        ("hop", "Payment.Authorized", "must match [a-z0-9_.-]{1,64}"),
        ("hop", "payment authorized", "must match [a-z0-9_.-]{1,64}"),
        ("hop", "payment/authorized", "must match [a-z0-9_.-]{1,64}"),
        ("hop", "h" * 65, "must match [a-z0-9_.-]{1,64}"),
        ("event_id", "", "must be 1–128 printable characters"),
        ("event_id", LONG, "must be 1–128 printable characters"),
        ("event_id", "evt\t1", "must be 1–128 printable characters"),
        ("trace_id", "0" * 32, "must be 32 lowercase hex digits, not all zero"),
        ("trace_id", "4BF92F3577B34DA6A3CE929D0E0E4736", "must be 32 lowercase hex digits"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e473", "must be 32 lowercase hex digits"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e47360", "must be 32 lowercase hex digits"),
        ("trace_id", "zbf92f3577b34da6a3ce929d0e0e4736", "must be 32 lowercase hex digits"),
        ("span_id", "00F067AA0BA902B7", "must be 16 lowercase hex digits"),
        ("span_id", "00f067aa0ba902b", "must be 16 lowercase hex digits"),
        ("span_id", "", "must be 16 lowercase hex digits"),
        ("parent_span_id", "xyz", "must be 16 lowercase hex digits"),
        ("service", "", "must be 1–128 printable characters"),
        ("service", LONG, "must be 1–128 printable characters"),
        ("status", "ERROR", "must be 'ok' or 'error'"),
        ("status", "failed", "must be 'ok' or 'error'"),
        ("status", "", "must be 'ok' or 'error'"),
        ("journey", "", "must be a journey name of 1–64 printable characters"),
        ("journey", "j" * 65, "must be a journey name of 1–64 printable characters"),
        ("customer_id", "", "must be 1–128 printable characters"),
        ("customer_id", LONG, "must be 1–128 printable characters"),
    ],
)
def test_a_field_breaking_its_rule_is_rejected_naming_field_value_and_rule(field: str, value: str, rule: str) -> None:
    err = rejected(line(**{field: value}))
    assert err.field == field
    assert str(err).startswith(f"{field}: ")
    assert repr(value)[:40] in str(err)
    assert rule in str(err)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("order_id", 12345),
        ("order_id", None),
        ("hop", 7),
        ("hop", ["payment.authorized"]),
        ("event_id", 42),
        ("trace_id", 5),
        ("span_id", False),
        ("parent_span_id", 1.5),
        ("service", {"name": "payments"}),
        ("status", True),
        ("journey", 3),
        ("customer_id", 99),
    ],
)
def test_a_field_of_the_wrong_type_is_rejected_naming_field_value_and_type(field: str, value: object) -> None:
    err = rejected(line(**{field: value}))
    assert err.field == field
    assert str(err).startswith(f"{field}: {value!r}")
    assert "must be" in str(err) and "expected `str" in str(err)


@pytest.mark.parametrize("value", [True, None, [TS], {"ms": TS}])
def test_a_time_of_the_wrong_type_is_rejected_naming_it(value: object) -> None:
    err = rejected(line(ts=value))
    assert err.field == "ts"
    assert str(err).startswith(f"ts: {value!r} is not RFC 3339 with a time zone")


def test_epoch_seconds_are_rejected_with_a_hint() -> None:
    err = rejected(line(ts=TS // 1000))
    assert err.field == "ts"
    assert str(err) == (
        "ts: 1795341723 is before 2000-01-01 (it looks like seconds; give milliseconds); "
        "ts takes RFC 3339 with a time zone (2026-11-22T10:02:03.123Z) or epoch milliseconds"
    )


def test_epoch_milliseconds_are_accepted_as_a_number() -> None:
    assert decode_line(line(ts=TS)).ts == TS


def test_a_naive_timestamp_is_rejected_asking_for_a_zone() -> None:
    err = rejected(line(ts="2026-11-22T10:02:03.123"))
    assert err.field == "ts"
    assert "'2026-11-22T10:02:03.123' has no time zone; add Z for UTC" in str(err)


def test_a_timestamp_in_another_zone_is_converted_to_utc() -> None:
    assert decode_line(line(ts="2026-11-22T11:02:03.123+01:00")).ts == TS


# -- unknown and missing fields ----------------------------------------------------------------


def test_an_unknown_field_is_rejected_listing_the_allowed_ones() -> None:
    err = rejected(line(customer="C-508"))
    assert err.field == "customer"
    assert str(err) == f"customer: 'C-508' is not a hop event field; allowed: {', '.join(EVENT_FIELDS)}"


@pytest.mark.parametrize("name", ["order_id", "hop", "ts"])
def test_a_missing_required_field_is_rejected_naming_it(name: str) -> None:
    err = rejected(without(name))
    assert err.field == name
    assert str(err) == f"{name}: is required"


@pytest.mark.parametrize("name", ["event_id", "trace_id", "span_id", "service", "status", "journey", "attrs"])
def test_an_optional_field_given_as_null_counts_as_absent(name: str) -> None:
    assert decode_line(line(**{name: None})) == decode_line(line())


@pytest.mark.parametrize("raw", [b"[1]", b'"payment"', b"42", b"null", b"true"])
def test_an_item_that_is_not_an_object_is_rejected(raw: bytes) -> None:
    err = rejected(raw)
    assert err.field == "event"
    assert "must be a JSON object with the fields order_id, hop, ts" in str(err)


# -- attrs ---------------------------------------------------------------------------------------


def test_attrs_at_their_limits_are_accepted() -> None:
    attrs = {f"k{i:02d}".ljust(64, "x"): "v" * 1024 for i in range(64)}
    assert decode_line(line(attrs=attrs)).attrs == attrs


def test_more_than_64_attrs_are_rejected() -> None:
    err = rejected(line(attrs={f"k{i}": "v" for i in range(65)}))
    assert err.field == "attrs"
    assert "'<65 keys>' may have at most 64 keys" in str(err)


def test_an_attr_key_longer_than_64_is_rejected() -> None:
    key = "k" * 65
    err = rejected(line(attrs={key: "v"}))
    assert err.field.startswith("attrs.")
    assert "keys must be 1–64 characters" in str(err)


def test_an_empty_attr_key_is_rejected() -> None:
    err = rejected(line(attrs={"": "v"}))
    assert "keys must be 1–64 characters" in str(err)


def test_an_attr_value_longer_than_1024_is_rejected_naming_its_key() -> None:
    err = rejected(line(attrs={"note": "v" * 1025}))
    assert err.field == "attrs.note"
    assert "values may be at most 1024 characters" in str(err)
    assert len(str(err)) < 300  # the value is shown truncated


def test_an_attr_value_that_is_not_a_string_is_rejected_naming_key_and_value() -> None:
    err = rejected(line(attrs={"amount": 12.5}))
    assert err.field == "attrs.amount"
    assert str(err) == "attrs.amount: 12.5 must be a string (attrs map strings to strings)"


@pytest.mark.parametrize("value", [["a"], "a=b", 5])
def test_attrs_that_are_not_an_object_are_rejected(value: object) -> None:
    err = rejected(line(attrs=value))
    assert err.field == "attrs"
    assert str(err) == f"attrs: {value!r} must be an object of string keys to string values"


# -- bodies ------------------------------------------------------------------------------------

GOOD_LINE = line().decode()
BAD_LINE = line(hop="Bad Hop").decode()


def test_a_json_array_body_gives_its_events_in_order() -> None:
    body = json.dumps([GOOD, {**GOOD, "hop": "inventory.reserved"}])
    batch = decode_batch(body)
    assert [e.hop for e in batch.events] == ["payment.authorized", "inventory.reserved"]
    assert batch.rejected == []


def test_an_ndjson_body_gives_its_events_in_order() -> None:
    batch = decode_batch(f"{GOOD_LINE}\n{line(hop='inventory.reserved').decode()}\n")
    assert [e.hop for e in batch.events] == ["payment.authorized", "inventory.reserved"]


def test_one_bad_item_in_an_array_never_loses_the_others() -> None:
    body = f"[{GOOD_LINE}, {BAD_LINE}, {line(order_id=5).decode()}, {GOOD_LINE}]"
    batch = decode_batch(body)
    assert len(batch.events) == 2
    assert [i for i, _ in batch.rejected] == [1, 2]
    assert batch.rejected[0][1].startswith("hop: 'Bad Hop' must match")
    assert batch.rejected[1][1].startswith("order_id: 5 must be a string")


def test_one_bad_line_in_ndjson_never_loses_the_others_and_is_located_by_line() -> None:
    body = f"{GOOD_LINE}\n\n{BAD_LINE}\nnot json at all\n{GOOD_LINE}\r\n"
    batch = decode_batch(body)
    assert len(batch.events) == 2
    assert [i for i, _ in batch.rejected] == [2, 3]  # 0-based line numbers, blank lines counted
    assert batch.rejected[0][1].startswith("hop: 'Bad Hop'")
    assert batch.rejected[1][1].startswith("body: is not a JSON object")


def test_an_array_of_things_that_are_not_events_is_rejected_item_by_item() -> None:
    batch = decode_batch(b"[1, null, {}]")
    assert batch.events == []
    assert [i for i, _ in batch.rejected] == [0, 1, 2]
    assert batch.rejected[2][1] == "order_id: is required"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"not json\nnor this", b"[", b"[" + line() + b", garbage]", b"[" + line() + b"] trailing", b"{{}"],
)
def test_a_body_that_is_not_json_at_all_raises_body_error(body: bytes) -> None:
    with pytest.raises(BodyError):
        decode_batch(body)


def test_an_empty_body_or_array_has_no_events() -> None:
    assert decode_batch(b"").events == []
    assert decode_batch(b"  \n ").rejected == []
    assert decode_batch(b"[]").events == []


def test_a_body_with_a_byte_order_mark_is_read() -> None:
    assert len(decode_batch("\ufeff" + GOOD_LINE).events) == 1
    assert len(decode_batch(("\ufeff[" + GOOD_LINE + "]").encode()).events) == 1


def test_a_body_may_be_text_or_bytes() -> None:
    assert decode_batch(GOOD_LINE).events == decode_batch(GOOD_LINE.encode()).events
