"""Stitching re-keyed orders (docs/stitching.md): the stage in front of the engine that turns an
event reported under another key of an order (a payment id, a shipment id) into an event of the
order itself, under the order's id and trace id.

The journeys file declares the keys (``Journey.keys``): events of a keyed step carry the other
key in ``order_id``; an event of a linking hop carries the order id in ``order_id`` and the other
key in ``attrs[attr]``, which links the two. ``Stitcher.stitch(ev)`` returns

* the event unchanged when it is none of that (the fast path: one dict lookup of its hop);
* a linking event unchanged, after learning its link (and releasing the events that waited for it);
* a keyed event re-keyed to its order when the link is known (in memory, else asked of the store);
* ``None`` when the link is not known yet: the event waits, bounded in number, until its link
  arrives (``drain_released``) or ``within`` passes (``expire`` reports it as unlinked).

Re-keyed events keep their event id and carry the other key in ``attrs`` (the trail shows it).
New links and the waiting events are handed to the store (``drain_changes``) in the same cycle,
before the input position is committed, so a restart loses neither (``restore``). The links are
also what lets the lookup find an order by any of its keys.

Partitioning: the bus is keyed by ``order_id``, so a keyed event may be read from another partition
than its order's. The caller feeds a re-keyed event to the engine under its order's partition.
With one tracer owning every partition (the embedded pipeline) that is all it takes; with several,
the store's link table is shared, so a waiting event is released by ``recheck`` once any process
has stored its link.

This module imports only the tracer's model and journeys.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from tracer.events import MAX_ATTRS
from tracer.journeys import Journeys, KeySpec
from tracer.model import HopEvent, KeyLink, Waiting  # Structs stay interpreted (tracer.native)
from tracer.times import format_duration

log = logging.getLogger("ordertrail.stitch")
_replace: Final = msgspec.structs.replace


LinkLookup = Callable[[Sequence[tuple[str, str]]], list[KeyLink]]


@dataclass(slots=True)
class StitchStats:
    linked: int = 0  # links learned
    rekeyed: int = 0  # events moved to their order
    waited: int = 0  # events that had to wait for their link
    unlinked: int = 0  # events reported as unlinked (timed out or overflowed)
    relinked: int = 0  # a key moved to another order (the latest link wins)


class Stitcher:
    def __init__(
        self,
        journeys: Journeys,
        *,
        lookup: LinkLookup | None = None,
        max_waiting: int = 10_000,
        cache_size: int = 200_000,
        recheck_ms: int = 1_000,
    ) -> None:
        self._keyed: dict[str, KeySpec] = {}
        linking: dict[str, list[KeySpec]] = {}
        for j in journeys.journeys.values():
            for spec in j.keys:
                for hop in spec.steps:
                    self._keyed[hop] = spec
                for hop in spec.linked_by or tuple(h for h in j.hops if h not in spec.steps):
                    linking.setdefault(hop, []).append(spec)
        # One lookup per event tells whether its hop is stitched at all, and how.
        self._routes = {
            hop: _Route(linking.get(hop, []), self._keyed.get(hop)) for hop in self._keyed.keys() | linking.keys()
        }
        self._lookup = lookup
        # Both indexed by ``_slot(key, value)``, a string: a (key, value) tuple per lookup and per
        # cached link would be one more object for the garbage collector to count and walk, and
        # for the usual key the slot is the value string the event or the link holds already.
        self._bare = next((spec.name for j in journeys.journeys.values() for spec in j.keys), "")
        self._cache: OrderedDict[str, KeyLink] = OrderedDict()
        self._cache_size = cache_size
        self._waiting: dict[str, list[Waiting]] = {}
        self._n_waiting = 0
        self._max_waiting = max_waiting
        self._recheck_ms = recheck_ms
        self._last_recheck = 0
        self._released: list[HopEvent] = []
        self._new_links: list[KeyLink] = []
        self._added: list[Waiting] = []
        self._done: list[Waiting] = []
        self._unstamped: list[str] = []  # slots of the events that began to wait this cycle
        self.stats = StitchStats()

    @property
    def active(self) -> bool:
        """Whether any journey declares keys (else ``stitch`` is the identity)."""
        return bool(self._routes)

    def __len__(self) -> int:
        """Events waiting for their link."""
        return self._n_waiting

    # -- the hot path ---------------------------------------------------------------------------

    def stitch(self, ev: HopEvent, partition: int = 0, offset: int = 0) -> HopEvent | None:
        route = self._routes.get(ev.hop)
        if route is None:
            return ev
        attrs = ev.attrs
        order_id = ev.order_id
        if route.linking and attrs:
            for spec in route.linking:
                value = attrs.get(spec.attr)
                if value and value != order_id:
                    slot = self._slot(spec.name, value)
                    known = self._cache.get(slot)
                    if known is None or known.order_id != order_id or slot in self._waiting:
                        self._learn(KeyLink(spec.name, value, order_id, ev.trace_id, ev.ts), slot, known)
        keyed = route.keyed
        if keyed is None:
            return ev
        carried = attrs.get(keyed.attr) if attrs else None
        if carried and carried != order_id:
            # Reported under the order id with the other key alongside (or re-keyed already).
            slot = self._slot(keyed.name, carried)
            self._learn(KeyLink(keyed.name, carried, order_id, ev.trace_id, ev.ts), slot, self._cache.get(slot))
            return ev
        slot = self._slot(keyed.name, order_id)
        link = self._known(keyed.name, order_id, slot)
        if link is not None:
            return self._rekey(ev, keyed, link)
        self._wait(Waiting(keyed.name, order_id, ev, partition, offset, 0), slot)
        return None

    # -- what the caller collects each cycle ------------------------------------------------------

    def drain_released(self) -> list[HopEvent]:
        """Waiting events whose link arrived since the last call, re-keyed."""
        out, self._released = self._released, []
        return out

    def expire(self, now_ms: int) -> list[tuple[Waiting, str]]:
        """Waiting events past their ``within`` (or over the bound), with the reason. Also stamps
        the events that began to wait this cycle, and now and then asks the store for links other
        processes learned."""
        for slot in self._unstamped:
            group = self._waiting.get(slot)
            if group:
                self._waiting[slot] = [w if w.since else _replace(w, since=now_ms) for w in group]
        self._unstamped.clear()
        if self._waiting and self._lookup is not None and now_ms - self._last_recheck >= self._recheck_ms:
            self._last_recheck = now_ms
            self.recheck()
        out: list[tuple[Waiting, str]] = []
        for slot, group in list(self._waiting.items()):
            keep = []
            for w in group:
                spec = self._keyed.get(w.event.hop)
                within = spec.within_ms if spec is not None else 0
                if w.since and now_ms - w.since > within:
                    out.append((w, _unlinked_reason(w, within)))
                else:
                    keep.append(w)
            if len(keep) != len(group):
                self._set_group(slot, keep)
        while self._n_waiting > self._max_waiting:
            slot, group = next(iter(self._waiting.items()))
            out.append((group[0], f"unlinked: more than {self._max_waiting} events wait for their link"))
            self._set_group(slot, group[1:])
        for w, _ in out:
            self._done.append(w)
        self.stats.unlinked += len(out)
        return out

    def recheck(self) -> int:
        """Ask the store for the links of every waiting event; release those found."""
        if self._lookup is None or not self._waiting:
            return 0
        found = self._lookup([(group[0].key, group[0].value) for group in self._waiting.values()])
        for link in found:
            slot = self._slot(link.key, link.value)
            self._learn(link, slot, self._cache.get(slot), stored=True)
        return len(found)

    def drain_changes(self) -> tuple[list[KeyLink], list[Waiting], list[Waiting]]:
        """(new links, events that began to wait, events that stopped waiting) since the last call,
        for the store. An event that began and stopped waiting within one cycle is only in the
        last list (marking done a row never written is harmless)."""
        added: list[Waiting] = []
        waiting = self._waiting
        if self._added and waiting:
            # Most began and stopped waiting within the cycle: only those still waiting are looked at.
            wanted = dict.fromkeys(
                (w.key, w.value, w.event.event_id) for w in self._added if self._slot(w.key, w.value) in waiting
            )
            current = {
                (w.key, w.value, w.event.event_id): w
                for slot in {self._slot(k, v) for k, v, _ in wanted}
                for w in waiting.get(slot, ())
            }
            added = [current[k] for k in wanted if k in current]
        done = self._done
        out = (self._new_links, added, done)
        self._new_links, self._added, self._done = [], [], []
        return out

    def drain_waiting(self) -> list[Waiting]:
        """Every event still waiting, removed (a backtest's end: their links never came)."""
        out = [w for group in self._waiting.values() for w in group]
        self._waiting.clear()
        self._n_waiting = 0
        self.stats.unlinked += len(out)
        return out

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the waiting events read from ``partitions`` (revoked: their new owner restores
        them from the store); returns how many."""
        gone = set(partitions)
        n = 0
        for slot, group in list(self._waiting.items()):
            keep = [w for w in group if w.partition not in gone]
            n += len(group) - len(keep)
            if len(keep) != len(group):
                self._set_group(slot, keep)
        return n

    def restore(self, waiting: Iterable[Waiting]) -> int:
        """Events that were waiting when the pipeline stopped (from the store)."""
        n = 0
        for w in waiting:
            slot = self._slot(w.key, w.value)
            self._put(w, slot)
            if not w.since:
                self._unstamped.append(slot)
            n += 1
        return n

    # -- internals ------------------------------------------------------------------------------

    def _known(self, key: str, value: str, slot: str) -> KeyLink | None:
        link = self._cache.get(slot)
        if link is None and self._lookup is not None and slot not in self._waiting:
            # Not asked again while others wait for the same key: ``recheck`` asks for them all.
            for found in self._lookup([(key, value)]):
                found_slot = self._slot(found.key, found.value)
                self._remember(found, found_slot, found_slot in self._cache)
                if found.key == key and found.value == value:
                    link = found
        return link

    def _learn(self, link: KeyLink, slot: str, known: KeyLink | None, *, stored: bool = False) -> None:
        """Learn ``link`` (at ``slot``; ``known``: what the cache holds there) and release the
        events waiting for it."""
        if known is None or known.order_id != link.order_id:
            if known is not None:
                self.stats.relinked += 1
                log.warning(
                    "%s %r moves from order %r to order %r (the latest link wins)",
                    link.key,
                    link.value,
                    known.order_id,
                    link.order_id,
                )
            self._remember(link, slot, known is not None)
            if not stored:
                self._new_links.append(link)
                self.stats.linked += 1
        if not self._waiting:
            return
        group = self._waiting.pop(slot, None)
        if group:
            self._n_waiting -= len(group)
            spec_of = self._keyed
            for w in group:
                spec = spec_of.get(w.event.hop)
                if spec is not None:
                    self._released.append(self._rekey(w.event, spec, link))
                self._done.append(w)

    def _remember(self, link: KeyLink, slot: str, cached: bool) -> None:
        """Cache ``link`` as the newest entry (``cached``: whether ``slot`` holds one already);
        the oldest goes when the cache is full."""
        cache = self._cache
        cache[slot] = link  # a new slot goes last
        if cached:
            cache.move_to_end(slot)
        if len(cache) > self._cache_size:
            cache.popitem(last=False)  # bounded; the store still knows it

    def _rekey(self, ev: HopEvent, spec: KeySpec, link: KeyLink) -> HopEvent:
        self.stats.rekeyed += 1
        attrs = ev.attrs
        if not attrs:
            attrs = {spec.attr: ev.order_id}
        elif spec.attr not in attrs and len(attrs) < MAX_ATTRS:
            attrs = {**attrs, spec.attr: ev.order_id}
        return _replace(ev, order_id=link.order_id, trace_id=link.trace_id, attrs=attrs)

    def _wait(self, w: Waiting, slot: str) -> None:
        self.stats.waited += 1
        self._put(w, slot)
        self._added.append(w)
        self._unstamped.append(slot)

    def _put(self, w: Waiting, slot: str) -> None:
        group = self._waiting.get(slot)
        if group is None:
            self._waiting[slot] = [w]
        else:
            event_id = w.event.event_id
            for o in group:
                if o.event.event_id == event_id:
                    return  # a re-delivered event already waiting
            group.append(w)
        self._n_waiting += 1

    def _slot(self, key: str, value: str) -> str:
        """The one string that stands for the pair (key, value): the value itself for the key the
        journeys name first (most have only one), else ``key NUL value``. A key name never holds a
        NUL (``KEY_NAME_RE``), nor does a bare value, so two pairs never share a slot."""
        if key == self._bare and "\x00" not in value:
            return value
        return f"{key}\x00{value}"

    def _set_group(self, slot: str, group: list[Waiting]) -> None:
        old = self._waiting.get(slot, [])
        self._n_waiting += len(group) - len(old)
        if group:
            self._waiting[slot] = group
        else:
            self._waiting.pop(slot, None)


class _Route:
    """What the stitcher does with the events of one hop: learn links from them (``linking``), and
    re-key them when they are reported under another key (``keyed``)."""

    __slots__ = ("keyed", "linking")

    def __init__(self, linking: list[KeySpec], keyed: KeySpec | None) -> None:
        self.linking = linking
        self.keyed = keyed


def _unlinked_reason(w: Waiting, within_ms: int) -> str:
    return (
        f"unlinked: no event linked {w.key} {w.value!r} to an order within {format_duration(within_ms)} "
        f"(hop {w.event.hop}); send the linking event with attrs.{w.key}, or check the journeys file's keys"
    )


__all__ = ["KeyLink", "LinkLookup", "StitchStats", "Stitcher", "Waiting"]
