"""The tracer engine (CONTRACT §2–3), driven by hand: each finding kind, each way a finding
resolves, failures and their hold on an order, duplicates, out-of-order input, journey inference,
completion and retirement, and what the engine hands over (findings, snapshots, restore)."""

from __future__ import annotations

import pytest

from tests.tracer.conftest import (
    CHECKOUT,
    EMAIL,
    INVENTORY,
    PAYMENT,
    SHIPPED,
    T0,
    WEB_ORDER,
    M,
    S,
    feed,
    hop,
    latest,
)
from tracer.engine import Tracer
from tracer.journeys import parse_journeys
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
    derive_trace_id,
    finding_id,
)


def tracer(text: str = WEB_ORDER, **options: int) -> Tracer:
    return Tracer(parse_journeys(text, "test.yaml"), **options)


def kinds(findings: list[Finding]) -> list[tuple[str, str, str]]:
    return [(f.hop, f.kind, f.status) for f in findings]


def at(ms: int) -> int:
    return T0 + ms


# A journey with a step that does not depend on the failing one, to see what a failure holds back.
FRAUD = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
      fraud.checked:      {after: checkout.placed, within: 10s}
      order.confirmed:    {after: payment.authorized, within: 1m}
    complete: [order.confirmed, fraud.checked]
"""

# -- missing, and when a deadline is missed ----------------------------------------------------


def test_a_step_not_seen_by_its_deadline_is_missing_once_the_clock_is_strictly_past_it() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0, customer_id="cus-1"))
    t.advance(at(30 * S))
    assert t.drain_findings() == []
    t.advance(at(30 * S + 1))
    (f,) = t.drain_findings()
    assert f == Finding(
        "o1",
        "web_order",
        MISSING,
        PAYMENT,
        CHECKOUT,
        at(30 * S),
        at(30 * S + 1),
        OPEN,
        None,
        None,
        derive_trace_id("o1"),
        "cus-1",
    )
    assert f.finding_id == finding_id("o1", PAYMENT, MISSING)


def test_a_hop_stamped_exactly_at_its_due_time_is_on_time() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 30 * S))
    t.advance(at(10 * M))
    assert PAYMENT not in {f.hop for f in t.drain_findings()}


def test_deadlines_count_from_the_event_time_of_the_after_hop_not_from_its_arrival() -> None:
    t = tracer()
    t.advance(at(20 * S))
    t.on_event(hop("o1", CHECKOUT, 0))
    t.advance(at(30 * S + 1))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN)]


def test_a_hop_that_arrives_after_its_steps_are_overdue_raises_them_at_once() -> None:
    t = tracer()
    t.advance(at(10 * M))
    t.on_event(hop("o1", CHECKOUT, 0))
    (f,) = t.drain_findings()
    assert (f.kind, f.hop, f.due_at, f.detected_at) == (MISSING, PAYMENT, at(30 * S), at(10 * M))


def test_the_clock_never_goes_back() -> None:
    t = tracer()
    t.advance(at(M))
    t.advance(at(0))
    assert t.now == at(M)


def test_a_step_waits_only_for_an_after_hop_seen_or_implied() -> None:
    t = tracer()
    feed(t, hop("o1", PAYMENT, 0))  # nothing after inventory.reserved is due: it was never seen
    t.advance(at(23 * 3600 * S))
    assert SHIPPED not in {f.hop for f in t.drain_findings()}


def test_a_step_after_an_implied_hop_is_due_from_the_hop_that_implied_it() -> None:
    t = tracer()
    feed(t, hop("o1", INVENTORY, 10 * S))  # payment happened by then: the confirmation is due from there
    t.advance(at(10 * S + 5 * M + 1))
    (f,) = t.drain_findings()
    assert (f.hop, f.kind, f.after, f.due_at) == (EMAIL, UNCONFIRMED, PAYMENT, at(10 * S + 5 * M))


# -- unconfirmed -------------------------------------------------------------------------------


def test_a_confirmation_step_not_seen_is_unconfirmed() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S), hop("o1", INVENTORY, 2 * S))
    t.advance(at(S + 5 * M))
    assert t.drain_findings() == []
    t.advance(at(S + 5 * M + 1))
    (f,) = t.drain_findings()
    assert (f.kind, f.hop, f.after, f.due_at) == (UNCONFIRMED, EMAIL, PAYMENT, at(S + 5 * M))


# -- stalled -----------------------------------------------------------------------------------


def test_past_stall_after_the_order_is_stalled_and_past_within_also_missing() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 0), hop("o1", EMAIL, S))
    t.advance(at(20 * S + 1))
    (stalled,) = t.drain_findings()
    assert (stalled.kind, stalled.hop, stalled.after, stalled.due_at) == (STALLED, INVENTORY, PAYMENT, at(20 * S))
    t.advance(at(2 * M + 1))
    (missing,) = t.drain_findings()
    assert (missing.kind, missing.due_at) == (MISSING, at(2 * M))
    assert {f.kind for f in t.open_findings("o1")} == {STALLED, MISSING}


def test_a_late_hop_resolves_both_its_stalled_and_missing_findings_with_how_late_it_was() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 0), hop("o1", EMAIL, S))
    t.advance(at(3 * M))
    t.drain_findings()
    t.advance(at(4 * M))
    t.on_event(hop("o1", INVENTORY, 3 * M))
    resolved = {f.kind: f for f in t.drain_findings()}
    assert set(resolved) == {STALLED, MISSING}
    assert resolved[STALLED].late_by_ms == 3 * M - 20 * S
    assert resolved[MISSING].late_by_ms == M
    assert all(f.status == RESOLVED and f.resolved_at == at(4 * M) for f in resolved.values())
    assert t.open_findings("o1") == []


STALL_LEARNING = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
stall_learning: {percentile: 90, factor: 2, floor: 1s, min_samples: 5}
"""


