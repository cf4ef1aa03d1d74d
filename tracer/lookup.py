"""The lookup of one order (CONTRACT §5): its trail, status, next step and a plain-language
explanation a support agent can read to a customer.

``build_order_view(record, journeys, now_ms=…)`` turns what the store holds about an order into
the ``GET /v1/orders/{id}`` object, exactly the keys of CONTRACT §5 plus ``advice`` (what to tell
or do for the customer). ``explain_unknown`` is the 404 body, ``search_views`` the search rows.

Status: the most severe open finding (failed > missing > unconfirmed > stalled), else
``completed`` when every hop the journey's ``complete`` names happened, else ``in_progress``.
``next`` is the earliest-due step still awaited, overdue or not (null once completed).

The explanation never uses tracing words (hop, span, finding, trace, journey): hop names become
phrases from ``VOCABULARY`` (or words made from the name), times are ``10:02 UTC`` on the day of
``now_ms`` and ``21 Nov 10:02 UTC`` otherwise; due times are rounded up to the minute so the
time told to a customer is never earlier than the real one. Two optional lookups make it
concrete: ``waiting`` (how many orders wait at the same step; the store's ``waiting_at``) and
``transit`` (the edge's learned p50/p99; how long the step normally takes).

Pure: no clock, no I/O. Imports only the tracer's model, journeys, engine snapshot and the
store's ``OrderRecord`` type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, Protocol

from tracer.clickhouse import OrderRecord
from tracer.engine import OrderSnapshot
from tracer.journeys import Journey, Journeys
from tracer.model import (
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    MISSING,
    OPEN,
    RESOLVED,
    STALLED,
    STATUS_ERROR,
    UNCONFIRMED,
    Finding,
    derive_trace_id,
    format_ts,
)


class WaitingAt(Protocol):
    """Open orders of ``journey`` awaiting ``hop`` (the order asked about included when it is one
    of them), and the earliest last-event time among them. ``Store.waiting_at`` is one."""

    def __call__(self, journey: str, hop: str) -> tuple[int, int | None]: ...


class TransitStats(Protocol):
    """The learned transit time into ``hop`` as (p50_ms, p99_ms), or None while not learned."""

    def __call__(self, journey: str, hop: str) -> tuple[int, int] | None: ...


class Wording(NamedTuple):
    """How to say a hop in plain words. ``usual`` is followed by "within 15 seconds", ``expect``
    by "by 10:04 UTC"."""

    done: str  # "Payment was taken"
    not_yet: str  # "Payment has not been taken"
    usual: str  # "it normally is"
    expect: str  # "payment should be taken"
    failed: str  # "The payment failed"


# Hops -> their words. Data, one entry per three lines, so kept out of the formatter.
# fmt: off
_ENTRIES: Final = (
    (("checkout.placed", "checkout.completed", "order.placed", "order.created"),
     Wording("The order was placed", "The order has not been placed", "it normally is",
             "the order should be placed", "Placing the order failed")),
    (("payment.authorized", "payment.authorised", "payment.taken"),
     Wording("Payment was taken", "Payment has not been taken", "it normally is",
             "payment should be taken", "The payment failed")),
    (("payment.captured", "payment.settled"),
     Wording("The payment was collected", "The payment has not been collected", "it normally is",
             "the payment should be collected", "Collecting the payment failed")),
    (("inventory.reserved", "stock.reserved", "inventory.confirmed"),
     Wording("The warehouse confirmed stock", "The warehouse has not confirmed stock", "it normally does",
             "the warehouse should confirm stock", "The warehouse could not confirm stock")),
    (("email.confirmation_sent", "confirmation.sent", "email.sent", "notification.sent"),
     Wording("The confirmation email was sent", "The confirmation email has not been sent", "it normally is",
             "the confirmation email should be sent", "Sending the confirmation email failed")),
    (("fulfilment.shipped", "fulfillment.shipped", "order.shipped", "shipment.dispatched"),
     Wording("The order was shipped", "The order has not shipped", "it normally does",
             "the order should ship", "Shipping the order failed")),
    (("order.delivered", "shipment.delivered", "delivery.completed"),
     Wording("The order was delivered", "The order has not been delivered", "it normally is",
             "the order should be delivered", "Delivering the order failed")),
    (("login.started", "login.requested"),
     Wording("The customer started to sign in", "The customer has not started to sign in", "this normally happens",
             "the customer should start to sign in", "Starting the sign-in failed")),
    (("login.code_sent", "login.otp_sent", "otp.sent"),
     Wording("The sign-in code was sent", "The sign-in code has not been sent", "it normally is",
             "the sign-in code should be sent", "Sending the sign-in code failed")),
    (("login.succeeded", "login.completed"),
     Wording("The customer signed in", "The customer has not signed in", "this normally happens",
             "the customer should be signed in", "Signing in failed")),
    (("statement.requested",),
     Wording("The statement was requested", "The statement has not been requested", "it normally is",
             "the statement should be requested", "Requesting the statement failed")),
    (("statement.generated", "statement.produced"),
     Wording("The statement was produced", "The statement has not been produced", "it normally is",
             "the statement should be produced", "Producing the statement failed")),
    (("statement.sent", "statement.delivered"),
     Wording("The statement was sent", "The statement has not been sent", "it normally is",
             "the statement should be sent", "Sending the statement failed")),
    (("payment.scheduled",),
     Wording("The payment was scheduled", "The payment has not been scheduled", "it normally is",
             "the payment should be scheduled", "Scheduling the payment failed")),
    (("payment.executed", "payment.sent", "transfer.completed"),
     Wording("The scheduled payment was made", "The scheduled payment has not been made", "it normally is",
             "the scheduled payment should be made", "The scheduled payment failed")),
)
# fmt: on
VOCABULARY: Final[Mapping[str, Wording]] = {hop: words for hops, words in _ENTRIES for hop in hops}

STATUS_LABELS: Final[Mapping[str, str]] = {
    IN_PROGRESS: "In progress",
    COMPLETED: "Completed",
    STALLED: "Delayed",
    MISSING: "Stuck",
    UNCONFIRMED: "Not confirmed to the customer",
    FAILED: "Failed",
}
KIND_LABELS: Final[Mapping[str, str]] = {
    MISSING: "Overdue",
    STALLED: "Slower than usual",
    UNCONFIRMED: "Confirmation not sent",
    FAILED: "Failed",
}
_SEVERITY: Final = (FAILED, MISSING, UNCONFIRMED, STALLED)  # most severe first
_WIDER: Final = 3  # this many other orders waiting at the same step make it a wider problem


def wording(hop: str) -> Wording:
    """The plain words for a hop: from ``VOCABULARY``, else made from its name."""
    known = VOCABULARY.get(hop)
    if known is not None:
        return known
    words = " ".join(hop.replace(".", " ").replace("_", " ").replace("-", " ").split()) or hop
    return Wording(
        f"The step “{words}” happened",
        f"The step “{words}” has not happened",
        "it normally happens",
        f"the step “{words}” should happen",
        f"The step “{words}” failed",
    )


def spoken_time(ms: int, now_ms: int, *, round_up: bool = False) -> str:
    """``10:02 UTC`` on the day of ``now_ms``, ``21 Nov 10:02 UTC`` otherwise (with the year when
    it differs). ``round_up``: to the next whole minute (for times something is due by)."""
    if round_up and ms % 60_000:
        ms += 60_000 - ms % 60_000
    t = datetime.fromtimestamp(ms // 1000, tz=UTC)
    now = datetime.fromtimestamp(now_ms // 1000, tz=UTC)
    if t.date() == now.date():
        return f"{t:%H:%M} UTC"
    if t.year == now.year:
        return f"{t.day} {t:%b %H:%M} UTC"
    return f"{t.day} {t:%b %Y %H:%M} UTC"


def spoken_duration(ms: int) -> str:
    """``15 seconds``, ``2 minutes 30 seconds``, ``3 hours``, ``1 day 4 hours``; ``under a second``."""
    if ms < 1000:
        return "under a second"
    s = round(ms / 1000)
    for size, unit, sub_size, sub_unit in (
        (86_400, "day", 3600, "hour"),
        (3600, "hour", 60, "minute"),
        (60, "minute", 1, "second"),
    ):
        if s >= size:
            whole, rest = divmod(s, size)
            sub = rest // sub_size if whole < 10 else 0
            return _plural(whole, unit) + (f" {_plural(sub, sub_unit)}" if sub else "")
    return _plural(s, "second")


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _lower(sentence: str) -> str:
    return sentence[:1].lower() + sentence[1:]


class _Order(NamedTuple):
    """The facts the explanation is made from."""

    journey: Journey | None
    reported: list[tuple[int, str]]  # (ts, hop) of every successful report, in time order
    open: list[Finding]  # most severe first
    resolved: list[Finding]
    status: str
    awaited: list[tuple[int, str]]  # (due_at, hop) of journey steps awaited, earliest first


def build_order_view(
    record: OrderRecord,
    journeys: Journeys,
    *,
    now_ms: int,
    waiting: WaitingAt | None = None,
    transit: TransitStats | None = None,
    incident: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``GET /v1/orders/{id}`` object of CONTRACT §5 (plus ``advice``) for one stored order."""
    snap, events = record.snapshot, record.events
    if snap is None and not events and not record.findings:
        raise ValueError("record: holds no state, events or findings; answer with explain_unknown instead")
    order_id = snap.order_id if snap else (events[0].order_id if events else record.findings[0].order_id)
    journey_name = _journey_name(record, journeys)
    order = _facts(record, journeys.journeys.get(journey_name) if journey_name else None)
    story = _Story(order, now_ms, snap, waiting, transit)
    explanation, advice = story.tell()
    trace_id = (snap.trace_id if snap else "") or next((e.trace_id for e in events if e.trace_id), "")
    trace_id = trace_id or next((f.trace_id for f in record.findings if f.trace_id), "") or derive_trace_id(order_id)
    customer_id = (snap.customer_id if snap else "") or next((e.customer_id for e in events if e.customer_id), "")
    customer_id = customer_id or next((f.customer_id for f in record.findings if f.customer_id), "")
    nxt = order.awaited[0] if order.awaited and order.status != COMPLETED else None
    return {
        "order_id": order_id,
        "journey": journey_name or None,
        "trace_id": trace_id,
        "customer_id": customer_id or None,
        "status": order.status,
        "explanation": explanation,
        "advice": advice,
        "hops": [
            {"hop": e.hop, "ts": format_ts(e.ts), "service": e.service or None, "status": e.status} for e in events
        ],
        "next": None if nxt is None else {"hop": nxt[1], "due_at": format_ts(nxt[0])},
        "findings": [f.to_wire() for f in record.findings],
        "incident": incident,
    }


