"""Incidents: grouping by (journey, hop, kind) in a sliding window, live blast radius, closing,
severity, stable ids, restore, and the O(1) order lookup."""

from __future__ import annotations

import msgspec

from detectors.incidents import IncidentBook, IncidentSettings
from tracer.model import MISSING, RESOLVED, STALLED, Finding

T0 = 1_795_000_000_000


def finding(oid: str, at: int, *, kind: str = MISSING, hop: str = "payment.authorized", customer: str = "") -> Finding:
    return Finding(oid, "web_order", kind, hop, "checkout.placed", at - 1000, at, customer_id=customer)


def resolved(f: Finding, at: int) -> Finding:
    return msgspec.structs.replace(f, status=RESOLVED, resolved_at=at, late_by_ms=at - f.due_at)


def test_findings_of_one_edge_and_kind_close_together_make_one_incident() -> None:
    book = IncidentBook(IncidentSettings(window_ms=60_000), lookup_url="http://x")
    book.on_findings([finding(f"o{i}", T0 + i * 1000, customer=f"c{i % 3}") for i in range(10)])
    book.on_findings([finding("s1", T0, kind=STALLED)])
    (missing,) = [v for v in book.views(T0) if v["kind"] == MISSING]
    assert (missing["orders"], missing["customers"], missing["status"]) == (10, 3, "open")
    assert missing["lookup"].startswith("http://x/?q=o")
    assert len(book.open_incidents()) == 2


def test_a_finding_after_a_quiet_window_opens_a_new_incident() -> None:
    book = IncidentBook(IncidentSettings(window_ms=60_000))
    book.on_findings([finding("o1", T0)])
    book.on_findings([finding("o2", T0 + 120_000)])
    views = book.views(T0 + 120_000)
    assert [v["status"] for v in views] == ["open", "closed"]
    assert views[0]["id"] != views[1]["id"]


def test_the_incident_closes_when_its_orders_recover() -> None:
    book = IncidentBook()
    fs = [finding("o1", T0), finding("o2", T0 + 1)]
    book.on_findings(fs)
    book.on_findings([resolved(fs[0], T0 + 5000)])
    assert book.views(T0)[0]["orders"] == 1
    book.on_findings([resolved(fs[1], T0 + 6000)])
    (view,) = book.views(T0 + 6000)
    assert (view["status"], view["close_reason"], view["orders_total"]) == ("closed", "its orders recovered", 2)


def test_the_incident_closes_when_the_edge_flows_again_after_a_quiet_window() -> None:
    book = IncidentBook(IncidentSettings(window_ms=60_000))
    book.on_findings([finding("o1", T0)])
    assert book.close_flowing(T0 + 30_000, lambda j, h, t: True) == []  # not quiet long enough
    assert book.close_flowing(T0 + 61_000, lambda j, h, t: False) == []  # quiet, but nothing flows
    (closed,) = book.close_flowing(T0 + 61_000, lambda j, h, t: t == T0)
    assert closed.close_reason == "the edge flows again"


def test_severity_rises_with_count_and_age() -> None:
    book = IncidentBook(IncidentSettings(critical_orders=5, critical_age_ms=600_000))
    book.on_findings([finding("o1", T0), finding("s1", T0, kind=STALLED)])
    missing, stalled = sorted(book.open_incidents(), key=lambda i: i.kind)
    assert (book.severity(missing, T0), book.severity(stalled, T0)) == ("warning", "info")
    book.on_findings([finding(f"o{i}", T0 + i) for i in range(2, 6)])
    assert book.severity(missing, T0) == "critical"
    book.on_findings([finding(f"s{i}", T0 + i, kind=STALLED) for i in range(2, 4)])
    assert book.severity(stalled, T0 + 600_000) == "warning"


def test_ids_are_stable_across_a_restore_from_open_findings() -> None:
    fs = [finding(f"o{i}", T0 + i * 1000) for i in range(5)]
    first = IncidentBook()
    first.on_findings(fs)
    again = IncidentBook()
    assert again.restore(reversed(fs)) == 1
    assert again.views(T0)[0]["id"] == first.views(T0)[0]["id"]


def test_each_order_names_its_incident_and_unknown_orders_none() -> None:
    book = IncidentBook()
    book.on_findings([finding("o1", T0), finding("o2", T0)])
    inc = book.of_order("o2", T0)
    assert inc is not None and inc["orders"] == 2 and "o2" in inc["example_orders"]
    assert book.of_order("nope", T0) is None


def test_value_total_follows_amounts_and_recoveries() -> None:
    book = IncidentBook()
    fs = [finding("o1", T0), finding("o2", T0), finding("o3", T0)]
    book.on_findings(fs)
    assert book.views(T0)[0]["value"] is None
    pending = book.pending_amounts()
    book.set_amounts(pending, {"o1": 10.5, "o2": 4.5})  # o3 carries no amount
    assert book.views(T0)[0]["value"] == 15.0 and book.pending_amounts() == []
    book.on_findings([resolved(fs[0], T0 + 1)])
    assert book.views(T0)[0]["value"] == 4.5 and book.views(T0)[0]["value_total"] == 15.0


def test_incidents_opened_while_the_pipeline_is_degraded_are_suspect_until_a_healthy_finding() -> None:
    book = IncidentBook()
    degraded = [True]
    book.suspect = lambda: degraded[0]
    book.on_findings([finding("o1", T0)])
    (inc,) = book.open_incidents()
    assert inc.pipeline_suspect
    degraded[0] = False
    book.on_findings([finding("o2", T0 + 1)])
    assert not inc.pipeline_suspect


def test_closed_incidents_are_forgotten_beyond_keep_closed() -> None:
    book = IncidentBook(IncidentSettings(window_ms=1, keep_closed=2))
    for i in range(5):
        book.on_findings([finding(f"o{i}", T0 + i * 10)])
    assert len(book.views(T0)) == 3  # one open, two closed remembered
    assert book.of_order("o0", T0) is None and book.of_order("o4", T0) is not None


def test_an_order_in_several_incidents_names_the_open_then_the_most_severe() -> None:
    book = IncidentBook()
    book.on_findings([finding("o1", T0, kind=STALLED), finding("o1", T0 + 5000)])
    inc = book.of_order("o1", T0)
    assert inc is not None and inc["kind"] == MISSING