def learned(transit_ms: int, orders: int = 5) -> Tracer:
    t = tracer(STALL_LEARNING)
    for i in range(orders):
        feed(t, hop(f"seen-{i}", CHECKOUT, i), hop(f"seen-{i}", PAYMENT, i + transit_ms))
    t.drain_findings()
    return t


def test_without_stall_after_the_soft_limit_is_learned_from_the_edge() -> None:
    t = learned(3 * S)
    feed(t, hop("o1", CHECKOUT, 10 * S))
    t.advance(at(16 * S))
    assert t.drain_findings() == []
    t.advance(at(16 * S + 1))
    (f,) = t.drain_findings()
    assert (f.kind, f.hop, f.due_at) == (STALLED, PAYMENT, at(16 * S))  # 3s × factor 2 after checkout


def test_no_soft_limit_is_learned_before_min_samples() -> None:
    t = learned(3 * S, orders=4)
    feed(t, hop("o1", CHECKOUT, 10 * S))
    t.advance(at(40 * S + 1))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN)]


def test_a_learned_soft_limit_is_never_below_the_floor() -> None:
    t = learned(100)
    feed(t, hop("o1", CHECKOUT, 10 * S))
    t.advance(at(11 * S + 1))
    (f,) = t.drain_findings()
    assert (f.kind, f.due_at) == (STALLED, at(11 * S))


def test_a_learned_soft_limit_not_shorter_than_within_raises_no_stall() -> None:
    t = learned(20 * S)  # 20s × 2 > 30s
    feed(t, hop("o1", CHECKOUT, 30 * S))
    t.advance(at(61 * S))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN)]


def test_an_explicit_stall_after_wins_over_learning() -> None:
    t = tracer(STALL_LEARNING.replace("within: 30s}", "within: 30s, stall_after: 25s}"))
    for i in range(5):
        feed(t, hop(f"seen-{i}", CHECKOUT, i), hop(f"seen-{i}", PAYMENT, i + S))
    feed(t, hop("o1", CHECKOUT, 10 * S))
    t.advance(at(34 * S))
    assert t.drain_findings() == []
    t.advance(at(35 * S + 1))
    assert kinds(t.drain_findings()) == [(PAYMENT, STALLED, OPEN)]


# -- failed ------------------------------------------------------------------------------------


def test_an_error_at_a_hop_is_a_failed_finding_there() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 5 * S, status="error"))
    (f,) = t.drain_findings()
    assert (f.kind, f.hop, f.after, f.due_at, f.detected_at, f.status) == (
        FAILED,
        PAYMENT,
        CHECKOUT,
        at(5 * S),
        at(5 * S),
        OPEN,
    )


