"""The tap mapping: fields from paths or fixed values, value maps, time formats, attributes, and
errors that name the file, the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.taps.mapping import MappingError, load_mapping, parse_mapping
from tracer.errors import EventError
from tracer.model import derive_event_id

MAPPING = """
order_id: order.id
hop:
  field: type
  map: {OrderPlaced: checkout.placed, PaymentOk: payment.authorized, PaymentFailed: payment.authorized}
ts: {field: time, format: "%Y-%m-%d %H:%M:%S,%f", tz: "+01:00"}
status: {field: type, map: {PaymentFailed: error}, default: ok}
service: {value: legacy-billing}
customer_id: customer
attrs: [amount, {currency: money.cur}]
"""

LINE = {
    "order": {"id": 1234},
    "type": "PaymentOk",
    "time": "2026-11-22 11:02:03,123000",
    "customer": "c-9",
    "amount": 42.5,
    "money": {"cur": "EUR"},
}


def test_a_line_becomes_a_hop_event_by_the_mapping() -> None:
    ev = parse_mapping(MAPPING).apply(LINE)
    assert ev is not None
    assert (ev.order_id, ev.hop, ev.status, ev.service, ev.customer_id) == (
        "1234",
        "payment.authorized",
        "ok",
        "legacy-billing",
        "c-9",
    )
    assert ev.ts == 1_795_341_723_123  # 10:02:03.123Z: the pattern's time is at +01:00
    assert ev.attrs == {"amount": "42.5", "currency": "EUR"}
    assert ev.event_id == derive_event_id("1234", "payment.authorized", ev.ts)


def test_the_status_value_map_and_its_default() -> None:
    ev = parse_mapping(MAPPING).apply({**LINE, "type": "PaymentFailed"})
    assert ev is not None and ev.status == "error"


def test_hop_values_outside_the_map_are_skipped_by_default() -> None:
    assert parse_mapping(MAPPING).apply({**LINE, "type": "Heartbeat"}) is None


def test_unmapped_reject_names_the_field_the_path_and_the_value() -> None:
    mapping = parse_mapping(
        MAPPING.replace("PaymentFailed: payment.authorized}", "PaymentFailed: payment.authorized}\n  unmapped: reject")
    )
    with pytest.raises(EventError, match=r"hop \(from type\): 'Heartbeat' is not in the map"):
        mapping.apply({**LINE, "type": "Heartbeat"})


def test_a_missing_required_field_names_its_path() -> None:
    with pytest.raises(EventError, match=r"order_id \(from order.id\): is missing"):
        parse_mapping(MAPPING).apply({k: v for k, v in LINE.items() if k != "order"})


def test_a_bad_time_names_the_format_and_value() -> None:
    with pytest.raises(EventError, match=r"ts \(from time\): 'yesterday' is not a time in format"):
        parse_mapping(MAPPING).apply({**LINE, "time": "yesterday"})


def test_contract_rules_apply_after_mapping() -> None:
    mapping = parse_mapping("order_id: id\nhop: {field: step}\nts: {field: t, format: epoch_s}\n")
    with pytest.raises(EventError, match=r"^hop: 'Not A Hop' must match"):
        mapping.apply({"id": "o-1", "step": "Not A Hop", "t": 1_795_341_723})
    ev = mapping.apply({"id": "o-1", "step": "checkout.placed", "t": 1_795_341_723.5})
    assert ev is not None and ev.ts == 1_795_341_723_500


@pytest.mark.parametrize(
    ("fmt", "value", "ms"),
    [
        ("auto", "2026-11-22T10:02:03.123Z", 1_795_341_723_123),
        ("auto", 1_795_341_723_123, 1_795_341_723_123),
        ("rfc3339", "2026-11-22T11:02:03.123+01:00", 1_795_341_723_123),
        ("epoch_ms", "1795341723123", 1_795_341_723_123),
        ("epoch_us", 1_795_341_723_123_456, 1_795_341_723_123),
        ("epoch_ns", 1_795_341_723_123_456_789, 1_795_341_723_123),
    ],
)
def test_time_formats(fmt: str, value: object, ms: int) -> None:
    mapping = parse_mapping(f"order_id: id\nhop: {{value: checkout.placed}}\nts: {{field: t, format: '{fmt}'}}\n")
    ev = mapping.apply({"id": "o-1", "t": value})
    assert ev is not None and ev.ts == ms


def test_record_facts_key_and_timestamp() -> None:
    mapping = parse_mapping("order_id: '@key'\nhop: {value: checkout.placed}\nts: '@timestamp'\n")
    ev = mapping.apply({}, {"@key": "o-7", "@timestamp": 1_795_341_723_123})
    assert ev is not None and (ev.order_id, ev.ts) == ("o-7", 1_795_341_723_123)


def test_a_line_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(EventError, match="must be a JSON object"):
        parse_mapping(MAPPING).apply([1, 2])


def test_invalid_mapping_files_list_every_problem_with_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "order_id: {field: a, value: b}\n"
        "hop: {field: t, map: [x]}\n"
        "ts: {field: t, format: julian, tz: Mars/Olympus}\n"
        "status: {field: s, unmapped: keep}\n"
        "colour: red\n"
        "attrs: [{'': x}]\n"
    )
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    text = str(err.value)
    for expected in (
        f"{path}: field 'order_id': give exactly one of 'field'",
        f"{path}: field 'hop', key 'map': ['x'] must be a non-empty mapping",
        f"{path}: field 'ts', key 'format': 'julian' must be one of",
        f"{path}: field 'ts', key 'tz': 'Mars/Olympus' must be UTC",
        f"{path}: field 'status', key 'unmapped': needs a 'map'",
        f"{path}: field 'colour' is not known",
        f"{path}: field 'attrs': attribute name '' must be 1–64 characters",
    ):
        assert expected in text, text


def test_required_fields_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="field 'ts' is required"):
        parse_mapping("order_id: id\nhop: h\n")
    with pytest.raises(MappingError, match="cannot be read"):
        load_mapping(tmp_path / "absent.yaml")
    with pytest.raises(MappingError, match="not valid YAML"):
        parse_mapping("order_id: [")


def test_the_example_mapping_file_works() -> None:
    mapping = load_mapping(Path(__file__).parents[3] / "examples" / "tap-mapping.yaml")
    line = {"ts": "2026-11-22 11:02:03,123", "level": "ERROR", "evt": "PaymentFailed", "order": {"id": 1234}}
    ev = mapping.apply(line)
    assert ev is not None and (ev.order_id, ev.hop, ev.status, ev.ts) == (
        "1234",
        "payment.authorized",
        "error",
        1_795_341_723_123,
    )