def _journey_name(record: OrderRecord, journeys: Journeys) -> str:
    if record.snapshot is not None and record.snapshot.journey:
        return record.snapshot.journey
    for source in (record.findings, record.events):
        for item in source:
            if item.journey:
                return item.journey
    for ev in record.events:
        inferred = journeys.infer(ev.hop)
        if inferred is not None:
            return inferred.name
    return ""


def _facts(record: OrderRecord, journey: Journey | None) -> _Order:
    snap = record.snapshot
    reported = [(e.ts, e.hop) for e in record.events if e.status != STATUS_ERROR]
    if not record.events and snap is not None:
        reported = _reported(snap)
    open_ = [f for f in record.findings if f.status == OPEN]
    open_.sort(key=lambda f: (_SEVERITY.index(f.kind) if f.kind in _SEVERITY else len(_SEVERITY), f.due_at))
    resolved = [f for f in record.findings if f.status == RESOLVED]
    done: dict[str, int] = {}  # journey hop -> when it happened (reported, or implied by a later hop)
    awaited: list[tuple[int, str]] = []
    complete = snap is not None and snap.status == COMPLETED
    if journey is not None:
        pairs = list(zip(snap.hops, snap.hop_ts, strict=True)) if snap is not None else []
        for hop, ts in [*pairs, *((h, t) for t, h in reported)]:
            if hop in journey.index and ts < done.get(hop, ts + 1):
                done[hop] = ts
        for hop, ts in list(done.items()):  # every hop before a hop that happened, happened
            for a in journey.ancestors[journey.index[hop]]:
                ahop = journey.hops[a]
                if ts < done.get(ahop, ts + 1):
                    done[ahop] = ts
        for step in journey.steps:
            if step.hop not in done and step.after in done:
                awaited.append((done[step.after] + step.within_ms, step.hop))
        awaited.sort()
        complete = complete or all(h in done for h in journey.complete)
    status = open_[0].kind if open_ else (COMPLETED if complete else IN_PROGRESS)
    return _Order(journey, reported, open_, resolved, status, awaited)