def test_an_error_at_the_start_hop_fails_with_no_after() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0, status="error"))
    (f,) = t.drain_findings()
    assert (f.kind, f.hop, f.after) == (FAILED, CHECKOUT, "")


def test_while_a_failure_is_open_the_order_raises_nothing_else() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"))
    t.advance(at(10 * M))
    assert kinds(t.drain_findings()) == [(PAYMENT, FAILED, OPEN)]


def test_a_successful_retry_resolves_the_failure_and_deadlines_carry_on_from_it() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"), hop("o1", PAYMENT, 40 * S))
    assert kinds(t.drain_findings()) == [(PAYMENT, FAILED, OPEN), (PAYMENT, FAILED, RESOLVED)]
    assert t.open_findings("o1") == []
    t.advance(at(40 * S + 20 * S + 1))
    (stalled,) = t.drain_findings()
    assert (stalled.hop, stalled.kind, stalled.due_at) == (INVENTORY, STALLED, at(60 * S))


def test_a_resolved_failure_says_how_long_until_the_retry_went_through() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"))
    t.advance(at(M))
    t.on_event(hop("o1", PAYMENT, 40 * S))
    f = latest(t.drain_findings())["o1", PAYMENT, FAILED]
    assert (f.status, f.late_by_ms, f.resolved_at) == (RESOLVED, 39 * S, at(M))


def test_deadlines_that_fell_due_during_a_failure_are_raised_when_it_resolves() -> None:
    t = tracer(FRAUD)
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"))
    t.advance(at(M))
    assert kinds(t.drain_findings()) == [(PAYMENT, FAILED, OPEN)]
    t.on_event(hop("o1", PAYMENT, 45 * S))
    found = t.drain_findings()
    assert kinds(found) == [(PAYMENT, FAILED, RESOLVED), ("fraud.checked", MISSING, OPEN)]
    assert (found[1].due_at, found[1].detected_at) == (at(10 * S), at(M))


def test_an_error_after_the_hop_already_succeeded_is_ignored() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 5 * S), hop("o1", PAYMENT, 8 * S, status="error"))
    t.advance(at(M))
    assert FAILED not in {f.kind for f in t.drain_findings()}
    assert t.stats.raised.get(FAILED) is None


def test_an_error_after_a_later_hop_implied_success_is_ignored() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", INVENTORY, 5 * S), hop("o1", PAYMENT, 8 * S, status="error"))
    assert t.drain_findings() == []


def test_an_error_reported_after_the_success_that_followed_it_is_already_resolved() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 20 * S))
    t.on_event(hop("o1", PAYMENT, 5 * S, status="error"))
    (f,) = t.drain_findings()
    assert (f.kind, f.status, f.due_at, f.late_by_ms) == (FAILED, RESOLVED, at(5 * S), 15 * S)


def test_a_later_hop_resolves_a_failure_it_implies_was_retried() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"), hop("o1", INVENTORY, 9 * S))
    f = latest(t.drain_findings())["o1", PAYMENT, FAILED]
    assert (f.status, f.late_by_ms) == (RESOLVED, 8 * S)


def test_further_errors_at_a_failed_hop_keep_one_failure() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, status="error"), hop("o1", PAYMENT, 2 * S, status="error"))
    assert kinds(t.drain_findings()) == [(PAYMENT, FAILED, OPEN)]


def test_an_earlier_error_reported_late_moves_the_failure_back_to_it() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 5 * S, status="error"))
    t.on_event(hop("o1", PAYMENT, 2 * S, status="error"))
    found = t.drain_findings()
    assert [f.due_at for f in found] == [at(5 * S), at(2 * S)]
    assert [f.due_at for f in t.open_findings("o1")] == [at(2 * S)]


