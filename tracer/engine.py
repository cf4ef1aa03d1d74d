"""The tracer engine: per-order state, journey deadlines, and findings (CONTRACT §2–3).

Lifecycle, in the manner of a keyed stateful operator:

* ``on_event(ev, partition)`` folds one hop into its order's state: dedupes by event id, resolves
  findings the hop answers (late arrivals), raises or resolves ``failed``, learns transit times
  and arms the order's next deadline.
* ``advance(now_ms)`` moves the engine's clock (never backwards) and raises the findings whose
  deadline the clock is now strictly past. The engine never reads a clock: the caller decides
  what time it is (``tracer.clock`` for live partitions, event time in a backtest).
* ``drain_findings()`` / ``drain_snapshots()`` hand over what changed since the last call, for
  the store and the detectors: every version of a finding (open, then resolved), in order.
  ``restore()`` / ``drop_partition()`` rebuild and forget the open orders of a partition.

Rules (docs/semantics.md says why):

* A step is due ``within`` after the event time of its ``after`` hop; ``stalled`` at the soft
  limit (``stall_after``, or learned from the edge), ``missing``/``unconfirmed`` at the hard one.
  Both stay open until the hop arrives; a reported hop also implies every hop before it.
* ``status: error`` opens ``failed`` at that hop (due at the earliest such error) unless the hop
  had already succeeded. While a failure is open the order raises nothing else, and findings it
  had raised are superseded (resolved with ``late_by_ms`` null) and raised again if still overdue
  when a retry resolves the failure — so late news of a failure tells the same story as news on
  time. A later ok at the hop, reported or implied, resolves the failure.

State transitions are joins (earliest time of a hop, union of hops seen, earliest error), so
duplicates and out-of-order arrival converge on the same open findings. Per-order state is one
slotted object with the armed deadline and the hop times, the last event time and 8-byte
event-id hashes packed in one ``bytes``; the deadline index holds one entry per order.

The install compiles this module with mypyc (``tracer.native``, docs/performance.md): no msgspec
Structs are defined here, and engine state is in native classes. This module imports only the
tracer's model, journeys, deadline index and transit learning.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

import msgspec
from mypy_extensions import i64, mypyc_attr

from tracer.deadlines import DeadlineIndex
from tracer.journeys import Journey, Journeys, Step
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
from tracer.model import OrderSnapshot as OrderSnapshot  # defined there: msgspec must read its annotations
from tracer.transit import COMPILED, EdgeTransit  # compiled: all of tracer.native's modules or none

_Q: Final = struct.Struct("<q")
# Typed: compiled, what it reads is a native int (struct's own signature says Any).
_UNPACK: Final[Callable[[bytes | bytearray, int], tuple[int]]] = _Q.unpack_from
_PACK: Final = _Q.pack
_PACK_INTO: Final = _Q.pack_into
_FROMHEX: Final = bytes.fromhex
_UNSET: Final = -(2**63)
_UNSET_BYTES: Final = _PACK(_UNSET)
_NOTHING_DUE: Final = 2**63 - 1
_EID_CACHED: Final = 64  # orders of fewer event ids unpack them with a struct made once per count
_EID_UNPACK: Final[list[Callable[[bytes], tuple[int, ...]]]] = [
    struct.Struct(f">{n}Q").unpack for n in range(_EID_CACHED)
]
_MAX_PENDING: Final = 32  # hops of an order whose journey is not yet known, kept to replay
_NO_CUSTOMER: Final = ""  # OrderState.customer_id until a hop names one: this object, always
_SEVERITY: Final = {STALLED: 1, UNCONFIRMED: 2, MISSING: 3, FAILED: 4}
_FIELDS: Final = msgspec.structs.astuple  # a HopEvent's fields, in declaration order


def _at(buf: bytes, off: i64) -> i64:
    """The int64 at byte ``off`` of an order's ``buf`` (little-endian, as ``_PACK`` writes it).
    Compiled, eight byte reads and shifts in C: a quarter of ``struct.unpack_from``'s cost, which
    builds a tuple per call. Interpreted, ``unpack_from`` (a shift there would not wrap to the
    sign)."""
    if COMPILED:
        return (
            i64(buf[off]) | i64(buf[off + 1]) << 8 | i64(buf[off + 2]) << 16 | i64(buf[off + 3]) << 24
            | i64(buf[off + 4]) << 32 | i64(buf[off + 5]) << 40 | i64(buf[off + 6]) << 48 | i64(buf[off + 7]) << 56
        )  # fmt: skip
    return _UNPACK(buf, off)[0]


class _Plan:
    """What the hot path needs of one journey, worked out once: byte offsets into an order's
    ``buf``, each hop's ancestors and the edges its arrival teaches, and per set of hops done the
    steps then awaited (with what ``_check`` needs of each)."""

    __slots__ = (
        "_step_bits",
        "ancestor_mask",
        "ancestors",
        "awaited",
        "complete_mask",
        "index",
        "journey",
        "layouts",
        "learns",
        "n8",
        "name",
        "steps",
        "unset",
    )

    def __init__(self, j: Journey, edges: list[EdgeTransit]) -> None:
        self.journey = j
        self.name = j.name  # compiled, a native read (the Journey's would be a generic lookup)
        self.index = dict(j.index)  # a dict: compiled, looked up without a method call
        self.n8 = 8 * len(j.hops)
        self.unset = _UNSET_BYTES * len(j.hops)  # the hop times of an order that has seen none
        self.complete_mask = j.complete_mask
        self.ancestors = tuple(tuple(sorted(a)) for a in j.ancestors)
        # hop i -> (edge, offset of the other hop's time, bit of the other hop, sign): the other
        # hop is i's after hop (transit = ts - its time) or a child of i (transit = its time - ts)
        learns: list[tuple[tuple[EdgeTransit, int, int, int], ...]] = []
        for i, step in enumerate(j.step_at):
            found = []
            if step is not None:
                found.append((edges[i], 8 * step.after_index, 1 << step.after_index, 1))
            for child in j.children[i]:
                found.append((edges[child.index], 8 * child.index, 1 << child.index, -1))
            learns.append(tuple(found))
        self.learns = tuple(learns)
        # per step: (hop index, offset of the after hop's time, within, stall_after or None, edge,
        # stalled bit, missing bit, kind of the hard limit)
        self.steps = tuple(
            (
                st.index,
                8 * st.after_index,
                st.within_ms,
                st.stall_after_ms,
                edges[st.index],
                1 << (2 * st.index),
                2 << (2 * st.index),
                UNCONFIRMED if st.confirmation else MISSING,
            )
            for st in j.steps
        )
        self._step_bits = tuple((1 << st.index, 1 << st.after_index) for st in j.steps)
        # hop i -> the bits of every hop before it: when all are seen, nothing is implied
        self.ancestor_mask = tuple(sum(1 << a for a in anc) for anc in j.ancestors)
        self.awaited: dict[int, tuple[_Awaited, ...]] = {}
        self.layouts: dict[int, _Layout] = {}

    def layout(self, seen: int, implied: int) -> _Layout:
        """For a snapshot: the hops done (names, indexes, implied or not) and the steps awaited
        (after hop index, within, hop), in journey order."""
        key = seen | implied << 32  # a journey has at most 32 hops
        found = self.layouts.get(key)
        if found is None:
            done = seen | implied
            hops = [i for i in range(len(self.journey.hops)) if done & (1 << i)]
            found = (
                tuple(self.journey.hops[i] for i in hops),
                tuple(hops),
                tuple(not seen & (1 << i) for i in hops),
                tuple((step.after_index, step.within_ms, step.hop) for step in self.journey.steps
                      if not done & (1 << step.index) and done & (1 << step.after_index)),
            )  # fmt: skip
            self.layouts[key] = found
        return found

    def awaiting(self, done: int) -> tuple[_Awaited, ...]:
        """The steps not done whose after hop is done, in journey order."""
        found = self.awaited.get(done)
        if found is None:
            found = tuple(
                s
                for s, (bit, after) in zip(self.steps, self._step_bits, strict=True)
                if not done & bit and done & after
            )
            self.awaited[done] = found
        return found


_Awaited = tuple[int, int, int, int | None, EdgeTransit, int, int, str]
_Layout = tuple[tuple[str, ...], tuple[int, ...], tuple[bool, ...], tuple[tuple[int, int, str], ...]]


@mypyc_attr(acyclic=True)  # compiled: not tracked by the GC (a million orders, no cycles through them)
@dataclass(slots=True, eq=False)
class OrderState:
    """One open order. Bit i of ``seen`` is hop i of the journey (0 is the start).

    ``buf`` packs int64s: the time of each hop of the journey (earliest ok time; for an implied
    hop, a bound: the earliest later hop), then the latest event time, then one 8-byte hash per
    event id seen. ``armed`` is the deadline the order is armed for in the deadline index (0:
    none); a field, not in ``buf``, so that arming does not copy ``buf`` and a stale index entry
    is told from a live one without reading it. ``plan`` is the order's journey as the engine
    works with it (None until the journey is known). A slotted class, not a Struct: compiled
    (``tracer.native``) its fields are read and written as C struct members."""

    plan: _Plan | None
    partition: int
    buf: bytes
    seen: int = 0  # hops reported ok
    implied: int = 0  # hops not reported, but a later hop was: they happened
    raised: int = 0  # bit 2i: stalled raised for hop i; bit 2i+1: missing/unconfirmed raised
    trace_id: str | None = None  # None: derived from the order id
    customer_id: str = _NO_CUSTOMER  # set from a hop's customer_id, once
    # hash() of the order's derived trace id once a hop carried it (-1: none yet; no str hashes
    # to -1): its next hops, which carry it too, are not hashed with blake2b again. An i64:
    # compiled, a C member (a 64-bit hash as an int field would be a boxed int, 32 B an order).
    derived_hash: i64 = -1
    armed: i64 = 0

    @property
    def journey(self) -> Journey | None:
        return self.plan.journey if self.plan is not None else None


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
        # order id -> hop index -> (due_at, detected_at) of its failure, open or resolved
        self._failures: dict[str, dict[int, tuple[int, int]]] = {}
        # order id -> the hops (hop, ts, error) of an order whose journey is not known yet, to
        # replay once a hop tells it: few orders have any, so not a field every order pays for
        self._pending: dict[str, list[tuple[str, int, bool]]] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()  # recently completed or retired
        self._closed_memory = closed_memory
        self._edges: dict[str, list[EdgeTransit]] = {
            name: [EdgeTransit(journeys.learning) for _ in j.hops] for name, j in journeys.journeys.items()
        }
        self._plans = {name: _Plan(j, self._edges[name]) for name, j in journeys.journeys.items()}
        self._plan_of_hop = {hop: self._plans[j.name] for hop, j in journeys.by_hop.items()}
        self._findings: list[Finding] = []
        # Orders changed since the last drain; closed ones are snapshotted as they close.
        self._dirty: dict[str, OrderState | OrderSnapshot] | None = {} if track_snapshots else None

    # -- events ---------------------------------------------------------------------------------

    def on_event(self, ev: HopEvent, partition: int = 0) -> None:
        stats = self.stats
        stats.events += 1
        # The fields in one call (HopEvent's order): compiled, each attribute read of a Struct
        # is a generic lookup.
        fields = _FIELDS(ev)
        oid: str = fields[0]
        st = self._orders.get(oid)
        if st is None:
            if oid in self._closed:
                stats.after_close += 1
                return  # stored by the caller; nothing left to decide for a closed order
            st = self._new_state(ev, partition)
        plan = st.plan
        journey = plan.journey if plan is not None else None
        n8 = plan.n8 if plan is not None else 0
        eid: str = fields[3]
        h = b""
        if len(eid) == 32:  # _eid_bytes, its usual case inline
            try:
                h = _FROMHEX(eid[:16])
            except ValueError:
                h = b""  # not hex: hashed below
        if len(h) != 8:
            h = _eid_bytes(eid)
        buf = st.buf
        start = n8 + 8
        pos = buf.find(h, start)
        while pos >= 0:
            if (pos - start) & 7 == 0:
                stats.duplicates += 1
                return
            pos = buf.find(h, pos + 1)
        ts: int = fields[2]
        changed = bytearray(buf)
        changed += h
        if ts > _at(buf, n8):
            _PACK_INTO(changed, n8, ts)
        if st.customer_id is _NO_CUSTOMER:  # identity: no read of the (cold) string itself
            st.customer_id = fields[10] or _NO_CUSTOMER
        if st.trace_id is None:  # has a hop carried a trace id of its own (propagated context)?
            trace_id: str = fields[4]
            seen: i64 = hash(trace_id)
            if seen != st.derived_hash:  # not the one already found to be the derived id
                if trace_id != derive_trace_id(oid):
                    st.trace_id = trace_id
                else:
                    st.derived_hash = seen
        if self._dirty is not None:
            self._dirty[oid] = st
        i = plan.index.get(fields[1]) if plan is not None else None
        if plan is None or i is None or fields[8] == STATUS_ERROR:
            st.buf = bytes(changed)
            if journey is None:
                journey = self._adopt(oid, st, ev)
                if journey is None:
                    self._check(oid, st, self.now)  # held for the retention period, then retired
                    return
                self._after_change(oid, st, journey, False)
            elif i is None:
                stats.outside_journey += 1
            else:
                was_complete = (st.seen | st.implied) & journey.complete_mask == journey.complete_mask
                self._on_error(oid, st, journey, i, ts)
                self._after_change(oid, st, journey, was_complete)
            return
        assert journey is not None
        mask = plan.complete_mask
        was_complete = (st.seen | st.implied) & mask == mask
        moved = self._fold(st, plan, i, ts, changed)
        st.buf = bytes(changed)
        if moved >= 0:
            if oid in self._open:
                self._resolve_answered(oid, st, journey)
            if moved and oid in self._failures:
                self._shorten_failures(oid, st, journey, moved)
        if (st.seen | st.implied) & mask == mask:
            if not was_complete:
                stats.completed += 1
            if oid not in self._open:
                self._close(oid, st)
                return
        self._check(oid, st, self.now)

    def _new_state(self, ev: HopEvent, partition: int) -> OrderState:
        plan = None
        name = ev.journey
        if name:
            plan = self._plans.get(name)
            if plan is None:
                self.stats.unknown_journey += 1
        if plan is None:
            plan = self._plan_of_hop.get(ev.hop)  # Journeys.infer, as plans
        unset = plan.unset if plan is not None else b""
        st = OrderState(plan, partition, unset + _PACK(ev.ts))
        self._orders[ev.order_id] = st
        return st

    def _adopt(self, oid: str, st: OrderState, ev: HopEvent) -> Journey | None:
        """An order of no known journey yet: this hop may tell which it is."""
        journey = self.journeys.journeys.get(ev.journey) if ev.journey else None
        if ev.journey and journey is None:
            self.stats.unknown_journey += 1
        journey = journey or self.journeys.infer(ev.hop)
        pending = self._pending.get(oid)
        entry = (ev.hop, ev.ts, ev.status == STATUS_ERROR)
        if journey is None:
            if pending is None:
                self._pending[oid] = [entry]
            elif len(pending) < _MAX_PENDING:
                pending.append(entry)
            return None
        st.plan = self._plans[journey.name]
        st.buf = _UNSET_BYTES * len(journey.hops) + st.buf
        if pending is None:
            pending = []
        else:
            del self._pending[oid]
        for hop, ts, error in sorted([*pending, entry], key=lambda p: (p[1], p[2])):
            i = journey.index.get(hop)
            if i is not None:
                self._apply(oid, st, journey, i, ts, error)
        return journey

    def _apply(self, oid: str, st: OrderState, j: Journey, i: int, ts: int, error: bool) -> None:
        if error:
            self._on_error(oid, st, j, i, ts)
            return
        changed = bytearray(st.buf)
        moved = self._fold(st, self._plans[j.name], i, ts, changed)
        if moved >= 0:
            st.buf = bytes(changed)
            self._answered(oid, st, j, moved)

    @staticmethod
    def _fold(st: OrderState, plan: _Plan, i: int, ts: int, changed: bytearray) -> int:
        """Hop ``i`` went through at ``ts``: its time, the hops it implies, the edges it teaches.
        Updates ``changed`` (the order's buf) and returns the hops whose known time moved back,
        or -1 when the hop was already known at this time or earlier (nothing changed)."""
        bit = 1 << i
        seen = st.seen
        implied = st.implied
        buf = st.buf  # hop times read from here: ``changed`` differs only where this fold wrote
        if seen & bit and _at(buf, 8 * i) <= ts:
            return -1  # the hop is known at this time or earlier; an earlier report moves it back
        # hops whose time moved back: a resolved failure there was shorter
        moved = bit if (seen | implied) & bit else 0
        _PACK_INTO(changed, 8 * i, ts)
        seen |= bit
        st.seen = seen
        # what the hop teaches: the transit from its after hop, and to its children seen already
        for edge, off, other, sign in plan.learns[i]:
            if seen & other:
                edge.record(sign * (ts - _at(buf, off)))
        # Every hop before this one happened, reported or not: cancel what waits for them.
        implied &= ~bit
        if plan.ancestor_mask[i] & ~seen == 0:  # all of them reported: nothing to imply
            st.implied = implied
            return moved
        for a in plan.ancestors[i]:
            abit = 1 << a
            if not seen & abit:
                if not implied & abit:
                    _PACK_INTO(changed, 8 * a, ts)
                    implied |= abit
                elif _at(buf, 8 * a) > ts:
                    _PACK_INTO(changed, 8 * a, ts)
                    moved |= abit
        st.implied = implied
        return moved

    def _answered(self, oid: str, st: OrderState, j: Journey, moved: int) -> None:
        """After a hop went through: resolve what it answers, correct failures it shortened."""
        if oid in self._open:
            self._resolve_answered(oid, st, j)
        if moved and oid in self._failures:
            self._shorten_failures(oid, st, j, moved)

    def _on_error(self, oid: str, st: OrderState, j: Journey, i: int, ts: int) -> None:
        bit = 1 << i
        done = (st.seen | st.implied) & bit
        if done and _at(st.buf, 8 * i) < ts:
            return  # the hop had already succeeded; a later error there does not undo it
        failures = self._failures.setdefault(oid, {})
        known = failures.get(i)
        if known is not None and known[0] <= ts:
            return  # the failure there started earlier: the first failure is the story
        now = self.now
        detected = ts if ts > now else now
        if known is not None and known[1] < detected:
            detected = known[1]
        failures[i] = (ts, detected)
        if known is None:
            self.stats.raised[FAILED] = self.stats.raised.get(FAILED, 0) + 1
        failure = self._failure(oid, st, j, i, ts, detected)
        if done:  # an earlier failure, reported after the success that followed it
            self._emit_resolved(failure, _at(st.buf, 8 * i))
            return
        opened = self._open.get(oid)
        if opened is not None:
            for k, f in enumerate(opened):
                if f.kind == FAILED and f.hop == failure.hop:
                    opened[k] = failure  # an earlier error: the failure started there
                    self._findings.append(failure)
                    return
            self._supersede(oid, st, j, opened, ts)
        self._open.setdefault(oid, []).append(failure)
        self._findings.append(failure)

    def _failure(self, oid: str, st: OrderState, j: Journey, i: int, due: int, detected: int) -> Finding:
        step = j.step_at[i]
        return Finding(
            oid,
            j.name,
            FAILED,
            j.hops[i],
            step.after if step is not None else "",
            due,
            detected,
            OPEN,
            None,
            None,
            st.trace_id or derive_trace_id(oid),
            st.customer_id,
        )

    def _supersede(self, oid: str, st: OrderState, j: Journey, opened: list[Finding], ts: int) -> None:
        """A failure opens: it is the story now. What the order had raised is resolved (with no
        lateness: nothing arrived) and may be raised again once the failure resolves."""
        resolved_at = max(self.now, ts)
        for f in opened:
            if f.kind == FAILED:
                continue
            self.stats.resolved[f.kind] = self.stats.resolved.get(f.kind, 0) + 1
            self._findings.append(msgspec.structs.replace(f, status=RESOLVED, resolved_at=resolved_at))
            i = j.index[f.hop]
            st.raised &= ~((1 if f.kind == STALLED else 2) << (2 * i))
        opened[:] = [f for f in opened if f.kind == FAILED]

    def _shorten_failures(self, oid: str, st: OrderState, j: Journey, moved: int) -> None:
        """Hops of resolved failures went through earlier than known: say so in the finding."""
        opened = self._open.get(oid, ())
        for i, (due, detected) in self._failures[oid].items():
            if moved & (1 << i) and not any(f.kind == FAILED and f.hop == j.hops[i] for f in opened):
                self._emit_resolved(self._failure(oid, st, j, i, due, detected), _at(st.buf, 8 * i))

    def _resolve_answered(self, oid: str, st: OrderState, j: Journey) -> None:
        """Resolve the open findings whose hop is now reported or implied."""
        done = st.seen | st.implied
        keep = []
        buf = st.buf
        for f in self._open[oid]:
            i = j.index.get(f.hop, -1)
            if i >= 0 and done & (1 << i):
                self._emit_resolved(f, _at(buf, 8 * i))
            else:
                keep.append(f)
        if keep:
            self._open[oid] = keep
        else:
            del self._open[oid]

    def _emit_resolved(self, f: Finding, arrived: int) -> None:
        self.stats.resolved[f.kind] = self.stats.resolved.get(f.kind, 0) + 1
        late = arrived - f.due_at
        self._findings.append(
            msgspec.structs.replace(
                f,
                status=RESOLVED,
                resolved_at=max(self.now, arrived),
                late_by_ms=late if late > 0 else 0,
            )
        )

    def _after_change(self, oid: str, st: OrderState, j: Journey, was_complete: bool) -> None:
        if (st.seen | st.implied) & j.complete_mask == j.complete_mask:
            if not was_complete:
                self.stats.completed += 1
            if oid not in self._open:
                self._close(oid, st)
                return
        self._check(oid, st, self.now)

    # -- time -----------------------------------------------------------------------------------

    def advance(self, now_ms: int) -> None:
        """Move the clock to ``now_ms`` (never back) and raise every finding now due."""
        if now_ms <= self.now:
            return
        self.now = now_ms
        if now_ms <= self._index.earliest:
            return  # nothing armed is due before now_ms
        due = self._index.pop_due(now_ms)
        if not due:
            return
        orders = self._orders
        for armed, order_ids in due:
            for oid in order_ids:
                st = orders.get(oid)
                if st is None:
                    continue
                if st.armed == armed:  # else a stale entry: the order was armed again since
                    self._check(oid, st, now_ms, fired=True)

    def _check(self, oid: str, st: OrderState, now: int, fired: bool = False) -> None:
        """Raise what is due for one order and arm its next deadline (or retire it)."""
        plan = st.plan
        buf = st.buf
        next_due = _NOTHING_DUE
        n8 = 0
        if plan is not None:
            n8 = plan.n8
            done = st.seen | st.implied
            awaited = plan.awaited.get(done)
            if awaited is None:
                awaited = plan.awaiting(done)
            raised = st.raised
            failing: bool | None = None  # worked out when something is overdue
            for i, after_off, within, stall_after, edge, soft_bit, hard_bit, kind in awaited:
                base = _at(buf, after_off)
                hard = base + within
                if not raised & soft_bit:
                    limit = stall_after if stall_after is not None else edge.limit_ms
                    soft = base + limit if limit is not None else hard  # an int: compiled, a C long
                    # While the order has an open failure, what falls due is held back: it is
                    # looked at again when the failure resolves (on_event checks the order again).
                    if soft < hard:
                        if soft >= now:
                            if soft < next_due:
                                next_due = soft
                        elif not (failing if failing is not None else (failing := self._failing(oid))):
                            self._raise(oid, st, plan.journey, i, STALLED, soft, now)
                if not raised & hard_bit:
                    if hard >= now:
                        if hard < next_due:
                            next_due = hard
                    elif not (failing if failing is not None else (failing := self._failing(oid))):
                        self._raise(oid, st, plan.journey, i, kind, hard, now)
        if next_due == _NOTHING_DUE:
            # Nothing awaited: held until the retention period after its latest event. (Never
            # sooner: while a deadline is ahead the order is kept, whatever the retention.)
            next_due = _at(buf, n8) + self.retention_ms
            if next_due < now:
                self._retire(oid, st)
                return
        armed = 0 if fired else st.armed
        if armed == 0 or next_due < armed:
            st.armed = next_due
            self._index.arm(next_due, oid)

    def _failing(self, oid: str) -> bool:
        opened = self._open.get(oid)
        return opened is not None and any(f.kind == FAILED for f in opened)

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
        self._remember(oid)
        if self._dirty is not None:
            self._dirty[oid] = self.snapshot(oid, st, held=False)
        self._open.pop(oid, None)
        self._failures.pop(oid, None)
        if st.plan is None:
            self._pending.pop(oid, None)

    def _remember(self, oid: str) -> None:
        closed = self._closed
        closed[oid] = None
        if len(closed) > self._closed_memory:
            closed.popitem(last=False)

    def _retire(self, oid: str, st: OrderState) -> None:
        """Nothing has happened to the order for the retention period and nothing is awaited:
        stop holding it. Its open findings stay open in the store."""
        self.stats.retired += 1
        self._close(oid, st)

    # -- output ---------------------------------------------------------------------------------

    def drain_findings(self) -> list[Finding]:
        out, self._findings = self._findings, []
        return out

    def drain_snapshots(self) -> list[OrderSnapshot]:
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        # An order left in _dirty as its state is held: _close puts a snapshot in its place.
        return [st if isinstance(st, OrderSnapshot) else self.snapshot(oid, st, True) for oid, st in dirty.items()]

    def snapshot(self, oid: str, st: OrderState, held: bool | None = None) -> OrderSnapshot:
        """What the store keeps of the order. ``held``: whether this engine still holds it (looked
        up when not given; its callers know, and the lookup is a cache miss at a million orders)."""
        buf = st.buf
        hops: list[str] = []
        hop_ts: list[int] = []
        implied: list[bool] = []
        next_hop, next_due = "", 0
        plan = st.plan
        name = ""
        if plan is None:
            n8 = 0
            last_ts = _at(buf, 0)
        else:
            # Only the times the snapshot shows, each read in place (no tuple of all of them).
            name = plan.name
            n8 = plan.n8
            last_ts = _at(buf, n8)
            names, indexes, flags, awaited = plan.layout(st.seen, st.implied)
            hops = list(names)
            hop_ts = [_at(buf, 8 * i) for i in indexes]
            implied = list(flags)
            for after, within, hop in awaited:
                due = _at(buf, 8 * after) + within
                if next_due == 0 or due < next_due:
                    next_hop, next_due = hop, due
        return OrderSnapshot(
            oid,
            st.partition,
            name,
            st.trace_id or derive_trace_id(oid),
            st.customer_id,
            self.status_of(oid, st),
            hops,
            hop_ts,
            implied,
            min(hop_ts) if hop_ts else last_ts,
            last_ts,
            next_hop,
            next_due,
            held if held is not None else oid in self._orders,
            st.seen,
            st.implied,
            st.raised,
            _eid_ints(buf[n8 + 8 :]),
            list(self._pending.get(oid, ())) if plan is None else [],
        )

    def status_of(self, oid: str, st: OrderState) -> str:
        worst = ""
        for f in self._open.get(oid) or ():
            if _SEVERITY[f.kind] > _SEVERITY.get(worst, 0):
                worst = f.kind
        if worst:
            return worst
        j = st.journey
        if j is not None and (st.seen | st.implied) & j.complete_mask == j.complete_mask:
            return COMPLETED
        return IN_PROGRESS

    def open_findings(self, oid: str) -> list[Finding]:
        return list(self._open.get(oid, ()))

    def edge(self, journey: str, hop: str) -> EdgeTransit | None:
        """The learned transit times of the edge into ``hop`` of ``journey``."""
        j = self.journeys.journeys.get(journey)
        i = j.index.get(hop) if j is not None else None
        return self._edges[journey][i] if i is not None else None

    def edges(self) -> Iterator[tuple[str, str, EdgeTransit]]:
        """Every edge as (journey, the step's hop, its transit times), for the metrics."""
        for name, j in self.journeys.journeys.items():
            for step in j.steps:
                yield name, step.hop, self._edges[name][step.index]

    def waiting_by_step(self) -> dict[tuple[str, str], int]:
        """Open orders by (journey, the step each awaits): an order awaiting two parallel steps
        counts at both; one awaiting nothing (no journey yet, or held open only by its findings)
        counts at (journey or "", ""). O(open orders), so it is for scrape time, never per event:
        orders are grouped by their hop bitmask first, then each distinct mask is expanded once.
        The order table is copied in one step (atomic under the GIL), so another thread may call
        this while events are folded in; an order changing meanwhile is counted either way."""
        groups: dict[tuple[int, int], int] = {}  # (id of the journey, hops done) -> orders
        journeys: dict[int, Journey | None] = {}  # Journey is unhashable: grouped by identity
        for st in list(self._orders.values()):
            key = (id(st.journey), st.seen | st.implied)
            n = groups.get(key)
            if n is None:
                journeys[key[0]] = st.journey
                groups[key] = 1
            else:
                groups[key] = n + 1
        out: dict[tuple[str, str], int] = {}
        for (jid, done), n in groups.items():
            j = journeys[jid]
            steps = [] if j is None else [s.hop for s in j.steps if _awaits(s, done)]
            for hop in steps or [""]:
                key2 = (j.name if j is not None else "", hop)
                out[key2] = out.get(key2, 0) + n
        return out

    def order(self, oid: str) -> OrderState | None:
        return self._orders.get(oid)

    def opens_midway(self, oid: str, journey: str, hop: str) -> bool:
        """Whether an event of order ``oid`` at ``hop`` (of ``journey``, "" when it names none)
        would open an order not held here (open, or closed recently) past its journey's start, or
        outside every journey: what the replayed last hops of an order closed before a restore
        look like (``tracer.processor``, which reads only these fields of such records)."""
        if oid in self._orders or oid in self._closed:
            return False
        plan = self._plans.get(journey) if journey else None
        if plan is None:
            plan = self._plan_of_hop.get(hop)
        return plan is None or plan.journey.start != hop

    def awaiting(self, st: OrderState) -> tuple[tuple[int, int], ...]:
        """The steps the order waits at, as (hop index, the time it entered the step: its ``after``
        hop's time). Read-only; ``tracer.waiting`` keeps per-edge counts from it."""
        j = st.journey
        if j is None:
            return ()
        done = st.seen | st.implied
        buf = st.buf
        return tuple(
            (s.index, _at(buf, 8 * s.after_index))
            for s in j.steps
            if done >> s.after_index & 1 and not done >> s.index & 1
        )

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
            times = bytearray(_UNSET_BYTES * len(j.hops)) if j is not None else bytearray()
            if j is not None:
                for hop, ts in zip(s.hops, s.hop_ts, strict=True):
                    i = j.index.get(hop)
                    if i is not None:
                        _Q.pack_into(times, 8 * i, ts)
            eids = b"".join(h.to_bytes(8, "big") for h in s.eids)
            st = OrderState(
                self._plans[j.name] if j is not None else None,
                s.partition,
                bytes(times) + _PACK(s.last_ts) + eids,
                s.seen_mask,
                s.implied_mask,
                s.raised_mask,
                s.trace_id if s.trace_id != derive_trace_id(s.order_id) else None,
                s.customer_id or _NO_CUSTOMER,
            )
            if s.pending and j is None:
                self._pending[s.order_id] = list(s.pending)
            else:
                self._pending.pop(s.order_id, None)
            self._orders[s.order_id] = st
            self._closed.pop(s.order_id, None)
            n += 1
        for f in findings:
            st_or_none = self._orders.get(f.order_id)
            if f.status != OPEN or st_or_none is None:
                continue
            opened = self._open.setdefault(f.order_id, [])
            if all(o.finding_id != f.finding_id for o in opened):
                opened.append(f)
                j = st_or_none.journey
                if f.kind == FAILED and j is not None and f.hop in j.index:
                    self._failures.setdefault(f.order_id, {})[j.index[f.hop]] = (f.due_at, f.detected_at)
        for oid, st in self._orders.items():
            if st.armed == 0:
                self._check(oid, st, self.now)
        return n

    def remember_closed(self, order_ids: Iterable[str]) -> None:
        """Orders the store holds closed (completed or retired) that this engine did not close
        itself: from now on their events are dropped as events after the close are, as if it had.
        An order held open here stays open."""
        for oid in order_ids:
            if oid not in self._orders:
                self._remember(oid)

    def rewind(self) -> int:
        """Forget every order and the time reached: a rebuild after a rebalance restores its
        partitions' open orders and starts from their low watermark again, as a restart does.
        Learned transit times and counters stay. Returns how many orders were dropped."""
        dropped = sum(self.drop_partition(p) for p in {st.partition for st in self._orders.values()})
        self.now = _UNSET
        self._index = DeadlineIndex(self._index.width_ms)  # nothing armed is left, and its time goes back
        return dropped

    def drop_partition(self, partition: int) -> int:
        """Forget the orders of a partition this instance no longer owns; returns how many."""
        gone = [oid for oid, st in self._orders.items() if st.partition == partition]
        for oid in gone:
            del self._orders[oid]
            self._open.pop(oid, None)
            self._failures.pop(oid, None)
            self._pending.pop(oid, None)
            if self._dirty is not None:
                self._dirty.pop(oid, None)
        return len(gone)


def _awaits(step: Step, done: int) -> bool:
    """Whether an order with hops ``done`` (a bitmask) awaits ``step``: its after hop went
    through and it has not."""
    return not done & (1 << step.index) and bool(done & (1 << step.after_index))


def _eid_ints(packed: bytes) -> list[int]:
    """The event-id hashes as the integers the store keeps (big-endian, as the hex they come from).
    One unpack by a struct made once per count of ids (fewer calls than an array, a byteswap and
    a list of it); an order with more ids than are cached takes the array."""
    n = len(packed) >> 3
    if n < _EID_CACHED:
        unpack = _EID_UNPACK[n]
        return list(unpack(packed))
    ids = array("Q", packed)
    if sys.byteorder == "little":
        ids.byteswap()
    return ids.tolist()


def _eid_bytes(event_id: str) -> bytes:
    """8 bytes standing for an event id: the first half of a 32-hex id (the default ids are
    hashes already), else a hash of it."""
    if len(event_id) == 32:
        try:
            h = bytes.fromhex(event_id[:16])
        except ValueError:
            pass
        else:
            if len(h) == 8:
                return h
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()[::-1]
