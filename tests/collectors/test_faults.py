from __future__ import annotations

import pytest

from collectors.faults import (
    DELAYED,
    DROPPED,
    BreakConfirmations,
    DropAtEdge,
    Effect,
    FailHop,
    FaultSpecError,
    Ledger,
    SlowEdge,
    StopHop,
    compare,
    parse_fault,
    parse_schedule,
)
from tracer.model import MISSING, STALLED, Finding

T0 = 1_795_334_400_000  # 2026-11-22T08:00:00Z


@pytest.mark.parametrize(
    ("spec", "fault"),
    [
        (
            "drop:payment.authorized:0.3@30s+60s",
            DropAtEdge(hop="payment.authorized", share=0.3, start_ms=30_000, duration_ms=60_000),
        ),
        ("drop:payment.authorized:30%", DropAtEdge(hop="payment.authorized", share=0.3)),
        ("drop:payment.authorized", DropAtEdge(hop="payment.authorized", share=1.0)),
        ("slow:inventory.reserved:5x@1m", SlowEdge(hop="inventory.reserved", factor=5.0, start_ms=60_000)),
        ("slow:payment.authorized:+8s", SlowEdge(hop="payment.authorized", extra_ms=8000)),
        ("break@0s+2m", BreakConfirmations(hop="", duration_ms=120_000)),
        ("break:email.confirmation_sent", BreakConfirmations(hop="email.confirmation_sent")),
        ("stop:inventory.reserved@10s+30s", StopHop(hop="inventory.reserved", start_ms=10_000, duration_ms=30_000)),
        ("stop:inventory.reserved:lose", StopHop(hop="inventory.reserved", lose=True)),
        ("fail:payment.authorized:0.2:retry=5s", FailHop(hop="payment.authorized", share=0.2, retry_ms=5000)),
        ("fail:payment.authorized:retry=5s", FailHop(hop="payment.authorized", retry_ms=5000)),
        ("fail:payment.authorized", FailHop(hop="payment.authorized")),
    ],
)
def test_parse_fault_reads_each_kind_and_its_spec_parses_back(spec: str, fault: object) -> None:
    parsed = parse_fault(spec)
    assert parsed == fault
    assert parse_fault(parsed.spec()) == parsed


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("drip:payment.authorized", ["'drip'", "drop, slow, break, stop, fail"]),
        ("drop", ["needs a hop"]),
        ("drop:Payment", ["'Payment'", "hop name"]),
        ("drop:payment.authorized:1.5", ["share '1.5'", "0 to 1"]),
        ("drop:payment.authorized:lots", ["share 'lots'"]),
        ("drop:payment.authorized:0.3@30x", ["start '30x'", "duration"]),
        ("drop:payment.authorized:0.3@30s+soon", ["length 'soon'"]),
        ("drop:payment.authorized@5s+0s", ["length '0s'", "longer than 0"]),
        ("drop:payment.authorized:0.3:extra", ["'extra'", "drop:HOP[:SHARE]"]),
        ("slow:payment.authorized", ["factor like 5x"]),
        ("slow:payment.authorized:0x", ["slow factor '0x'"]),
        ("slow:payment.authorized:+later", ["extra time 'later'"]),
        ("stop:lose", ["needs a hop"]),
        ("fail:payment.authorized:0.2:retry=zz", ["retry 'zz'"]),
    ],
)
def test_parse_fault_errors_name_the_spec_and_the_bad_part(spec: str, names: list[str]) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault(spec)
    message = str(caught.value)
    assert message.startswith(f"fault {spec!r}: ")
    for name in names:
        assert name in message


def test_parse_schedule_keeps_the_order_and_stops_at_the_first_bad_spec() -> None:
    schedule = parse_schedule(["break", "stop:inventory.reserved@1m+30s"])
    assert [f.kind for f in schedule] == ["break", "stop"]
    with pytest.raises(FaultSpecError, match="'nope'"):
        parse_schedule(["break", "nope:x"])


def test_a_fault_is_active_from_its_start_until_before_its_end() -> None:
    fault = parse_fault("drop:payment.authorized@30s+60s")
    assert not fault.active(29_999)
    assert fault.active(30_000)
    assert fault.active(89_999)
    assert not fault.active(90_000)
    assert parse_fault("drop:payment.authorized@30s").active(10**9)


def test_ledger_windows_are_absolute_from_the_run_start() -> None:
    ledger = Ledger(parse_schedule(["drop:payment.authorized@30s+1m", "break@2m"]))
    ledger.begin(T0)
    first, second = ledger.windows()
    assert (first.index, first.start_ms, first.end_ms) == (0, T0 + 30_000, T0 + 90_000)
    assert (second.index, second.start_ms, second.end_ms) == (1, T0 + 120_000, None)


def test_ledger_filters_effects_and_summarises_them_per_fault() -> None:
    ledger = Ledger(parse_schedule(["drop:payment.authorized@0s+1m", "slow:inventory.reserved:3x"]))
    ledger.begin(T0)
    ledger.record(Effect("W-1", "web_order", "payment.authorized", 0, "drop", DROPPED, T0 + 500))
    ledger.record(Effect("W-2", "web_order", "inventory.reserved", 1, "slow", DELAYED, T0 + 900, T0 + 2700))
    assert [e.order_id for e in ledger.effects(fault=1)] == ["W-2"]
    assert [e.order_id for e in ledger.effects(effect=DROPPED)] == ["W-1"]
    summary = ledger.summary()
    assert summary[0].startswith("drop:payment.authorized:1@0s+1m: 2026-11-22T08:00:00.000Z")
    assert summary[0].endswith("1 dropped")
    assert "end of run: 1 delayed" in summary[1]


def _finding(order_id: str, hop: str, kind: str, detected_at: int) -> Finding:
    return Finding(order_id, "web_order", kind, hop, "checkout.placed", detected_at - 1, detected_at)


def test_compare_counts_injected_detected_missed_and_unexplained() -> None:
    ledger = Ledger(parse_schedule(["drop:payment.authorized@0s+1m"]))
    ledger.begin(T0)
    for n, at in ((1, 1_000), (2, 2_000), (3, 3_000)):
        ledger.record(Effect(f"W-{n}", "web_order", "payment.authorized", 0, "drop", DROPPED, T0 + at))
    findings = [
        _finding("W-1", "payment.authorized", STALLED, T0 + 6_000),
        _finding("W-1", "payment.authorized", MISSING, T0 + 11_000),
        _finding("W-2", "payment.authorized", MISSING, T0 + 12_000),
        _finding("W-9", "payment.authorized", MISSING, T0 + 13_000),
        _finding("W-3", "inventory.reserved", MISSING, T0 + 14_000),
    ]
    outcome = compare(ledger, findings)
    (report,) = outcome.reports
    assert (report.injected, report.detected, report.missed) == (3, 2, ["W-3"])
    assert report.first_effect_ms == T0 + 1_000
    assert report.detection_delay_ms == 5_000
    assert sorted(report.delays_ms) == [5_000, 10_000]
    assert sorted((f.order_id, f.hop) for f in outcome.unexplained) == [
        ("W-3", "inventory.reserved"),
        ("W-9", "payment.authorized"),
    ]