def test_a_failure_reported_late_takes_over_from_the_findings_raised_meanwhile() -> None:
    t = tracer(FRAUD)
    feed(t, hop("o1", CHECKOUT, 0))
    t.advance(at(M))
    assert sorted(kinds(t.drain_findings())) == [("fraud.checked", MISSING, OPEN), (PAYMENT, MISSING, OPEN)]
    t.on_event(hop("o1", PAYMENT, 20 * S, status="error"))
    found = t.drain_findings()
    assert sorted(kinds(found[:2])) == [("fraud.checked", MISSING, RESOLVED), (PAYMENT, MISSING, RESOLVED)]
    assert kinds(found[2:]) == [(PAYMENT, FAILED, OPEN)]
    assert [f.late_by_ms for f in found[:2]] == [None, None]  # superseded, not arrived
    t.on_event(hop("o1", PAYMENT, 50 * S))  # the retry: what is still overdue is raised again
    assert kinds(t.drain_findings()) == [(PAYMENT, FAILED, RESOLVED), ("fraud.checked", MISSING, OPEN)]


# -- late arrivals and implied hops ------------------------------------------------------------


def test_a_late_hop_resolves_its_missing_finding_with_how_late_it_was() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0))
    t.advance(at(M))
    t.drain_findings()
    t.on_event(hop("o1", PAYMENT, 50 * S))
    (f,) = t.drain_findings()
    assert (f.kind, f.status, f.resolved_at, f.late_by_ms) == (MISSING, RESOLVED, at(M), 20 * S)
    assert f.finding_id == finding_id("o1", PAYMENT, MISSING)


def test_a_hop_that_was_on_time_but_reached_us_late_resolves_with_zero_lateness() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0))
    t.advance(at(M))
    t.drain_findings()
    t.on_event(hop("o1", PAYMENT, 25 * S))
    f = latest(t.drain_findings())["o1", PAYMENT, MISSING]
    assert (f.status, f.late_by_ms) == (RESOLVED, 0)


def test_a_later_hop_implies_the_hops_before_it_and_resolves_their_findings() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0))
    t.advance(at(M))
    t.drain_findings()
    t.on_event(hop("o1", INVENTORY, 50 * S))
    (f,) = t.drain_findings()
    assert (f.hop, f.kind, f.status, f.late_by_ms) == (PAYMENT, MISSING, RESOLVED, 20 * S)
    snap = t.snapshot("o1", t.order("o1"))  # type: ignore[arg-type]
    assert dict(zip(snap.hops, snap.implied, strict=True)) == {CHECKOUT: False, PAYMENT: True, INVENTORY: False}


def test_an_implied_hop_cancels_its_deadline() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", INVENTORY, 10 * S), hop("o1", EMAIL, 11 * S))
    t.advance(at(10 * M))
    assert t.drain_findings() == []


def test_an_earlier_report_of_a_hop_moves_its_time_back() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", INVENTORY, 30 * S), hop("o1", PAYMENT, 20 * S))
    t.on_event(hop("o1", PAYMENT, 10 * S))
    t.advance(at(10 * S + 5 * M + 1))
    (f,) = t.drain_findings()
    assert (f.hop, f.kind, f.due_at) == (EMAIL, UNCONFIRMED, at(10 * S + 5 * M))


# -- duplicates and arrival order --------------------------------------------------------------


def test_a_duplicate_event_is_dropped_and_counted() -> None:
    t = tracer()
    e = hop("o1", PAYMENT, 0, status="error")
    feed(t, e, e, hop("o1", PAYMENT, 0, status="error"))
    assert t.stats.duplicates == 2
    assert t.stats.events == 3
    assert len(t.drain_findings()) == 1


def test_events_with_the_same_event_id_are_duplicates_whatever_else_they_say() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0, event_id="e-1"), hop("o1", PAYMENT, S, event_id="e-1"))
    assert t.stats.duplicates == 1
    t.advance(at(M))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN)]


def test_the_same_hop_at_another_time_is_not_a_duplicate() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", CHECKOUT, 1))
    assert t.stats.duplicates == 0


def test_events_in_reverse_order_end_in_the_same_findings_as_in_order() -> None:
    events = [
        hop("o1", CHECKOUT, 0),
        hop("o1", PAYMENT, 10 * S),
        hop("o1", INVENTORY, 50 * S),
        hop("o2", CHECKOUT, 0),
        hop("o2", PAYMENT, 40 * S, status="error"),
    ]
    outcomes = []
    for order in (events, events[::-1]):
        t = tracer()
        for e in order:
            t.on_event(e)
        t.advance(at(10 * M))
        outcomes.append({k: (f.status, f.due_at, f.late_by_ms) for k, f in latest(t.drain_findings()).items()})
    assert outcomes[0] == outcomes[1]
    assert set(outcomes[0]) == {("o1", EMAIL, UNCONFIRMED), ("o2", PAYMENT, FAILED)}


