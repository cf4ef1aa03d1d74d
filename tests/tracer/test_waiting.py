"""Per-edge waiting counts kept by WaitingTracer: entries, departures by kind, ages, and what a
restore, a retirement or a dropped partition leaves behind."""

from __future__ import annotations

from typing import Any

from tests.detectors.conftest import T0, event
from tracer.engine import Tracer
from tracer.journeys import parse_journeys
from tracer.waiting import WaitingTracer

CHAIN = parse_journeys(
    """
journeys:
  j:
    start: a
    steps:
      b: {after: a, within: 1m}
      c: {after: b, within: 1m}
"""
)


def test_an_order_waits_at_the_edge_after_its_after_hop_until_the_hop_comes() -> None:
    t = WaitingTracer(CHAIN)
    t.on_event(event("o1", "a", T0))
    t.on_event(event("o2", "a", T0 + 5_000))
    b = t.load("j", "b")
    assert b is not None and b.waiting == 2 and b.entered == 2
    assert b.entered_between(T0, T0 + 6_000) == 2
    assert b.entered_between(T0 + 1_000, T0 + 6_000) == 1
    assert b.entered_between(T0, T0 + 5_000) == 1  # whole buckets: the one holding T0 + 5 s ends later
    t.on_event(event("o1", "b", T0 + 1_000))
    c = t.load("j", "c")
    assert (b.waiting, b.left_seen, c is not None and c.waiting) == (1, 1, 1)


def test_a_later_hop_implies_the_one_before_it_a_departure_without_a_report() -> None:
    t = WaitingTracer(CHAIN)
    t.on_event(event("o1", "a", T0))
    t.on_event(event("o1", "c", T0 + 2_000))  # completes the order in the same event
    b = t.load("j", "b")
    assert b is not None and (b.waiting, b.left_implied, b.left_seen) == (0, 1, 0)
    assert b.buckets == {}


def test_a_retired_order_stops_waiting() -> None:
    t = WaitingTracer(CHAIN, retention_ms=60_000)
    t.on_event(event("o1", "a", T0))
    t.advance(T0 + 10 * 60_000)
    b = t.load("j", "b")
    assert b is not None and b.waiting == 0 and b.left_other == 1 and len(t) == 0


def test_restore_and_drop_partition_keep_the_counts_true() -> None:
    t = WaitingTracer(CHAIN)
    t.on_event(event("o1", "a", T0), partition=1)
    t.on_event(event("o2", "a", T0), partition=2)
    snaps = t.drain_snapshots()
    fresh = WaitingTracer(CHAIN)
    fresh.restore(snaps, [])
    b = fresh.load("j", "b")
    assert b is not None and b.waiting == 2
    fresh.drop_partition(1)
    oldest = b.oldest_ms()
    assert b.waiting == 1 and oldest is not None and oldest <= T0


def test_a_waiting_tracer_takes_the_tracers_keywords_with_its_defaults() -> None:
    # WaitingTracer spells Tracer's keywords out (compiled, it cannot forward **kwargs): they must agree.
    fields = ("now", "retention_ms", "_closed_memory", "_dirty")
    plain, waiting = Tracer(CHAIN), WaitingTracer(CHAIN)
    assert [getattr(waiting, f) for f in fields] == [getattr(plain, f) for f in fields]
    assert waiting._index.width_ms == plain._index.width_ms
    kwargs: dict[str, Any] = {"bucket_ms": 7, "retention_ms": 9, "closed_memory": 3, "track_snapshots": False}
    plain, waiting = Tracer(CHAIN, **kwargs), WaitingTracer(CHAIN, **kwargs)
    assert [getattr(waiting, f) for f in fields] == [getattr(plain, f) for f in fields]
    assert waiting._index.width_ms == plain._index.width_ms == 7
