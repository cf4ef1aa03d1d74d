"""The order view and its plain-language explanation, from records built by hand."""

from __future__ import annotations

import re

import pytest

from tracer.clickhouse import OrderRecord
from tracer.engine import OrderSnapshot
from tracer.journeys import parse_journeys
from tracer.lookup import (
    VOCABULARY,
    build_order_view,
    explain_unknown,
    search_views,
    spoken_duration,
    spoken_time,
    wording,
)
from tracer.model import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    MISSING,
    OPEN,
    RESOLVED,
    STALLED,
    UNCONFIRMED,
    Finding,
    HopEvent,
    derive_event_id,
    derive_trace_id,
)
from tracer.times import parse_ts

JOURNEYS = parse_journeys(
    """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized:      {after: checkout.placed,    within: 30s}
      inventory.reserved:      {after: payment.authorized, within: 2m, stall_after: 20s}
      email.confirmation_sent: {after: payment.authorized, within: 5m, confirmation: true}
      fulfilment.shipped:      {after: inventory.reserved, within: 24h}
    complete: [fulfilment.shipped, email.confirmation_sent]
"""
)
CONTRACT_KEYS = {
    "order_id",
    "journey",
    "trace_id",
    "customer_id",
    "status",
    "explanation",
    "hops",
    "next",
    "findings",
    "incident",
}
T0 = parse_ts("2026-11-22T10:01:00Z")
PAID = T0 + 62_000  # 10:02:02
JARGON = re.compile(r"\b(hops?|spans?|findings?|traces?|journeys?|stalled|[a-z_]+\.[a-z_]+)\b", re.IGNORECASE)


def ev(hop: str, ts: int, *, status: str = "ok", service: str = "", oid: str = "A-1") -> HopEvent:
    return HopEvent(
        oid,
        hop,
        ts,
        derive_event_id(oid, hop, ts),
        derive_trace_id(oid),
        service=service,
        status=status,
        customer_id="c-9",
    )


def snap(
    hops: dict[str, int], *, status: str = IN_PROGRESS, next_hop: str = "", next_due: int = 0, open_: bool = True
) -> OrderSnapshot:
    ts = list(hops.values())
    return OrderSnapshot(
        "A-1",
        0,
        "web_order",
        derive_trace_id("A-1"),
        "c-9",
        status,
        list(hops),
        ts,
        [False] * len(ts),
        min(ts),
        max(ts),
        next_hop,
        next_due,
        open_,
        0,
        0,
        0,
        [],
        [],
    )


def finding(kind: str, hop: str, after: str, due: int, *, resolved_at: int | None = None, late: int = 0) -> Finding:
    status = OPEN if resolved_at is None else RESOLVED
    return Finding(
        "A-1",
        "web_order",
        kind,
        hop,
        after,
        due,
        due + 1000,
        status,
        resolved_at,
        None if resolved_at is None else late,
        derive_trace_id("A-1"),
        "c-9",
    )


def paid_record(*findings: Finding) -> OrderRecord:
    """Placed at 10:01, paid at 10:02:02; the warehouse and the email are awaited."""
    hops = {"checkout.placed": T0, "payment.authorized": PAID}
    return OrderRecord(
        snap(hops, next_hop="inventory.reserved", next_due=PAID + 120_000),
        [ev("checkout.placed", T0, service="web"), ev("payment.authorized", PAID, service="payments")],
        list(findings),
    )


def shipped_record(*findings: Finding, email: bool = True) -> OrderRecord:
    hops = {
        "checkout.placed": T0,
        "payment.authorized": PAID,
        "inventory.reserved": PAID + 5_000,
        "fulfilment.shipped": PAID + 600_000,
    }
    if email:
        hops["email.confirmation_sent"] = PAID + 3_000
    events = sorted((ev(h, t) for h, t in hops.items()), key=lambda e: e.ts)
    status = COMPLETED if email else UNCONFIRMED
    return OrderRecord(snap(hops, status=status, open_=not email), events, list(findings))


def view(record: OrderRecord, now: int, **kw: object) -> dict[str, object]:
    return build_order_view(record, JOURNEYS, now_ms=now, **kw)  # type: ignore[arg-type]


def explanation(record: OrderRecord, now: int, **kw: object) -> str:
    text = view(record, now, **kw)["explanation"]
    assert isinstance(text, str)
    return text