# -- journeys ----------------------------------------------------------------------------------

TWO = """
journeys:
  web:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
      web.shipped: {after: payment.authorized, within: 1m}
  app:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 1m}
      app.delivered: {after: payment.authorized, within: 2m}
"""


def test_the_journey_named_in_the_event_is_used() -> None:
    t = tracer(TWO)
    feed(t, hop("o1", CHECKOUT, 0, journey="app"))
    t.advance(at(M + 1))
    (f,) = t.drain_findings()
    assert (f.journey, f.due_at) == ("app", at(M))


def test_an_unknown_journey_name_is_counted_and_the_journey_inferred() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0, journey="mobile"), hop("o2", "gift.wrapped", 0), hop("o2", CHECKOUT, 0, journey="x"))
    assert t.stats.unknown_journey == 2
    t.advance(at(M))
    assert [(f.order_id, f.journey) for f in t.drain_findings()] == [("o1", "web_order"), ("o2", "web_order")]


def test_the_journey_is_inferred_from_a_hop_only_one_journey_has() -> None:
    t = tracer(TWO)
    feed(t, hop("o1", "web.shipped", 0))
    assert [s.journey for s in t.drain_snapshots()] == ["web"]


def test_an_order_whose_start_was_never_seen_still_gets_deadlines_for_what_was_seen() -> None:
    t = tracer()
    feed(t, hop("o1", PAYMENT, 0))
    t.advance(at(5 * M + 1))
    assert kinds(t.drain_findings()) == [
        (INVENTORY, STALLED, OPEN),
        (INVENTORY, MISSING, OPEN),
        (EMAIL, UNCONFIRMED, OPEN),
    ]


def test_an_order_of_shared_hops_waits_until_a_hop_tells_its_journey() -> None:
    t = tracer(TWO)
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S))
    t.advance(at(10 * M))
    assert t.drain_findings() == []
    assert [s.journey for s in t.drain_snapshots()] == [""]
    t.on_event(hop("o1", "app.delivered", 10 * M))
    assert [s.journey for s in t.drain_snapshots()] == ["app"]
    assert t.drain_findings() == []  # deadlines ran from the replayed hops, and all were met or implied
    t2 = tracer(TWO)
    feed(t2, hop("o2", CHECKOUT, 0), hop("o2", PAYMENT, S))
    t2.advance(at(10 * M))
    t2.on_event(hop("o2", "web.shipped", 10 * M, status="error"))
    assert kinds(t2.drain_findings()) == [("web.shipped", FAILED, OPEN)]


def test_the_hops_an_undecided_order_keeps_are_bounded() -> None:
    t = tracer(TWO)
    for i in range(40):
        t.on_event(hop("o1", CHECKOUT, i))
    assert len(t.snapshot("o1", t.order("o1")).pending) == 32  # type: ignore[arg-type]


def test_the_hops_an_undecided_order_keeps_are_restored_and_replayed_once_its_journey_is_known() -> None:
    first = tracer(TWO)
    feed(first, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S))
    (snap,) = first.drain_snapshots()
    assert (snap.journey, [p[0] for p in snap.pending]) == ("", [CHECKOUT, PAYMENT])
    second = tracer(TWO)
    assert second.restore([snap], []) == 1
    second.on_event(hop("o1", "web.shipped", 10 * M, status="error"))
    (after,) = second.drain_snapshots()
    assert (after.journey, after.pending, after.hops[:2]) == ("web", [], [CHECKOUT, PAYMENT])
    assert kinds(second.drain_findings()) == [("web.shipped", FAILED, OPEN)]
    second.drop_partition(0)
    third = tracer(TWO)  # a dropped order's held hops go with it
    third.restore([snap], [])
    third.drop_partition(0)
    assert len(third) == 0 and third._pending == {}


def test_a_hop_outside_the_journey_is_counted_and_used_for_nothing() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", "gift.wrapped", S))
    assert t.stats.outside_journey == 1
    t.advance(at(31 * S))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN)]


# -- completion and retirement -----------------------------------------------------------------


