"""How many orders wait at each edge, and since when: the early-warning detectors' view of the
tracer (``detectors.edges``), kept as the engine works, O(1) per event.

An order waits at the edge into step ``hop`` from the moment its ``after`` hop is known until
``hop`` is reported (a *seen* departure), a later hop implies it (an *implied* departure: the
business went on but this hop's event never came), or the order closes. Per edge, ``EdgeLoad``
counts the waiting orders in buckets of the time they entered, so "how many entered between
these times and still wait" is a sum over at most a few hundred buckets, and keeps monotonic
counters of entries and departures for rates.

``WaitingTracer`` is a ``Tracer`` that keeps these counts: it compares what an order awaits
(``Tracer.awaiting``) before and after each event, and forgets an order's waits when it closes,
is retired or its partition is dropped. Readers take the processor's lock, as for any engine state.
It imports only the engine and the journeys.
"""

from __future__ import annotations

from collections.abc import Iterable

from tracer.engine import OrderSnapshot, OrderState, Tracer, _at
from tracer.journeys import Journeys
from tracer.model import Finding, HopEvent

_BUCKETS = 512  # per edge: the step's deadline spread over this many buckets (at least 250 ms each)


class EdgeLoad:
    """The orders waiting at one edge, bucketed by the time they entered it."""

    __slots__ = ("bucket_ms", "buckets", "entered", "left_implied", "left_other", "left_seen", "waiting")

    def __init__(self, within_ms: int) -> None:
        self.bucket_ms = max(250, within_ms // _BUCKETS)
        self.buckets: dict[int, int] = {}  # entry time // bucket_ms -> orders waiting
        self.waiting = 0
        self.entered = 0
        self.left_seen = 0  # the hop was reported
        self.left_implied = 0  # a later hop was reported: this hop's event never came
        self.left_other = 0  # the order closed, was retired or moved away

    def add(self, entered_ms: int) -> None:
        b = entered_ms // self.bucket_ms
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.waiting += 1

    def remove(self, entered_ms: int) -> None:
        b = entered_ms // self.bucket_ms
        n = self.buckets.get(b, 0) - 1
        if n > 0:
            self.buckets[b] = n
        else:
            self.buckets.pop(b, None)
        self.waiting -= 1

    def entered_between(self, lo_ms: int, hi_ms: int) -> int:
        """Orders still waiting that entered in [lo, hi), to whole buckets: those of the buckets
        starting at or after ``lo`` and ending at or before ``hi`` — so an order counted has waited
        at least ``now − hi``. Looks up one bucket per ``bucket_ms`` of the span, however many
        orders wait elsewhere (a span within the step's deadline is at most 513 lookups)."""
        bms = self.bucket_ms
        get = self.buckets.get
        return sum(get(b, 0) for b in range(-(-lo_ms // bms), hi_ms // bms))

    def oldest_ms(self) -> int | None:
        """When the longest-waiting order entered (to a bucket), or None when none waits. O(buckets)."""
        return min(self.buckets) * self.bucket_ms if self.buckets else None


class WaitingTracer(Tracer):
    """A ``Tracer`` that also keeps ``EdgeLoad`` per (journey, hop) of every step."""

    def __init__(
        self,
        journeys: Journeys,
        *,
        bucket_ms: int = 100,
        retention_ms: int = 7 * 86_400_000,
        closed_memory: int = 200_000,
        track_snapshots: bool = True,
    ) -> None:
        # Tracer's keywords spelled out: mypyc (tracer.native) cannot forward **kwargs to them.
        super().__init__(
            journeys,
            bucket_ms=bucket_ms,
            retention_ms=retention_ms,
            closed_memory=closed_memory,
            track_snapshots=track_snapshots,
        )
        self.loads: dict[tuple[str, str], EdgeLoad] = {
            (j.name, s.hop): EdgeLoad(s.within_ms) for j in journeys.journeys.values() for s in j.steps
        }
        self._by_index = {
            j.name: {s.index: self.loads[(j.name, s.hop)] for s in j.steps} for j in journeys.journeys.values()
        }
        self._plan = {  # per journey: (hop index, its after hop's index, its load) of every step
            j.name: [(s.index, s.after_index, self.loads[(j.name, s.hop)]) for s in j.steps]
            for j in journeys.journeys.values()
        }
        self._in_event = False

    def load(self, journey: str, hop: str) -> EdgeLoad | None:
        return self.loads.get((journey, hop))

    def on_event(self, ev: HopEvent, partition: int = 0) -> None:
        # One pass over the journey's steps comparing the order before and after the event: which
        # edges it left (and how), entered, or re-entered at another time. Reads the hop times
        # where ``OrderState.buf`` keeps them (first, one int64 per hop); ``Tracer.awaiting`` is
        # the same rule, used on the rare paths.
        oid = ev.order_id
        st = self._orders.get(oid)
        if st is None or st.journey is None:
            self._in_event = True
            try:
                super().on_event(ev, partition)
            finally:
                self._in_event = False
            st = self._orders.get(oid)
            if st is not None and st.journey is not None:
                self._enter_all(st)
            return
        done0, buf0 = st.seen | st.implied, st.buf
        self._in_event = True
        try:
            super().on_event(ev, partition)
        finally:
            self._in_event = False
        closed = oid not in self._orders
        done1 = 0 if closed else st.seen | st.implied
        if done1 == done0 and not closed and st.buf[: len(buf0)] == buf0:
            return  # nothing it waits at changed (a duplicate, an error, a hop outside the journey)
        buf1 = st.buf
        gone = st.seen | st.implied  # what the order reached, closed or not, to class departures
        for i, a, load in self._plan[st.journey.name]:
            was = done0 >> a & 1 and not done0 >> i & 1
            now = done1 >> a & 1 and not done1 >> i & 1
            if was:
                t0 = _at(buf0, 8 * a)
                if now:
                    t1 = _at(buf1, 8 * a)
                    if t1 != t0:
                        load.remove(t0)
                        load.add(t1)
                    continue
                load.remove(t0)
                if st.seen >> i & 1:
                    load.left_seen += 1
                elif gone >> i & 1:
                    load.left_implied += 1
                else:
                    load.left_other += 1
            elif now:
                load.add(_at(buf1, 8 * a))
                load.entered += 1

    def _enter_all(self, st: OrderState) -> None:
        assert st.journey is not None
        loads = self._by_index[st.journey.name]
        for i, t in self.awaiting(st):
            loads[i].add(t)
            loads[i].entered += 1

    def _close(self, oid: str, st: OrderState) -> None:
        super()._close(oid, st)
        if not self._in_event:  # closes inside on_event are accounted for there
            self._forget(st)

    def _forget(self, st: OrderState) -> None:
        if st.journey is None:
            return
        loads = self._by_index[st.journey.name]
        for i, t in self.awaiting(st):
            loads[i].remove(t)
            loads[i].left_other += 1

    def restore(self, snapshots: Iterable[OrderSnapshot], findings: Iterable[Finding]) -> int:
        n = super().restore(snapshots, findings)
        for load in self.loads.values():
            load.buckets.clear()
            load.waiting = 0
        for oid in list(self._orders):
            st = self._orders[oid]
            if st.journey is not None:
                loads = self._by_index[st.journey.name]
                for i, t in self.awaiting(st):
                    loads[i].add(t)
        return n

    def drop_partition(self, partition: int) -> int:
        for st in self._orders.values():
            if st.partition == partition:
                self._forget(st)
        return super().drop_partition(partition)