def waiting_of(count: int, since: int | None) -> object:
    calls: list[tuple[str, str]] = []

    def waiting(journey: str, hop: str) -> tuple[int, int | None]:
        calls.append((journey, hop))
        return count, since

    waiting.calls = calls  # type: ignore[attr-defined]
    return waiting


# -- the object ----------------------------------------------------------------------------------


def test_view_has_the_contract_keys_and_only_advice_besides() -> None:
    v = view(paid_record(), PAID + 10_000)
    assert set(v) - {"advice"} == CONTRACT_KEYS
    assert set(v) == CONTRACT_KEYS | {"advice"}


def test_view_carries_ids_journey_and_the_incident_given() -> None:
    v = view(paid_record(), PAID + 10_000, incident={"id": "inc-1", "orders": 37})
    assert v["order_id"] == "A-1"
    assert v["journey"] == "web_order"
    assert v["trace_id"] == derive_trace_id("A-1")
    assert v["customer_id"] == "c-9"
    assert v["incident"] == {"id": "inc-1", "orders": 37}


def test_hops_are_the_trail_with_times_services_and_statuses() -> None:
    v = view(paid_record(), PAID + 10_000)
    assert v["hops"] == [
        {"hop": "checkout.placed", "ts": "2026-11-22T10:01:00.000Z", "service": "web", "status": "ok"},
        {"hop": "payment.authorized", "ts": "2026-11-22T10:02:02.000Z", "service": "payments", "status": "ok"},
    ]


def test_next_is_the_earliest_awaited_step_with_its_due_time() -> None:
    v = view(paid_record(), PAID + 10_000)
    assert v["next"] == {"hop": "inventory.reserved", "due_at": "2026-11-22T10:04:02.000Z"}


def test_completed_order_has_no_next_step() -> None:
    v = view(shipped_record(), PAID + 700_000)
    assert v["status"] == COMPLETED
    assert v["next"] is None


def test_findings_are_on_the_wire_format() -> None:
    f = finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000)
    v = view(paid_record(f), PAID + 130_000)
    assert v["findings"] == [f.to_wire()]


def test_status_is_the_most_severe_open_finding() -> None:
    stalled = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)
    unconfirmed = finding(UNCONFIRMED, "email.confirmation_sent", "payment.authorized", PAID + 300_000)
    assert view(paid_record(stalled, unconfirmed), PAID + 310_000)["status"] == UNCONFIRMED


# -- the explanation, status by status ------------------------------------------------------------


def test_in_progress_says_what_happened_and_what_comes_next_by_when() -> None:
    text = explanation(paid_record(), PAID + 10_000)
    assert text == "Payment was taken at 10:02 UTC. Next, the warehouse should confirm stock by 10:05 UTC."


def test_in_progress_past_its_due_time_says_it_is_being_checked() -> None:
    v = view(paid_record(), PAID + 121_000)
    assert v["status"] == IN_PROGRESS
    assert "by 10:04 UTC. That time has just passed" in str(v["explanation"])
    assert "a little late" in str(v["advice"])


def test_stalled_says_how_long_it_normally_takes_from_learned_transit() -> None:
    f = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)
    text = explanation(paid_record(f), PAID + 25_000, transit=lambda journey, hop: (4_000, 15_000))
    assert text.startswith(
        "Payment was taken at 10:02 UTC. The warehouse has not confirmed stock; it normally does within 15 seconds."
    )
    assert "still has until 10:05 UTC" in text


def test_stalled_without_learned_transit_uses_the_configured_soft_limit() -> None:
    f = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)
    assert "it normally does within 20 seconds" in explanation(paid_record(f), PAID + 25_000)


def test_waiting_orders_appear_in_the_sentence_without_the_order_itself() -> None:
    f = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)
    waiting = waiting_of(38, T0)  # the store counts the order asked about too
    v = view(paid_record(f), PAID + 25_000, waiting=waiting, transit=lambda journey, hop: (4_000, 15_000))
    assert (
        "The warehouse has not confirmed stock; it normally does within 15 seconds, and 37 other orders are "
        "waiting at the same step since 10:01 UTC." in str(v["explanation"])
    )
    assert waiting.calls == [("web_order", "inventory.reserved")]  # type: ignore[attr-defined]
    assert "wider problem" in str(v["advice"])


def test_missing_says_it_has_not_happened_and_when_it_was_due() -> None:
    f = finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000)
    v = view(paid_record(f), PAID + 130_000, waiting=waiting_of(5, PAID - 30_000))
    assert v["status"] == MISSING
    assert v["explanation"] == (
        "Payment was taken at 10:02 UTC. The warehouse has not confirmed stock: it was due by 10:04 UTC. "
        "4 other orders are waiting at the same step since 10:01 UTC."
    )
    assert "not lost" in str(v["advice"])