def complete(t: Tracer, order_id: str = "o1") -> None:
    feed(
        t,
        hop(order_id, CHECKOUT, 0),
        hop(order_id, PAYMENT, S),
        hop(order_id, INVENTORY, 2 * S),
        hop(order_id, EMAIL, 3 * S),
        hop(order_id, SHIPPED, 4 * S),
    )


def test_a_completed_order_with_no_open_finding_leaves_memory() -> None:
    t = tracer()
    complete(t)
    assert len(t) == 0
    assert t.stats.completed == 1
    (snap,) = [s for s in t.drain_snapshots() if s.order_id == "o1"]
    assert (snap.status, snap.open) == (COMPLETED, False)


def test_the_complete_hops_alone_complete_an_order_through_the_hops_they_imply() -> None:
    t = tracer()
    feed(t, hop("o1", SHIPPED, 0), hop("o1", EMAIL, S))
    assert len(t) == 0 and t.stats.completed == 1


def test_an_event_for_a_completed_order_is_counted_and_reopens_nothing() -> None:
    t = tracer()
    complete(t)
    feed(t, hop("o1", PAYMENT, 5 * S, status="error"))
    assert t.stats.after_close == 1
    assert len(t) == 0
    t.advance(at(10 * M))
    assert t.drain_findings() == []


def test_a_completed_order_with_an_open_finding_stays_until_it_resolves() -> None:
    t = tracer(
        WEB_ORDER.replace("complete: [fulfilment.shipped, email.confirmation_sent]", "complete: [fulfilment.shipped]")
    )
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S))
    t.advance(at(6 * M))
    feed(t, hop("o1", SHIPPED, 6 * M))
    assert t.status_of("o1", t.order("o1")) == UNCONFIRMED  # type: ignore[arg-type]
    assert len(t) == 1
    feed(t, hop("o1", EMAIL, 7 * M))
    assert len(t) == 0
    assert latest(t.drain_findings())["o1", EMAIL, UNCONFIRMED].status == RESOLVED


def test_an_idle_order_is_retired_after_the_retention_and_its_findings_stay_open() -> None:
    t = tracer(retention_ms=3600 * S)
    feed(t, hop("o1", CHECKOUT, 0), hop("o2", CHECKOUT, 0, journey="nope"), hop("o3", "unknown.hop", 0))
    t.advance(at(3600 * S))
    assert len(t) == 3
    t.advance(at(3600 * S + 1))
    assert len(t) == 0
    assert t.stats.retired == 3
    assert {f.status for f in latest(t.drain_findings()).values()} == {OPEN}


def test_retention_never_retires_an_order_while_a_deadline_is_ahead() -> None:
    t = tracer(retention_ms=3600 * S)
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S), hop("o1", INVENTORY, 2 * S), hop("o1", EMAIL, 3 * S))
    t.advance(at(2 * 3600 * S))  # idle past the retention, but fulfilment.shipped is due in 24h
    assert len(t) == 1
    assert t.drain_findings() == []
    t.advance(at(24 * 3600 * S + 2 * S + 1))
    (f,) = t.drain_findings()
    assert (f.hop, f.kind, f.status, f.due_at) == (SHIPPED, MISSING, OPEN, at(24 * 3600 * S + 2 * S))
    assert len(t) == 0  # decided, nothing more awaited, idle past the retention: retired
    assert t.stats.retired == 1


# -- what the engine hands over ----------------------------------------------------------------


def test_drain_findings_hands_over_every_version_once() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0))
    t.advance(at(M))
    t.on_event(hop("o1", PAYMENT, 50 * S))
    assert kinds(t.drain_findings()) == [(PAYMENT, MISSING, OPEN), (PAYMENT, MISSING, RESOLVED)]
    assert t.drain_findings() == []


def test_an_order_status_is_its_most_severe_open_finding() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 0))
    st = t.order("o1")
    assert st is not None
    assert t.status_of("o1", st) == IN_PROGRESS
    t.advance(at(21 * S))
    assert t.status_of("o1", st) == STALLED
    t.advance(at(5 * M + 1))
    assert t.status_of("o1", st) == MISSING


