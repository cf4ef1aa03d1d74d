"""An in-memory fake of ``tracer.clickhouse.Store``: the same methods and answers, no database.

For unit tests of the parts that use a store (the processor, the lookup, the detectors) and for
``ordertrail backtest`` runs that need no storage. Latest write wins, as with the store's version
columns; re-delivered events (same ``event_id``) are kept once. ``fail_writes`` makes the next
writes raise ``StoreError``, to test what happens during a store outage. Thread-safe.

Imports only the tracer's model, engine snapshot and the store's record type and ordering rules.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from tracer.clickhouse import KEY_COLUMNS, OrderRecord, check_query, latest, parse_amounts, trail, with_order_context
from tracer.engine import OrderSnapshot
from tracer.errors import StoreError
from tracer.model import OPEN, Finding, HopEvent
from tracer.stitch import KeyLink, Waiting


class MemStore:
    """Everything in dicts. ``fail_writes``: how many of the next writes fail."""

    def __init__(self) -> None:
        self.migrations_applied: list[int] = []
        self.fail_writes = 0
        self.writes = 0  # successful write() calls
        self._lock = threading.Lock()
        self._events: dict[str, dict[str, HopEvent]] = {}
        self._orders: dict[str, OrderSnapshot] = {}
        self._findings: dict[tuple[str, str, str], Finding] = {}
        self._links: dict[tuple[str, str], KeyLink] = {}
        self._waiting: dict[tuple[str, str, str], Waiting] = {}

    def write(
        self, events: Sequence[HopEvent], findings: Sequence[Finding], snapshots: Sequence[OrderSnapshot]
    ) -> None:
        with self._lock:
            if self.fail_writes > 0:
                self.fail_writes -= 1
                raise StoreError("store mem://: writing a batch failed: injected failure (fail_writes)")
            known = {s.order_id: s for s in snapshots}
            for ev in events:
                ev = with_order_context(ev, known.get(ev.order_id))
                self._events.setdefault(ev.order_id, {})[ev.event_id] = ev
            for f in findings:
                self._findings[(f.order_id, f.hop, f.kind)] = f
            self._orders.update(known)
            self.writes += 1

    def order(self, order_id: str) -> OrderRecord | None:
        with self._lock:
            snapshot = self._orders.get(order_id)
            events = list(self._events.get(order_id, {}).values())
            findings = [f for key, f in self._findings.items() if key[0] == order_id]
        if snapshot is None and not events and not findings:
            return None
        return OrderRecord(snapshot, trail(events), latest((0, f) for f in findings))

    def orders(
        self, *, customer_id: str | None = None, trace_id: str | None = None, limit: int = 100
    ) -> list[OrderSnapshot]:
        check_query(limit)
        with self._lock:
            found = [
                s
                for s in self._orders.values()
                if (customer_id is None or s.customer_id == customer_id)
                and (trace_id is None or s.trace_id == trace_id)
            ]
        found.sort(key=lambda s: (-s.last_ts, s.order_id))
        return found[:limit]

    def findings(
        self,
        *,
        status: str = OPEN,
        kind: str | None = None,
        journey: str | None = None,
        order_id: str | None = None,
        limit: int = 1000,
    ) -> list[Finding]:
        check_query(limit, status)
        with self._lock:
            found = [
                f
                for f in self._findings.values()
                if (status == "all" or f.status == status)
                and (kind is None or f.kind == kind)
                and (journey is None or f.journey == journey)
                and (order_id is None or f.order_id == order_id)
            ]
        found.sort(key=lambda f: (-f.detected_at, f.order_id, f.hop, f.kind))
        return found[:limit]

    def open_orders(self, partitions: Iterable[int] | None = None) -> tuple[list[OrderSnapshot], list[Finding]]:
        wanted = None if partitions is None else set(partitions)
        with self._lock:
            snaps = [s for s in self._orders.values() if s.open and (wanted is None or s.partition in wanted)]
            ids = {s.order_id for s in snaps}
            findings = [f for f in self._findings.values() if f.status == OPEN and f.order_id in ids]
        return snaps, findings

    def closed_orders(self, order_ids: Sequence[str]) -> list[str]:
        with self._lock:
            return [oid for oid in dict.fromkeys(order_ids) if (s := self._orders.get(oid)) is not None and not s.open]

    def amounts(self, order_ids: Sequence[str], attr: str = "amount") -> dict[str, float]:
        with self._lock:
            pairs = [
                (oid, ev.attrs[attr])
                for oid in order_ids
                for ev in self._events.get(oid, {}).values()
                if attr in ev.attrs
            ]
        return parse_amounts(pairs)

    def waiting_at(self, journey: str, hop: str) -> tuple[int, int | None]:
        with self._lock:
            times = [s.last_ts for s in self._orders.values() if s.open and s.journey == journey and s.next_hop == hop]
        return len(times), (min(times) if times else None)

    def waiting(self) -> dict[tuple[str, str], tuple[int, int]]:
        out: dict[tuple[str, str], tuple[int, int]] = {}
        with self._lock:
            for s in self._orders.values():
                if s.open and s.next_hop:
                    n, since = out.get((s.journey, s.next_hop), (0, s.last_ts))
                    out[(s.journey, s.next_hop)] = (n + 1, min(since, s.last_ts))
        return out

    def hop_count(self, hop: str, start_ms: int, end_ms: int) -> int:
        with self._lock:
            events = [ev for by_id in self._events.values() for ev in by_id.values()]
        return sum(1 for ev in events if ev.hop == hop and start_ms < ev.ts <= end_ms)

    def missing_keys(
        self, hop: str, key: str, before: tuple[int, int], window: tuple[int, int], sample: int = 10
    ) -> tuple[int, int, list[str]]:
        def keys(span: tuple[int, int]) -> set[str]:
            with self._lock:
                events = [ev for by_id in self._events.values() for ev in by_id.values()]
            out = set()
            for ev in events:
                if ev.hop == hop and span[0] < ev.ts <= span[1]:
                    value = getattr(ev, key, None) if key in KEY_COLUMNS else ev.attrs.get(key)
                    if value:
                        out.add(str(value))
            return out

        expected = keys(before)
        missing = sorted(expected - keys(window))
        return len(expected), len(missing), missing[:sample]

    def count_events(self) -> int:
        with self._lock:
            return sum(len(by_id) for by_id in self._events.values())

    def write_stitch(self, links: Sequence[KeyLink], waiting: Sequence[Waiting], done: Sequence[Waiting]) -> None:
        with self._lock:
            if self.fail_writes > 0:
                self.fail_writes -= 1
                raise StoreError("store mem://: writing stitch state failed: injected failure (fail_writes)")
            for link in links:
                self._links[(link.key, link.value)] = link
            for w in waiting:
                self._waiting[(w.key, w.value, w.event.event_id)] = w
            for w in done:
                self._waiting.pop((w.key, w.value, w.event.event_id), None)

    def key_links(self, pairs: Sequence[tuple[str, str]]) -> list[KeyLink]:
        with self._lock:
            return [self._links[p] for p in dict.fromkeys(pairs) if p in self._links]

    def order_for_key(self, value: str) -> KeyLink | None:
        with self._lock:
            found = [link for (_, v), link in self._links.items() if v == value]
        return found[-1] if found else None

    def waiting_events(self) -> list[Waiting]:
        with self._lock:
            return list(self._waiting.values())

    def close(self) -> None:
        """Nothing to release; the data stays readable, as a reopened store's would."""

    def __enter__(self) -> MemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