def test_missing_alone_at_its_step_looks_specific_to_the_order() -> None:
    f = finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000)
    text = explanation(paid_record(f), PAID + 130_000, waiting=waiting_of(1, PAID))
    assert "No other orders are held up at the same step, so this looks specific to this order." in text


def test_unconfirmed_says_the_order_went_through_and_advises_reassurance() -> None:
    f = finding(UNCONFIRMED, "email.confirmation_sent", "payment.authorized", PAID + 300_000)
    v = view(shipped_record(f, email=False), PAID + 700_000)
    assert v["status"] == UNCONFIRMED
    assert (
        "The order went through, but the confirmation email has not been sent (it was due by 10:07 UTC), "
        "so the customer may think the order was lost." in str(v["explanation"])
    )
    assert v["advice"] == "Reassure the customer that the order went through, and resend the confirmation."


def test_failed_says_which_step_failed_and_when() -> None:
    record = OrderRecord(
        snap({"checkout.placed": T0}, status=FAILED),
        [ev("checkout.placed", T0), ev("payment.authorized", PAID, status="error", service="payments")],
        [finding(FAILED, "payment.authorized", "checkout.placed", PAID)],
    )
    v = view(record, PAID + 5_000)
    assert v["status"] == FAILED
    assert v["explanation"] == (
        "The order was placed at 10:01 UTC. The payment failed at 10:02 UTC, so the order is on hold until it is "
        "tried again."
    )
    assert v["hops"][1]["status"] == "error"  # type: ignore[index]


def test_a_failure_that_a_retry_answered_is_told_as_resolved() -> None:
    f = finding(FAILED, "payment.authorized", "checkout.placed", PAID, resolved_at=PAID + 70_000, late=60_000)
    record = OrderRecord(
        snap({"checkout.placed": T0, "payment.authorized": PAID + 60_000}),
        [
            ev("checkout.placed", T0),
            ev("payment.authorized", PAID, status="error"),
            ev("payment.authorized", PAID + 60_000),
        ],
        [f],
    )
    v = view(record, PAID + 70_000)
    assert v["status"] == IN_PROGRESS
    assert (
        "The payment failed at 10:02 UTC, but it went through when tried again at 10:03 UTC; all is well now."
        in str(v["explanation"])
    )


def test_a_late_arrival_says_how_late_and_that_all_is_well() -> None:
    late = finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000, resolved_at=1, late=40_000)
    slow = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000, resolved_at=1, late=140_000)
    text = explanation(shipped_record(late, slow), PAID + 700_000)
    assert text == (
        "Everything went through: the order was shipped at 10:12 UTC. The warehouse confirmed stock at 10:04 UTC, "
        "40 seconds later than expected; all is well now."
    )


def test_completed_says_everything_went_through() -> None:
    v = view(shipped_record(), PAID + 700_000)
    assert v["explanation"] == "Everything went through: the order was shipped at 10:12 UTC."
    assert v["advice"] == "Everything has gone through; nothing needs doing."


def test_a_step_both_slow_and_overdue_is_told_once() -> None:
    stalled = finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)
    missing = finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000)
    text = explanation(paid_record(stalled, missing), PAID + 130_000)
    assert text.count("The warehouse has not confirmed stock") == 1
    assert "normally" not in text


def test_an_order_outside_every_journey_shows_its_trail_without_a_next_step() -> None:
    record = OrderRecord(None, [ev("loyalty.points_added", T0)], [])
    v = view(record, T0 + 1000)
    assert v["journey"] is None
    assert v["next"] is None
    assert v["status"] == IN_PROGRESS
    assert v["explanation"] == (
        "The step “loyalty points added” happened at 10:01 UTC. We do not follow this kind of order step by step, "
        "so we cannot say what comes next."
    )


def test_without_a_stored_state_the_journey_is_inferred_from_the_events() -> None:
    record = OrderRecord(None, [ev("checkout.placed", T0)], [])
    v = view(record, T0 + 1000)
    assert v["journey"] == "web_order"
    assert v["next"] == {"hop": "payment.authorized", "due_at": "2026-11-22T10:01:30.000Z"}


def test_a_record_with_nothing_in_it_is_refused() -> None:
    with pytest.raises(ValueError, match="explain_unknown"):
        view(OrderRecord(None, [], []), T0)


