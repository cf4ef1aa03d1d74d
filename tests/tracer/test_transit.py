"""Learned transit times of an edge: the soft limit is a high percentile of recent samples times
a factor, never below the floor, withheld until enough samples exist, refreshed as samples come."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracer.journeys import StallLearning
from tracer.transit import BUCKETS_MS, EdgeTransit, _first_at_least


def edge(samples: list[int], **learning: float) -> EdgeTransit:
    e = EdgeTransit(StallLearning(**learning))  # type: ignore[arg-type]
    for ms in samples:
        e.record(ms)
    return e


def test_nothing_is_learned_before_min_samples() -> None:
    e = edge([1000] * 29)
    assert (e.limit_ms, e.percentile_ms) == (None, None)
    e.record(1000)
    assert (e.percentile_ms, e.limit_ms) == (1000, 2000)


def test_the_limit_is_the_percentile_times_the_factor() -> None:
    e = edge(list(range(1, 101)), percentile=90.0, factor=3.0, floor_ms=0, min_samples=100)
    assert e.percentile_ms == 90  # nearest rank: the 90th of 100 samples
    assert e.limit_ms == 270


def test_the_limit_is_never_below_the_floor() -> None:
    e = edge([10] * 30, floor_ms=1000)
    assert (e.percentile_ms, e.limit_ms) == (10, 1000)


def test_the_limit_is_refreshed_every_refresh_samples() -> None:
    e = EdgeTransit(StallLearning(min_samples=1, floor_ms=0), refresh=4)
    e.record(100)
    assert e.limit_ms == 200
    for _ in range(3):
        e.record(1000)
    assert e.limit_ms == 200  # not yet: three samples since the last refresh
    e.record(1000)
    assert e.limit_ms == 2000


def test_only_the_most_recent_samples_count() -> None:
    e = EdgeTransit(StallLearning(min_samples=1, floor_ms=0), size=8, refresh=1)
    for ms in [5000] * 8 + [100] * 8:
        e.record(ms)
    assert e.percentile_ms == 100
    assert sorted(e.recent()) == [100] * 8
    assert e.count == 16


def test_a_negative_transit_from_clock_skew_counts_as_zero() -> None:
    e = edge([-500] * 30, floor_ms=0)
    assert e.percentile_ms == 0


@pytest.mark.parametrize(("size", "refresh"), [(0, 32), (512, 0)])
def test_sizes_that_are_not_positive_are_refused(size: int, refresh: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        EdgeTransit(StallLearning(), size=size, refresh=refresh)


def test_every_sample_is_counted_in_cumulative_buckets_that_the_ring_does_not_forget() -> None:
    e = EdgeTransit(StallLearning(), size=2)
    for ms in (-5, 10, 11, 1_500, 10**9):  # a negative transit (clock skew) counts as 0
        e.record(ms)
    hist = e.histogram()
    assert len(hist) == len(BUCKETS_MS) + 1
    assert hist[BUCKETS_MS.index(10)] == 2  # -5 -> 0, and 10: upper bounds are inclusive
    assert hist[BUCKETS_MS.index(20)] == 3
    assert hist[BUCKETS_MS.index(2_000)] == 4
    assert hist[-2] == 4 and hist[-1] == 5  # past a day: only in +Inf
    assert e.sum_ms == 10 + 11 + 1_500 + 10**9
    assert len(e.recent()) == 2


@given(st.lists(st.integers(-5, 50)), st.integers(-10, 60))
def test_the_compiled_search_finds_what_bisect_finds(values: list[int], x: int) -> None:
    values.sort()
    assert _first_at_least(values, x) == bisect.bisect_left(values, x)
    assert _first_at_least(values, x + 1) == bisect.bisect_right(values, x)