def test_snapshots_say_what_an_order_waits_for_next() -> None:
    t = tracer()
    feed(t, hop("o1", CHECKOUT, 0, customer_id="cus-1"), hop("o1", PAYMENT, S))
    (snap,) = t.drain_snapshots()
    assert (snap.order_id, snap.journey, snap.customer_id, snap.status, snap.open) == (
        "o1",
        "web_order",
        "cus-1",
        IN_PROGRESS,
        True,
    )
    assert (snap.hops, snap.hop_ts, snap.first_ts, snap.last_ts) == ([CHECKOUT, PAYMENT], [at(0), at(S)], at(0), at(S))
    assert (snap.next_hop, snap.next_due) == (INVENTORY, at(S + 2 * M))
    assert t.drain_snapshots() == []


def test_an_explicit_trace_id_is_kept_and_a_derived_one_is_not_stored() -> None:
    t = tracer()
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    feed(t, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, S, trace_id=trace))
    t.advance(at(10 * M))
    assert {f.trace_id for f in t.drain_findings()} == {trace}
    feed(t, hop("o2", CHECKOUT, 0))
    assert t.order("o2").trace_id is None  # type: ignore[union-attr]


def test_the_customer_is_the_first_one_a_hop_names_before_and_after_a_restore() -> None:
    first = tracer()
    feed(first, hop("o1", CHECKOUT, 0), hop("o2", CHECKOUT, 0, customer_id="cus-2"))
    feed(first, hop("o1", PAYMENT, S, customer_id="cus-1"), hop("o2", PAYMENT, S, customer_id="cus-other"))
    snaps = {s.order_id: s for s in first.drain_snapshots()}
    assert (snaps["o1"].customer_id, snaps["o2"].customer_id) == ("cus-1", "cus-2")
    feed(first, hop("o3", CHECKOUT, 0))
    (o3,) = first.drain_snapshots()
    assert o3.customer_id == ""

    second = tracer()  # an order restored without a customer learns it from its next hop
    assert second.restore([o3], []) == 1
    feed(second, hop("o3", PAYMENT, S, customer_id="cus-3"))
    (again,) = second.drain_snapshots()
    assert (again.customer_id, again.open) == ("cus-3", True)


def test_a_restored_tracer_carries_on_where_the_first_one_stopped() -> None:
    first = tracer()
    feed(first, hop("o1", CHECKOUT, 0), hop("o2", CHECKOUT, 0), hop("o2", PAYMENT, 30 * S), hop("o3", CHECKOUT, 0))
    first.advance(at(40 * S))
    findings = first.drain_findings()
    assert kinds(findings) == [(PAYMENT, MISSING, OPEN), (PAYMENT, MISSING, OPEN)]
    snapshots = first.drain_snapshots()

    second = tracer()
    assert second.restore(snapshots, findings) == 3
    second.advance(at(40 * S))
    second.on_event(hop("o2", PAYMENT, 30 * S))  # seen before the restart: a duplicate
    assert second.stats.duplicates == 1
    second.on_event(hop("o1", PAYMENT, 45 * S))  # late: resolves the restored finding
    (resolved,) = second.drain_findings()
    assert (resolved.order_id, resolved.status, resolved.late_by_ms) == ("o1", RESOLVED, 15 * S)
    second.advance(at(6 * M))
    assert {(f.order_id, f.hop, f.kind) for f in second.drain_findings()} == {
        ("o1", INVENTORY, STALLED),
        ("o1", INVENTORY, MISSING),
        ("o1", EMAIL, UNCONFIRMED),
        ("o2", INVENTORY, STALLED),
        ("o2", INVENTORY, MISSING),
        ("o2", EMAIL, UNCONFIRMED),
    }
    assert second.open_findings("o3")[0].kind == MISSING  # restored, not raised again


def test_restore_takes_only_open_orders() -> None:
    first = tracer()
    complete(first)
    second = tracer()
    assert second.restore(first.drain_snapshots(), []) == 0
    assert len(second) == 0


def test_an_order_opens_midway_when_not_held_and_not_at_its_journeys_start() -> None:
    t = tracer()

    def midway(ev: HopEvent) -> bool:
        return t.opens_midway(ev.order_id, ev.journey, ev.hop)

    assert not midway(hop("new", CHECKOUT, 0))
    assert midway(hop("new", SHIPPED, 0))
    assert midway(hop("new", "outside.every.journey", 0))
    assert not t.opens_midway("new", "web_order", CHECKOUT) and t.opens_midway("new", "web_order", SHIPPED)
    t.on_event(hop("open", CHECKOUT, 0))
    complete(t, "done")
    assert not midway(hop("open", PAYMENT, S)) and not midway(hop("done", SHIPPED, 9 * S))