def test_explanations_of_every_status_are_free_of_tracing_words() -> None:
    cases = [
        (paid_record(), PAID + 10_000),
        (paid_record(finding(STALLED, "inventory.reserved", "payment.authorized", PAID + 20_000)), PAID + 25_000),
        (paid_record(finding(MISSING, "inventory.reserved", "payment.authorized", PAID + 120_000)), PAID + 130_000),
        (shipped_record(finding(UNCONFIRMED, "email.confirmation_sent", "payment.authorized", PAID)), PAID + 700_000),
        (paid_record(finding(FAILED, "inventory.reserved", "payment.authorized", PAID + 9_000)), PAID + 10_000),
        (shipped_record(), PAID + 700_000),
    ]
    statuses = set()
    for record, now in cases:
        v = view(record, now, waiting=waiting_of(3, T0), transit=lambda journey, hop: (1_000, 9_000))
        statuses.add(v["status"])
        for text in (v["explanation"], v["advice"]):
            assert JARGON.search(str(text)) is None, text
    assert statuses == {IN_PROGRESS, STALLED, MISSING, UNCONFIRMED, FAILED, COMPLETED}


def test_vocabulary_is_free_of_tracing_words() -> None:
    for words in {*VOCABULARY.values(), wording("ledger.entry_posted")}:
        for phrase in words:
            assert JARGON.search(phrase) is None, phrase


def test_an_unknown_hop_is_worded_from_its_name() -> None:
    assert wording("ledger.entry_posted").not_yet == "The step “ledger entry posted” has not happened"
    assert wording("payment.authorized").done == "Payment was taken"


# -- times and durations ------------------------------------------------------------------------


def test_times_on_the_day_of_now_are_clock_times() -> None:
    assert spoken_time(PAID, PAID + 3_600_000) == "10:02 UTC"


def test_times_on_another_day_carry_the_date_and_another_year_the_year() -> None:
    assert spoken_time(parse_ts("2026-11-21T10:02:00Z"), PAID) == "21 Nov 10:02 UTC"
    assert spoken_time(parse_ts("2025-11-21T10:02:00Z"), PAID) == "21 Nov 2025 10:02 UTC"


def test_due_times_round_up_to_the_minute() -> None:
    assert spoken_time(PAID, T0, round_up=True) == "10:03 UTC"
    assert spoken_time(T0, T0, round_up=True) == "10:01 UTC"


@pytest.mark.parametrize(
    ("ms", "spoken"),
    [
        (400, "under a second"),
        (1_000, "1 second"),
        (15_200, "15 seconds"),
        (90_000, "1 minute 30 seconds"),
        (3_600_000, "1 hour"),
        (5_400_000, "1 hour 30 minutes"),
        (100_000_000, "1 day 3 hours"),
        (12 * 3_600_000 + 60_000, "12 hours"),
    ],
)
def test_spoken_duration(ms: int, spoken: str) -> None:
    assert spoken_duration(ms) == spoken


# -- unknown orders and search ------------------------------------------------------------------


def test_explain_unknown_says_what_was_checked() -> None:
    body = explain_unknown("A-404", ["stored orders (12 345)", "hop events by order number"])
    assert body["order_id"] == "A-404"
    assert body["checked"] == ["stored orders (12 345)", "hop events by order number"]
    assert "Checked: stored orders (12 345); hop events by order number." in body["explanation"]
    assert "mistyped" in body["explanation"]


def test_explain_unknown_spots_a_trace_id_and_stray_spaces() -> None:
    assert "search by trace id" in explain_unknown(derive_trace_id("A-1"), [])["explanation"]
    assert "spaces" in explain_unknown(" A-1", [])["explanation"]


def test_search_views_summarise_each_order() -> None:
    s = snap(
        {"checkout.placed": T0, "payment.authorized": PAID}, next_hop="inventory.reserved", next_due=PAID + 120_000
    )
    assert search_views([s], now_ms=PAID) == [
        {
            "order_id": "A-1",
            "journey": "web_order",
            "trace_id": derive_trace_id("A-1"),
            "customer_id": "c-9",
            "status": IN_PROGRESS,
            "summary": "Payment was taken at 10:02 UTC.",
            "first_ts": "2026-11-22T10:01:00.000Z",
            "last_ts": "2026-11-22T10:02:02.000Z",
            "next": {"hop": "inventory.reserved", "due_at": "2026-11-22T10:04:02.000Z"},
        }
    ]
