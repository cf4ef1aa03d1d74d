"""The tracer engine: per-order state, journey deadlines, and findings (CONTRACT §2–3).

Lifecycle, in the manner of a keyed stateful operator:

* ``on_event(ev, partition)`` folds one hop into its order's state: dedupes by event id, resolves
  findings the hop answers (late arrivals), raises or resolves ``failed``, learns transit times
  and arms the order's next deadline.
* ``advance(now_ms)`` moves the engine's clock (never backwards) and raises the findings whose
  deadline has passed. The engine never reads a clock: the caller decides what time it is
  (``tracer.clock`` for live partitions, event time in a backtest).
* ``drain_findings()`` / ``drain_snapshots()`` hand over what changed since the last call, for
  the store and the detectors. ``restore()`` / ``drop_partition()`` rebuild and forget the open
  orders of a partition.

State transitions are joins (earliest time of a hop, union of hops seen), so duplicates and
out-of-order arrival converge on the same state. Per-order state is one ``gc=False`` struct with
hop times and event-id hashes packed in ``bytes``; the deadline index holds one entry per order.

This module imports only the tracer's model, journeys, deadline index and transit learning.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from tracer.deadlines import DeadlineIndex
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
    HopEvent,
    derive_trace_id,
)
from tracer.transit import EdgeTransit

_Q: Final = struct.Struct("<q")
_UNSET: Final = -(2**63)
_UNSET_BYTES: Final = _Q.pack(_UNSET)
_MAX_PENDING: Final = 32  # hops of an order whose journey is not yet known, kept to replay
_SEVERITY: Final = {STALLED: 1, UNCONFIRMED: 2, MISSING: 3, FAILED: 4}


class OrderState(msgspec.Struct, gc=False):
    """One open order. Bit i of ``seen`` is hop i of the journey (0 is the start)."""

    journey: Journey | None
    partition: int
    times: bytes  # packed int64 per hop index: earliest ok time (implied hops: a bound)
    eids: bytes  # packed uint64 hashes of event ids seen
    last_ts: int
    seen: int = 0  # hops reported ok
    implied: int = 0  # hops not reported, but a later hop was: they happened
    raised: int = 0  # bit 2i: stalled raised for hop i; bit 2i+1: missing/unconfirmed raised
    armed: int = 0  # the deadline bucket this order is armed in, 0 when none
    trace_id: str | None = None  # None: derived from the order id
    customer_id: str = ""
    pending: list[tuple[str, int, bool]] | None = None  # (hop, ts, error) awaiting a journey
    completed: bool = False


class OrderSnapshot(msgspec.Struct, frozen=True):
    """What the store keeps of an order: enough for the lookup and to restore it exactly."""

    order_id: str
    partition: int
    journey: str
    trace_id: str
    customer_id: str
    status: str
    hops: list[str]  # journey hops reported or implied, in journey order
    hop_ts: list[int]
    implied: list[bool]
    first_ts: int
    last_ts: int
    next_hop: str
    next_due: int  # 0 when nothing is awaited
    open: bool  # still held by the tracer (not completed or retired)
    seen_mask: int
    implied_mask: int
    raised_mask: int
    eids: list[int]
    pending: list[tuple[str, int, bool]]


@dataclass(slots=True)
class TracerStats:
    events: int = 0
    duplicates: int = 0
    outside_journey: int = 0  # hops in no journey of the order: stored, not used for deadlines
    unknown_journey: int = 0  # events naming a journey the file does not define
    after_close: int = 0  # events for orders already completed or retired
    completed: int = 0
    retired: int = 0
    raised: dict[str, int] = field(default_factory=dict)
    resolved: dict[str, int] = field(default_factory=dict)


class Tracer:
    """Per-order journey state and deadlines for the partitions this instance owns."""

    def __init__(
        self,
        journeys: Journeys,
        *,
        bucket_ms: int = 100,
        retention_ms: int = 7 * 86_400_000,
        closed_memory: int = 200_000,
        track_snapshots: bool = True,
    ) -> None:
        self.journeys = journeys
        self.now = _UNSET
        self.stats = TracerStats()
        self.retention_ms = retention_ms
        self._orders: dict[str, OrderState] = {}
        self._index = DeadlineIndex(bucket_ms)
        self._open: dict[str, list[Finding]] = {}  # order id -> its open findings
        self._closed: OrderedDict[str, None] = OrderedDict()  # recently completed or retired
        self._closed_memory = closed_memory
        self._edges: dict[str, list[EdgeTransit]] = {
            name: [EdgeTransit(journeys.learning) for _ in j.hops] for name, j in journeys.journeys.items()
        }
        self._findings: list[Finding] = []
        # Orders changed since the last drain; closed ones are snapshotted as they close.
        self._dirty: dict[str, OrderState | OrderSnapshot] | None = {} if track_snapshots else None

    # -- events ---------------------------------------------------------------------------------

    def on_event(self, ev: HopEvent, partition: int = 0) -> None:
        stats = self.stats
        stats.events += 1
        oid = ev.order_id
        st = self._orders.get(oid)
        if st is None:
            if oid in self._closed:
                stats.after_close += 1
                self._late_for_closed(ev)
                return
            st = self._new_state(ev, partition)
        h = _eid_hash(ev.event_id)
        eids = st.eids
        if eids and h in memoryview(eids).cast("Q"):
            stats.duplicates += 1
            return
        st.eids = eids + h.to_bytes(8, "little")
        if ev.ts > st.last_ts:
            st.last_ts = ev.ts
        if ev.customer_id and not st.customer_id:
            st.customer_id = ev.customer_id
        if st.trace_id is None and ev.trace_id != derive_trace_id(oid):
            st.trace_id = ev.trace_id
        if self._dirty is not None:
            self._dirty[oid] = st
        journey = st.journey
        if journey is None:
            journey = self._adopt(st, ev)
            if journey is None:
                self._check(oid, st, self.now)  # held for the retention period, then retired
                return
        i = journey.index.get(ev.hop)
        if i is None:
            stats.outside_journey += 1
            return
        self._apply(oid, st, journey, i, ev.ts, ev.status == STATUS_ERROR)
        self._after_change(oid, st, journey)

    def _new_state(self, ev: HopEvent, partition: int) -> OrderState:
        journey = None
        if ev.journey:
            journey = self.journeys.journeys.get(ev.journey)
            if journey is None:
                self.stats.unknown_journey += 1
        if journey is None:
            journey = self.journeys.infer(ev.hop)
        times = _UNSET_BYTES * len(journey.hops) if journey is not None else b""
        st = OrderState(journey, partition, times, b"", ev.ts)
        self._orders[ev.order_id] = st
        return st

    def _adopt(self, st: OrderState, ev: HopEvent) -> Journey | None:
        """An order of no known journey yet: this hop may tell which it is."""
        journey = self.journeys.journeys.get(ev.journey) if ev.journey else None
        journey = journey or self.journeys.infer(ev.hop)
        if journey is None:
            pending = st.pending if st.pending is not None else []
            if len(pending) < _MAX_PENDING:
                pending.append((ev.hop, ev.ts, ev.status == STATUS_ERROR))
            st.pending = pending
            return None
        st.journey = journey
        st.times = _UNSET_BYTES * len(journey.hops)
        oid = ev.order_id
        for hop, ts, error in st.pending or ():
            i = journey.index.get(hop)
            if i is not None:
                self._apply(oid, st, journey, i, ts, error)
        st.pending = None
        return journey

    def _apply(self, oid: str, st: OrderState, j: Journey, i: int, ts: int, error: bool) -> None:
        bit = 1 << i
        if error:
            self._on_error(oid, st, j, i, ts)
            return
        if st.seen & bit and _time(st.times, i) <= ts:
            return  # the hop is known at this time or earlier; an earlier report moves it back
        times = _with_time(st.times, i, ts)
        st.seen |= bit
        st.implied &= ~bit
        self._learn(st, j, i, times, ts)
        # Every hop before this one happened, reported or not: cancel what waits for them.
        for a in j.ancestors[i]:
            abit = 1 << a
            if not st.seen & abit:
                if not st.implied & abit or _time(times, a) > ts:
                    times = _with_time(times, a, ts)
                st.implied |= abit
        st.times = times
        if oid in self._open:
            self._resolve_answered(oid, st, j, ts)

    def _on_error(self, oid: str, st: OrderState, j: Journey, i: int, ts: int) -> None:
        hop = j.hops[i]
        for f in self._open.get(oid, ()):
            if f.kind == FAILED and f.hop == hop:
                return  # already failed there; the first failure is the story
        if st.seen & (1 << i) and _time(st.times, i) < ts:
            return  # the hop had already succeeded; a later error there does not undo it
        self.stats.raised[FAILED] = self.stats.raised.get(FAILED, 0) + 1
        step = j.step_at[i]
        failure = Finding(
            oid,
            j.name,
            FAILED,
            hop,
            step.after if step is not None else "",
            ts,
            max(self.now, ts),
            OPEN,
            None,
            None,
            st.trace_id or derive_trace_id(oid),
            st.customer_id,
        )
        if st.seen & (1 << i):  # an earlier failure, reported after the success that followed it
            self._emit_resolved(failure, max(self.now, ts), _time(st.times, i))
            return
        self._open.setdefault(oid, []).append(failure)
        self._findings.append(failure)

    def _resolve_answered(self, oid: str, st: OrderState, j: Journey, ts: int) -> None:
        """Resolve the open findings whose hop is now reported or implied."""
        done = st.seen | st.implied
        keep = []
        now = max(self.now, ts)
        for f in self._open[oid]:
            i = j.index.get(f.hop, -1)
            if i >= 0 and done & (1 << i):
                self._emit_resolved(f, now, _time(st.times, i))
            else:
                keep.append(f)
        if keep:
            self._open[oid] = keep
        else:
            del self._open[oid]

    def _emit_resolved(self, f: Finding, now: int, arrived: int) -> None:
        self.stats.resolved[f.kind] = self.stats.resolved.get(f.kind, 0) + 1
        late = arrived - f.due_at
        self._findings.append(
            msgspec.structs.replace(
                f,
                status=RESOLVED,
                resolved_at=now,
                late_by_ms=late if late > 0 else 0,
            )
        )

    def _learn(self, st: OrderState, j: Journey, i: int, times: bytes, ts: int) -> None:
        edges = self._edges[j.name]
        step = j.step_at[i]
        if step is not None and st.seen & (1 << step.after_index):
            edges[i].record(ts - _time(times, step.after_index))
        for child in j.children[i]:
            if st.seen & (1 << child.index):
                edges[child.index].record(_time(times, child.index) - ts)

    def _after_change(self, oid: str, st: OrderState, j: Journey) -> None:
        if (st.seen | st.implied) & j.complete_mask == j.complete_mask and not st.completed:
            st.completed = True
            self.stats.completed += 1
        if st.completed and oid not in self._open:
            self._close(oid, st)
            return
        self._check(oid, st, self.now)

    # -- time -----------------------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Move the clock to ``now_ms`` (never back) and raise every finding now due."""
        if now_ms <= self.now:
            return
        self.now = now_ms
        orders = self._orders
        while (due := self._index.pop_due(now_ms)) is not None:
            key, order_ids = due
            for oid in order_ids:
                st = orders.get(oid)
                if st is not None and st.armed == key:
                    st.armed = 0
                    self._check(oid, st, now_ms)

    def _check(self, oid: str, st: OrderState, now: int) -> None:
        """Raise what is due for one order and arm its next deadline (or retire it)."""
        j = st.journey
        next_due = st.last_ts + self.retention_ms
        if j is not None:
            failing = oid in self._open and any(f.kind == FAILED for f in self._open[oid])
            done = st.seen | st.implied
            raised = st.raised
            edges = self._edges[j.name]
            for step in j.steps:
                if done & (1 << step.index) or not done & (1 << step.after_index):
                    continue
                base = _time(st.times, step.after_index)
                hard = base + step.within_ms
                soft = base + step.stall_after_ms if step.stall_after_ms is not None else None
                if soft is None and (learned := edges[step.index].limit_ms) is not None:
                    soft = base + learned
                # While the order has an open failure, what falls due is held back: it is
                # looked at again when the failure resolves (on_event checks the order again).
                if soft is not None and soft < hard and not raised & (1 << (2 * step.index)):
                    if soft >= now:
                        next_due = min(next_due, soft)
                    elif not failing:
                        self._raise(oid, st, j, step.index, STALLED, soft, now)
                if not raised & (2 << (2 * step.index)):
                    if hard >= now:
                        next_due = min(next_due, hard)
                    elif not failing:
                        kind = UNCONFIRMED if step.confirmation else MISSING
                        self._raise(oid, st, j, step.index, kind, hard, now)
        if next_due < now:
            self._retire(oid, st)
            return
        key = self._index.key_for(next_due)
        if st.armed == 0 or key < st.armed:
            st.armed = key
            self._index.arm(key, oid)

    def _raise(self, oid: str, st: OrderState, j: Journey, i: int, kind: str, due: int, now: int) -> None:
        st.raised |= (1 if kind == STALLED else 2) << (2 * i)
        step = j.step_at[i]
        assert step is not None
        f = Finding(
            oid,
            j.name,
            kind,
            step.hop,
            step.after,
            due,
            now,
            OPEN,
            None,
            None,
            st.trace_id or derive_trace_id(oid),
            st.customer_id,
        )
        self.stats.raised[kind] = self.stats.raised.get(kind, 0) + 1
        self._open.setdefault(oid, []).append(f)
        self._findings.append(f)
        if self._dirty is not None:
            self._dirty[oid] = st

    def _close(self, oid: str, st: OrderState) -> None:
        del self._orders[oid]
        closed = self._closed
        closed[oid] = None
        if len(closed) > self._closed_memory:
            closed.popitem(last=False)
        if self._dirty is not None:
            self._dirty[oid] = self.snapshot(oid, st)
        self._open.pop(oid, None)

    def _retire(self, oid: str, st: OrderState) -> None:
        """Nothing has happened to the order for the retention period and nothing is awaited:
        stop holding it. Its open findings stay open in the store."""
        self.stats.retired += 1
        self._close(oid, st)

    def _late_for_closed(self, ev: HopEvent) -> None:
        """A hop for an order no longer held. It is stored by the caller; nothing to decide."""

    # -- output ---------------------------------------------------------------------------------

    def drain_findings(self) -> list[Finding]:
        out, self._findings = self._findings, []
        return out

    def drain_snapshots(self) -> list[OrderSnapshot]:
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        return [st if isinstance(st, OrderSnapshot) else self.snapshot(oid, st) for oid, st in dirty.items()]

    def snapshot(self, oid: str, st: OrderState) -> OrderSnapshot:
        j = st.journey
        hops: list[str] = []
        hop_ts: list[int] = []
        implied: list[bool] = []
        next_hop, next_due = "", 0
        if j is not None:
            done = st.seen | st.implied
            for i, hop in enumerate(j.hops):
                if done & (1 << i):
                    hops.append(hop)
                    hop_ts.append(_time(st.times, i))
                    implied.append(not st.seen & (1 << i))
            for step in j.steps:
                if not done & (1 << step.index) and done & (1 << step.after_index):
                    due = _time(st.times, step.after_index) + step.within_ms
                    if next_due == 0 or due < next_due:
                        next_hop, next_due = step.hop, due
        return OrderSnapshot(
            oid,
            st.partition,
            j.name if j is not None else "",
            st.trace_id or derive_trace_id(oid),
            st.customer_id,
            self.status_of(oid, st),
            hops,
            hop_ts,
            implied,
            min(hop_ts) if hop_ts else st.last_ts,
            st.last_ts,
            next_hop,
            next_due,
            oid in self._orders,
            st.seen,
            st.implied,
            st.raised,
            list(memoryview(st.eids).cast("Q")),
            list(st.pending or ()),
        )

    def status_of(self, oid: str, st: OrderState) -> str:
        worst = ""
        for f in self._open.get(oid, ()):
            if _SEVERITY[f.kind] > _SEVERITY.get(worst, 0):
                worst = f.kind
        if worst:
            return worst
        return COMPLETED if st.completed else IN_PROGRESS

    def open_findings(self, oid: str) -> list[Finding]:
        return list(self._open.get(oid, ()))

    def edge(self, journey: str, hop: str) -> EdgeTransit | None:
        """The learned transit times of the edge into ``hop`` of ``journey``."""
        j = self.journeys.journeys.get(journey)
        i = j.index.get(hop) if j is not None else None
        return self._edges[journey][i] if i is not None else None

    def order(self, oid: str) -> OrderState | None:
        return self._orders.get(oid)

    def __len__(self) -> int:
        return len(self._orders)

    # -- partitions -----------------------------------------------------------------------------

    def restore(self, snapshots: Iterable[OrderSnapshot], findings: Iterable[Finding]) -> int:
        """Take back open orders (and their open findings) from the store; returns how many."""
        n = 0
        for s in snapshots:
            if not s.open:
                continue
            j = self.journeys.journeys.get(s.journey) if s.journey else None
            times = _UNSET_BYTES * len(j.hops) if j is not None else b""
            if j is not None:
                for hop, ts in zip(s.hops, s.hop_ts, strict=True):
                    i = j.index.get(hop)
                    if i is not None:
                        times = _with_time(times, i, ts)
            st = OrderState(
                j,
                s.partition,
                times,
                b"".join(h.to_bytes(8, "little") for h in s.eids),
                s.last_ts,
                s.seen_mask,
                s.implied_mask,
                s.raised_mask,
                0,
                s.trace_id if s.trace_id != derive_trace_id(s.order_id) else None,
                s.customer_id,
                list(s.pending) or None,
                j is not None and (s.seen_mask | s.implied_mask) & j.complete_mask == j.complete_mask,
            )
            self._orders[s.order_id] = st
            self._closed.pop(s.order_id, None)
            n += 1
        for f in findings:
            if f.status == OPEN and f.order_id in self._orders:
                opened = self._open.setdefault(f.order_id, [])
                if all(o.finding_id != f.finding_id for o in opened):
                    opened.append(f)
        for oid, st in self._orders.items():
            if st.armed == 0:
                self._check(oid, st, self.now)
        return n

    def drop_partition(self, partition: int) -> int:
        """Forget the orders of a partition this instance no longer owns; returns how many."""
        gone = [oid for oid, st in self._orders.items() if st.partition == partition]
        for oid in gone:
            del self._orders[oid]
            self._open.pop(oid, None)
            if self._dirty is not None:
                self._dirty.pop(oid, None)
        return len(gone)


def _time(times: bytes, i: int) -> int:
    return int(_Q.unpack_from(times, 8 * i)[0])


def _with_time(times: bytes, i: int, ts: int) -> bytes:
    return times[: 8 * i] + _Q.pack(ts) + times[8 * i + 8 :]


def _eid_hash(event_id: str) -> int:
    if len(event_id) == 32:
        try:
            return int(event_id[:16], 16)
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")