def _reported(s: OrderSnapshot) -> list[tuple[int, str]]:
    """(ts, hop) of the hops the snapshot knows were reported (not implied), in time order."""
    return sorted((ts, hop) for hop, ts, imp in zip(s.hops, s.hop_ts, s.implied, strict=True) if not imp)


class _Story:
    """Builds the explanation and the advice, sentence by sentence."""

    def __init__(
        self,
        order: _Order,
        now_ms: int,
        snap: OrderSnapshot | None,
        waiting: WaitingAt | None,
        transit: TransitStats | None,
    ) -> None:
        self.o = order
        self.now = now_ms
        self.snap = snap
        self.waiting = waiting
        self.transit = transit
        self.sentences: list[str] = []
        self.others = 0  # other orders waiting at the step of the worst open problem

    def at(self, ms: int) -> str:
        return spoken_time(ms, self.now)

    def by(self, ms: int) -> str:
        """A time something is due by: rounded up to the minute while still ahead."""
        return spoken_time(ms, self.now, round_up=ms > self.now)

    def tell(self) -> tuple[str, str]:
        o = self.o
        late_hops = self._resolved()
        if o.reported:
            ts, hop = o.reported[-1]
            if o.status == COMPLETED:
                last = "" if hop in late_hops else f": {_lower(wording(hop).done)} at {self.at(ts)}"
                self.sentences.insert(0, f"Everything went through{last}.")
            elif hop not in late_hops:
                self.sentences.insert(0, f"{wording(hop).done} at {self.at(ts)}.")
        elif not o.open:
            self.sentences.append("Nothing has been reported as done for this order yet.")
        told: set[str] = set()
        for f in o.open:  # most severe first; a step that is overdue is not also told as slow
            if f.hop not in told:
                self._problem(f, worst=not told)
                told.add(f.hop)
        if o.status in (IN_PROGRESS, UNCONFIRMED):
            self._upcoming()
        return " ".join(self.sentences), self._advice()

    def _resolved(self) -> set[str]:
        """Say which steps came late or were retried; returns the hops already told."""
        told: set[str] = set()
        by_hop: dict[str, Finding] = {}
        for f in self.o.resolved:
            if f.kind == FAILED:
                retried = f.due_at + (f.late_by_ms or 0)
                w = wording(f.hop)
                self.sentences.append(
                    f"{w.failed} at {self.at(f.due_at)}, but it went through when tried again at "
                    f"{self.at(retried)}; all is well now."
                )
                told.add(f.hop)
            elif f.late_by_ms and (f.hop not in by_hop or by_hop[f.hop].kind == STALLED):
                by_hop[f.hop] = f
        for hop, f in by_hop.items():
            late = f.late_by_ms or 0
            than = "than usual" if f.kind == STALLED else "than expected"
            self.sentences.append(
                f"{wording(hop).done} at {self.at(f.due_at + late)}, {spoken_duration(late)} later {than}; "
                "all is well now."
            )
            told.add(hop)
        return told

    def _problem(self, f: Finding, *, worst: bool) -> None:
        w = wording(f.hop)
        if f.kind == FAILED:
            self.sentences.append(
                f"{w.failed} at {self.at(f.due_at)}, so the order is on hold until it is tried again."
            )
            return
        others = self._waiting_clause(f.hop) if worst else ""
        if f.kind == MISSING:
            self.sentences.append(f"{w.not_yet}: it was due by {self.by(f.due_at)}.")
            if others:
                self.sentences.append(others[:1].upper() + others[1:] + ".")
        elif f.kind == UNCONFIRMED:
            lead = "The order went through, but " + _lower(w.not_yet) if worst else w.not_yet
            self.sentences.append(
                f"{lead} (it was due by {self.by(f.due_at)}), so the customer may think the order was lost."
            )
            if others:
                self.sentences.append(others[:1].upper() + others[1:] + ".")
        else:
            usual = self._usual(f.hop)
            clause = f"; {w.usual} within {spoken_duration(usual)}" if usual is not None else " and is running late"
            self.sentences.append(f"{w.not_yet}{clause}{', and ' + others if others else ''}.")
            hard = self._hard_due(f.hop)
            if hard is not None and hard > self.now:
                self.sentences.append(f"It is late, but still has until {self.by(hard)}.")

    def _waiting_clause(self, hop: str) -> str:
        journey = self.o.journey
        if self.waiting is None or journey is None:
            return ""
        count, since = self.waiting(journey.name, hop)
        snap = self.snap
        if snap is not None and snap.open and snap.next_hop == hop:
            count -= 1  # the order asked about is one of them
        self.others = max(count, 0)
        if count <= 0:
            return "no other orders are held up at the same step, so this looks specific to this order"
        verb = "order is" if count == 1 else "orders are"
        return f"{count} other {verb} waiting at the same step" + (f" since {self.at(since)}" if since else "")

    def _usual(self, hop: str) -> int | None:
        journey = self.o.journey
        if journey is None:
            return None
        learned = self.transit(journey.name, hop) if self.transit is not None else None
        if learned is not None:
            return learned[1]
        step = journey.step_at[journey.index[hop]] if hop in journey.index else None
        return step.stall_after_ms if step is not None else None

    def _hard_due(self, hop: str) -> int | None:
        return next((due for due, h in self.o.awaited if h == hop), None)

    def _upcoming(self) -> None:
        told = {f.hop for f in self.o.open}
        upcoming = [(due, hop) for due, hop in self.o.awaited if hop not in told]
        if upcoming:
            due, hop = upcoming[0]
            self.sentences.append(f"Next, {wording(hop).expect} by {self.by(due)}.")
            if due < self.now and self.o.status == IN_PROGRESS:
                self.sentences.append("That time has just passed; we are checking on it.")
        elif self.o.journey is None and self.o.status == IN_PROGRESS:
            self.sentences.append("We do not follow this kind of order step by step, so we cannot say what comes next.")

    def _advice(self) -> str:
        o = self.o
        if o.status == COMPLETED:
            return "Everything has gone through; nothing needs doing."
        if o.status == IN_PROGRESS:
            if o.journey is None:
                return "Tell the customer the order is being processed; if they are worried, pass the order number on."
            if not o.awaited:
                return "The order is on track: tell the customer it is being processed."
            due = o.awaited[0][0]
            if due < self.now:
                return "The order is being processed, but its next step is a little late; check again in a few minutes."
            on_track = "The order is on track: tell the customer it is being processed"
            return f"{on_track}; the next step is due by {self.by(due)}."
        worst = o.open[0]
        wider = (
            f" {self.others} other orders are held up at the same step, so this is a wider problem, "
            "not something about this order."
            if self.others >= _WIDER
            else ""
        )
        if worst.kind == UNCONFIRMED:
            return "Reassure the customer that the order went through, and resend the confirmation." + wider
        if worst.kind == STALLED:
            hard = self._hard_due(worst.hop)
            until = f"; it should still go through by {self.by(hard)}" if hard is not None and hard > self.now else ""
            return f"Tell the customer the order is delayed, not lost{until}. Nothing needs doing yet." + wider
        if worst.kind == MISSING:
            return (
                "Apologise for the delay and tell the customer the order is not lost; pass the order number to "
                "the operations team. Do not ask the customer to order again, or it may go through twice." + wider
            )
        return (
            "Tell the customer this step did not go through and the order is on hold; pass the order number to "
            "the operations team rather than asking them to order again." + wider
        )