def test_orders_remembered_closed_take_no_more_events_and_open_ones_stay_open() -> None:
    t = tracer()
    t.on_event(hop("open", CHECKOUT, 0))
    t.remember_closed(["done", "open"])
    feed(t, hop("open", PAYMENT, S), hop("done", SHIPPED, 9 * S))
    t.advance(at(10 * S))
    assert t.order("done") is None and t.stats.after_close == 1 and t.drain_findings() == []
    assert t.order("open") is not None and t.drain_snapshots()[-1].order_id == "open"


def test_dropping_a_partition_forgets_its_orders() -> None:
    t = tracer()
    t.on_event(hop("o1", CHECKOUT, 0), partition=1)
    t.on_event(hop("o2", CHECKOUT, 0), partition=2)
    assert t.drop_partition(1) == 1
    assert t.order("o1") is None and t.order("o2") is not None
    t.advance(at(M))
    assert [f.order_id for f in t.drain_findings()] == ["o2"]


@pytest.mark.parametrize("bucket_ms", [1, 100, 1000])
def test_the_deadline_bucket_width_does_not_change_when_findings_fire(bucket_ms: int) -> None:
    t = tracer(bucket_ms=bucket_ms)
    feed(t, hop("o1", CHECKOUT, 0, event_id="a"), hop("o2", CHECKOUT, 7, event_id="b"))
    t.advance(at(30 * S + 1))
    assert [f.order_id for f in t.drain_findings()] == ["o1"]
    t.advance(at(30 * S + 7))
    assert t.drain_findings() == []
    t.advance(at(30 * S + 8))
    assert [f.order_id for f in t.drain_findings()] == ["o2"]


def test_a_restored_failure_is_resolved_by_the_retry_and_moved_back_by_an_earlier_error() -> None:
    first = tracer()
    feed(first, hop("o1", CHECKOUT, 0), hop("o1", PAYMENT, 5 * S, status="error"))
    second = tracer()
    second.restore(first.drain_snapshots(), first.drain_findings())
    second.on_event(hop("o1", PAYMENT, 2 * S, status="error"))
    second.on_event(hop("o1", PAYMENT, 9 * S))
    moved, resolved = second.drain_findings()
    assert (moved.status, moved.due_at) == (OPEN, at(2 * S))
    assert (resolved.status, resolved.due_at, resolved.late_by_ms) == (RESOLVED, at(2 * S), 7 * S)


@pytest.mark.parametrize("value", [0, 1, 255, 256, 1_779_436_800_123, 2**56 - 1, 2**62, 2**63 - 1, -1, -(2**63)])
def test_an_int64_of_an_orders_buf_reads_back_as_written(value: int) -> None:
    """``_at`` reads an order's times byte by byte (compiled) or with ``struct`` (interpreted):
    every int64 the engine writes reads back, the sign and the unset marker (-2**63) included."""
    import struct

    from tracer.engine import _at

    buf = b"\x01" * 8 + struct.pack("<q", value) + b"\x02" * 8
    assert _at(buf, 8) == value


@pytest.mark.parametrize("count", [1, 63, 64, 70])
def test_a_snapshot_keeps_every_event_id_of_its_order_as_its_integer(count: int) -> None:
    """Below 64 ids a struct made for the count unpacks them, from 64 on an array does: both give
    the big-endian integer of each id's first 16 hex digits, in arrival order, and restore them."""
    t = tracer()
    ids = [f"{i:016x}{'ab' * 8}" for i in range(1, count + 1)]
    for i, eid in enumerate(ids):
        t.on_event(hop("o1", CHECKOUT if i == 0 else PAYMENT, i * S, event_id=eid))
    (snap,) = t.drain_snapshots()
    assert snap.eids == [int(eid[:16], 16) for eid in ids]
    again = tracer()
    again.restore([snap], [])
    again.on_event(hop("o1", PAYMENT, 0, event_id=ids[-1]))
    assert again.stats.duplicates == 1
