"""Incidents: the findings of one problem grouped into one thing on-call and support can name.

Findings are grouped by (journey, hop awaited, kind) — an edge and what went wrong there — in a
sliding window: a finding joins the open incident of its key when it was detected within
``window_ms`` of that incident's latest finding, else it opens a new one (the old one is closed as
quiet). An incident keeps a live blast radius: the orders it holds open now, every order it has
touched, their customers, and the total of their ``amount`` attribute when events carry one
(amounts arrive later, through ``set_amounts``, from whoever can read them).

It closes when its orders recover (every finding it holds is resolved) or when the edge flows again
(``close_flowing``: no new finding for ``window_ms`` and the hop is being reported again). Its
severity rises with the number of orders and with age. Ids are stable: a hash of the key and the
detection time of the finding that opened it, so a restart rebuilding the book from the store's
open findings (``restore``) gives the same ids for incidents whose first finding is still open.

Each order maps to its incident in O(1) (``of_order``), for the lookup. Thread-safe: the tracer's
listener feeds it, the HTTP threads and the detector thread read it. In memory, bounded: closed
incidents are remembered up to ``keep_closed``.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import SEVERITIES
from tracer.model import FAILED, MISSING, OPEN, STALLED, UNCONFIRMED, Finding, format_ts

_EXAMPLES = 10
_RANK = {STALLED: 1, UNCONFIRMED: 2, MISSING: 3, FAILED: 4}  # an order in several incidents: the worst first


@dataclass(frozen=True, slots=True)
class IncidentSettings:
    window_ms: int = 10 * 60_000  # findings this close together are one incident
    critical_orders: int = 25  # this many orders at once: one level more severe
    critical_age_ms: int = 15 * 60_000  # open this long (with at least 3 orders): one level more severe
    keep_closed: int = 500


@dataclass(slots=True)
class Incident:
    id: str
    journey: str
    hop: str
    kind: str
    after: str
    opened_at: int
    last_finding_at: int
    open_orders: dict[str, str] = field(default_factory=dict)  # order id -> customer id
    affected: int = 0
    customers: dict[str, int] = field(default_factory=dict)  # customer -> open orders of theirs
    amounts: dict[str, float | None] = field(default_factory=dict)  # open order -> amount (None: has none)
    value: float = 0.0
    priced: int = 0  # open orders whose amount is known
    value_total: float = 0.0  # of every order it touched whose amount is known, recovered or not
    priced_total: int = 0
    examples: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)  # every order it touched, to forget them with it
    closed_at: int | None = None
    close_reason: str = ""
    pipeline_suspect: bool = False  # opened while ordertrail itself was degraded

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.journey, self.hop, self.kind)

    def severity(self, now_ms: int, settings: IncidentSettings) -> str:
        level = 0 if self.kind == STALLED else 1
        n = len(self.open_orders)
        if n >= settings.critical_orders or (n >= 3 and now_ms - self.opened_at >= settings.critical_age_ms):
            level += 1
        return SEVERITIES[min(level, 2)]


def incident_id(journey: str, hop: str, kind: str, opened_at: int) -> str:
    raw = f"{journey}\x1f{hop}\x1f{kind}\x1f{opened_at}".encode()
    return "inc-" + hashlib.blake2b(raw, digest_size=6).hexdigest()


class IncidentBook:
    def __init__(self, settings: IncidentSettings | None = None, *, lookup_url: str = "") -> None:
        self.settings = settings or IncidentSettings()
        self.lookup_url = lookup_url
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, str], Incident] = {}
        self._closed: OrderedDict[str, Incident] = OrderedDict()
        self._by_order: dict[str, dict[str, Incident]] = {}  # order id -> incident id -> incident
        self._unpriced: dict[str, None] = {}  # open orders whose amount was not asked yet, oldest first
        self.opened = 0
        self.closed = 0
        self.suspect: Callable[[], bool] = lambda: False  # is ordertrail itself degraded right now?

    # -- input ----------------------------------------------------------------------------------

    def on_findings(self, findings: Iterable[Finding]) -> None:
        """Every version of findings, in order (the processor's listener)."""
        with self._lock:
            for f in findings:
                if f.status == OPEN:
                    self._add(f)
                else:
                    self._resolve(f)

    def restore(self, open_findings: Iterable[Finding]) -> int:
        """Rebuild from the store's open findings (on start); returns the incidents open."""
        self.on_findings(sorted((f for f in open_findings if f.status == OPEN), key=lambda f: f.detected_at))
        return len(self._open)

    def set_amounts(self, asked: Iterable[str], amounts: dict[str, float]) -> None:
        """The amounts of orders asked about (``pending_amounts``); those not in ``amounts`` have none."""
        with self._lock:
            for oid in asked:
                self._unpriced.pop(oid, None)
                amount = amounts.get(oid)
                for inc in self._by_order.get(oid, {}).values():
                    if oid in inc.open_orders and oid not in inc.amounts:
                        inc.amounts[oid] = amount
                        if amount is not None:
                            inc.value += amount
                            inc.priced += 1
                            inc.value_total += amount
                            inc.priced_total += 1

    def _add(self, f: Finding) -> None:
        key = (f.journey, f.hop, f.kind)
        inc = self._open.get(key)
        if inc is not None and f.detected_at - inc.last_finding_at > self.settings.window_ms:
            self._close(inc, max(f.detected_at, inc.last_finding_at), "quiet; a new incident opened")
            inc = None
        if inc is None:
            inc = Incident(
                incident_id(*key, f.detected_at), f.journey, f.hop, f.kind, f.after, f.detected_at, f.detected_at
            )
            inc.pipeline_suspect = True
            self._open[key] = inc
            self.opened += 1
        if inc.pipeline_suspect and not self.suspect():
            inc.pipeline_suspect = False  # a finding while ordertrail is healthy: the problem is real
        if f.detected_at > inc.last_finding_at:
            inc.last_finding_at = f.detected_at
        oid = f.order_id
        if oid in inc.open_orders:
            return
        inc.open_orders[oid] = f.customer_id
        if f.customer_id:
            inc.customers[f.customer_id] = inc.customers.get(f.customer_id, 0) + 1
        self._by_order.setdefault(oid, {})[inc.id] = inc
        inc.affected += 1
        inc.members.append(oid)
        self._unpriced[oid] = None
        if len(inc.examples) < _EXAMPLES:
            inc.examples.append(oid)

    def _resolve(self, f: Finding) -> None:
        inc = self._open.get((f.journey, f.hop, f.kind))
        if inc is None or f.order_id not in inc.open_orders:
            return
        customer = inc.open_orders.pop(f.order_id)
        self._unpriced.pop(f.order_id, None)
        if customer:
            left = inc.customers[customer] - 1
            if left:
                inc.customers[customer] = left
            else:
                del inc.customers[customer]
        amount = inc.amounts.pop(f.order_id, None)
        if amount is not None:
            inc.value -= amount
            inc.priced -= 1
        if not inc.open_orders:
            self._close(inc, f.resolved_at or f.detected_at, "its orders recovered")

    def _close(self, inc: Incident, at: int, reason: str) -> None:
        inc.closed_at = at
        inc.close_reason = reason
        del self._open[inc.key]
        self._closed[inc.id] = inc
        self.closed += 1
        while len(self._closed) > self.settings.keep_closed:
            _, gone = self._closed.popitem(last=False)
            for oid in gone.members:
                mine = self._by_order.get(oid)
                if mine is not None:
                    mine.pop(gone.id, None)
                    if not mine:
                        del self._by_order[oid]
                        self._unpriced.pop(oid, None)

    # -- time -----------------------------------------------------------------------------------

    def close_flowing(self, now_ms: int, flowing_since: Callable[[str, str, int], bool]) -> list[Incident]:
        """Close incidents with no new finding for the window whose hop is reported again since
        their latest finding (``flowing_since(journey, hop, t)``): the edge flows; the orders still
        open there are lost one by one, not an ongoing problem."""
        closed = []
        with self._lock:
            for inc in list(self._open.values()):
                quiet = now_ms - inc.last_finding_at >= self.settings.window_ms
                if quiet and flowing_since(inc.journey, inc.hop, inc.last_finding_at):
                    self._close(inc, now_ms, "the edge flows again")
                    closed.append(inc)
        return closed

    # -- reading --------------------------------------------------------------------------------

    def open_incidents(self) -> list[Incident]:
        with self._lock:
            return list(self._open.values())

    def pending_amounts(self, limit: int = 1000) -> list[str]:
        """Open orders of incidents whose amount was not asked for yet (at most ``limit``, oldest
        first); ``set_amounts`` answers them. O(limit), whatever the size of the incidents."""
        with self._lock:
            return list(itertools.islice(self._unpriced, limit))

    def of_order(self, order_id: str, now_ms: int) -> dict[str, Any] | None:
        """The incident an order belongs to (open before closed, then the most severe kind), as
        ``GET /v1/incidents`` shows it."""
        with self._lock:
            mine = self._by_order.get(order_id)
            if not mine:
                return None
            best = min(
                mine.values(), key=lambda i: (i.closed_at is not None, -_RANK.get(i.kind, 0), -(i.closed_at or 0))
            )
            return self._view(best, now_ms)

    def views(self, now_ms: int) -> list[dict[str, Any]]:
        """Open incidents (most orders first), then recently closed ones (latest first)."""
        with self._lock:
            opened = sorted(self._open.values(), key=lambda i: (-len(i.open_orders), i.opened_at))
            closed = sorted(self._closed.values(), key=lambda i: -(i.closed_at or 0))[:50]
            return [self._view(i, now_ms) for i in opened + closed]

    def severity(self, inc: Incident, now_ms: int) -> str:
        return inc.severity(now_ms, self.settings)

    def _view(self, inc: Incident, now_ms: int) -> dict[str, Any]:
        example = next(iter(inc.open_orders), inc.examples[0] if inc.examples else "")
        return {
            "id": inc.id,
            "journey": inc.journey,
            "hop": inc.hop,
            "kind": inc.kind,
            "after": inc.after,
            "status": "open" if inc.closed_at is None else "closed",
            "severity": inc.severity(now_ms, self.settings) if inc.closed_at is None else None,
            "orders": len(inc.open_orders),
            "orders_total": inc.affected,
            "value_total": round(inc.value_total, 2) if inc.priced_total else None,
            "customers": len(inc.customers),
            "value": round(inc.value, 2) if inc.priced else None,
            "since": format_ts(inc.opened_at),
            "last_finding_at": format_ts(inc.last_finding_at),
            "closed_at": None if inc.closed_at is None else format_ts(inc.closed_at),
            "close_reason": inc.close_reason or None,
            "pipeline_suspect": inc.pipeline_suspect,
            "example_orders": list(itertools.islice(inc.open_orders, _EXAMPLES)) or list(inc.examples),
            "lookup": f"{self.lookup_url}/?q={example}",
        }