def explain_unknown(order_id: str, checked: list[str]) -> dict[str, Any]:
    """The 404 body: what was looked at, and the likely reasons an order is not there."""
    hints = [
        "the order may not have reached us yet (it usually takes a few seconds)",
        "the number may be mistyped (it must match exactly, capitals included)",
        "or it is older than the time we keep orders for",
    ]
    stripped = order_id.strip()
    if stripped != order_id:
        hints.insert(0, "it has spaces at the start or end; try it without them")
    if len(stripped) == 32 and all(c in "0123456789abcdef" for c in stripped):
        hints.insert(0, "it looks like a trace id; search by trace id instead")
    seen = "; ".join(checked) if checked else "the order store"
    return {
        "error": "unknown order",
        "order_id": order_id,
        "explanation": f"No order “{order_id}” was found. Checked: {seen}. Possible reasons: {'; '.join(hints)}.",
        "checked": list(checked),
    }


def search_views(snapshots: Iterable[OrderSnapshot], *, now_ms: int) -> list[dict[str, Any]]:
    """One short row per order for search results: ids, status, last step done and the next one."""
    rows = []
    for s in snapshots:
        reported = _reported(s)
        summary = f"{wording(reported[-1][1]).done} at {spoken_time(reported[-1][0], now_ms)}." if reported else ""
        awaiting = bool(s.next_hop) and s.next_due > 0 and s.status != COMPLETED
        rows.append(
            {
                "order_id": s.order_id,
                "journey": s.journey or None,
                "trace_id": s.trace_id,
                "customer_id": s.customer_id or None,
                "status": s.status,
                "summary": summary,
                "first_ts": format_ts(s.first_ts),
                "last_ts": format_ts(s.last_ts),
                "next": {"hop": s.next_hop, "due_at": format_ts(s.next_due)} if awaiting else None,
            }
        )
    return rows
