"""The lookup page: what it shows, and that nothing from events or the request reaches it unescaped."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from ordertrail.page import render_page

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "input", "br", "img", "link", "hr"}


def order_view(**changes: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "order_id": "A-1001",
        "journey": "web_order",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "customer_id": "c-42",
        "status": "missing",
        "explanation": "Payment was taken at 10:02 UTC. The warehouse has not confirmed stock.",
        "advice": "Apologise for the delay and tell the customer the order is not lost.",
        "hops": [
            {"hop": "checkout.placed", "ts": "2026-11-22T10:01:58.000Z", "service": "web", "status": "ok"},
            {"hop": "payment.authorized", "ts": "2026-11-22T10:02:03.000Z", "service": "payments", "status": "ok"},
        ],
        "next": {"hop": "inventory.reserved", "due_at": "2026-11-22T10:04:03.000Z"},
        "findings": [
            {
                "order_id": "A-1001",
                "journey": "web_order",
                "kind": "missing",
                "hop": "inventory.reserved",
                "after": "payment.authorized",
                "due_at": "2026-11-22T10:04:03.000Z",
                "detected_at": "2026-11-22T10:04:04.000Z",
                "status": "resolved",
                "resolved_at": "2026-11-22T10:04:43.000Z",
                "late_by_ms": 40_000,
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "customer_id": "c-42",
            }
        ],
        "incident": {"id": "inc-7", "orders": 37},
    }
    view.update(changes)
    return view


def assert_well_formed(page: str) -> None:
    stack: list[str] = []
    problems: list[str] = []

    class Checker(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in VOID:
                stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if stack and stack[-1] == tag:
                stack.pop()
            else:
                problems.append(f"</{tag}> closes {stack[-1:]}")

    Checker().feed(page)
    assert problems == []
    assert stack == []


def test_order_page_shows_the_explanation_and_what_to_tell_the_customer() -> None:
    page = render_page(order_view(), query="A-1001")
    assert '<p class="explanation">Payment was taken at 10:02 UTC.' in page
    assert "What to tell the customer</strong>Apologise for the delay" in page
    assert '<span class="badge s-missing">Stuck</span>' in page
    assert "<title>Order A-1001 · ordertrail</title>" in page


def test_order_page_shows_the_timeline_in_plain_words_with_times_and_services() -> None:
    page = render_page(order_view(), query="A-1001")
    placed, paid = page.index("The order was placed"), page.index("Payment was taken</span>")
    assert placed < paid
    assert '<time datetime="2026-11-22T10:02:03.000Z">22 Nov 2026 10:02:03 UTC</time>' in page
    assert "by <code>payments</code>" in page


def test_order_page_shows_the_next_step_with_its_due_time() -> None:
    page = render_page(order_view(), query="A-1001")
    assert 'Due by <time datetime="2026-11-22T10:04:03.000Z">' in page
    assert "Next, the warehouse should confirm stock" in page


def test_order_page_shows_findings_with_kind_status_and_lateness() -> None:
    page = render_page(order_view(), query="A-1001")
    assert "<td>Overdue</td><td><code>inventory.reserved</code></td>" in page
    assert '<span class="badge s-resolved">resolved</span></td><td>40 seconds</td>' in page


def test_order_page_shows_the_incident() -> None:
    page = render_page(order_view(), query="A-1001")
    assert "Wider incident" in page
    assert "<dt>orders</dt><dd>37</dd>" in page


def test_a_failed_step_is_marked_in_the_timeline() -> None:
    hops = [{"hop": "payment.authorized", "ts": "2026-11-22T10:02:03.000Z", "service": None, "status": "error"}]
    page = render_page(order_view(hops=hops, next=None, status="failed"), query="A-1001")
    assert '<li class="error">' in page
    assert "The payment failed" in page


def test_everything_that_came_from_events_is_escaped() -> None:
    hops = [{"hop": EVIL, "ts": EVIL, "service": EVIL, "status": EVIL}]
    finding = {"kind": EVIL, "hop": EVIL, "due_at": EVIL, "status": EVIL, "late_by_ms": None}
    view = order_view(
        order_id=EVIL,
        journey=EVIL,
        trace_id=EVIL,
        customer_id=EVIL,
        status=EVIL,
        explanation=EVIL,
        advice=EVIL,
        hops=hops,
        next={"hop": EVIL, "due_at": EVIL},
        findings=[finding],
        incident={EVIL: EVIL},
    )
    page = render_page(view, query=EVIL, error=EVIL, searched=[{"order_id": EVIL, "status": EVIL, "summary": EVIL}])
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert_well_formed(page)


def test_the_query_is_kept_in_the_search_box_escaped() -> None:
    page = render_page(None, query='"><img src=x onerror=alert(1)>')
    assert 'value="&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"' in page
    assert "<img" not in page


def test_an_error_is_shown_as_an_alert() -> None:
    page = render_page(None, query="A-404", error="No order “A-404” was found.")
    assert '<div class="alert" role="alert"><p>No order “A-404” was found.</p></div>' in page


def test_search_results_link_to_each_order_percent_encoded() -> None:
    rows = [
        {"order_id": "A 1&2", "status": "in_progress", "summary": "Payment was taken at 10:02 UTC.", "last_ts": None},
        {"order_id": "A-2", "status": "completed", "summary": "", "last_ts": "2026-11-22T10:02:03.000Z"},
    ]
    page = render_page(None, query="c-42", searched=rows)
    assert "<h1>2 orders for c-42</h1>" in page
    assert '<a href="/?q=A%201%262">A 1&amp;2</a>' in page
    assert '<span class="badge s-completed">Completed</span>' in page


def test_no_search_results_says_so() -> None:
    page = render_page(None, query="c-nobody", searched=[])
    assert "No orders found for c-nobody" in page


def test_the_empty_page_has_a_labelled_search_box() -> None:
    page = render_page(None, query="")
    assert '<label for="q">' in page
    assert 'id="q" name="q" value=""' in page
    assert "Look up an order by its number" in page
    assert_well_formed(page)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    page = render_page(order_view(), query="A-1001")
    assert "<script" not in page
    assert "<link" not in page
    assert "src=" not in page
    assert "http://" not in page and "https://" not in page
    assert_well_formed(page)
