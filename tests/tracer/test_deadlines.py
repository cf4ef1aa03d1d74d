"""The deadline index: orders come back once the clock is strictly past their deadline, earliest
first, exactly to the millisecond whatever the window width; stale entries are the caller's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracer.deadlines import DeadlineIndex


def drain(index: DeadlineIndex, now: int) -> list[tuple[int, list[str]]]:
    return index.pop_due(now)


def test_a_deadline_fires_only_once_the_clock_is_strictly_past_it() -> None:
    index = DeadlineIndex(100)
    index.arm(1_050, "o1")
    assert drain(index, 1_050) == []
    assert drain(index, 1_051) == [(1_050, ["o1"])]
    assert drain(index, 5_000) == []


def test_deadlines_come_back_earliest_first_with_every_order_due_then() -> None:
    index = DeadlineIndex(100)
    for due, oid in ((2_500, "c"), (1_000, "a"), (2_500, "d"), (1_001, "b")):
        index.arm(due, oid)
    assert drain(index, 10_000) == [(1_000, ["a"]), (1_001, ["b"]), (2_500, ["c", "d"])]
    assert len(index) == 0


def test_a_deadline_armed_inside_the_window_the_clock_is_in_still_fires_exactly() -> None:
    index = DeadlineIndex(100)
    index.arm(1_090, "early")
    assert drain(index, 1_020) == []  # the clock is inside the window 1000–1099
    index.arm(1_030, "late-armed")
    assert drain(index, 1_031) == [(1_030, ["late-armed"])]
    assert drain(index, 1_091) == [(1_090, ["early"])]


def test_len_counts_every_entry_and_clear_empties_the_index() -> None:
    index = DeadlineIndex(10)
    index.arm(5, "a")
    index.arm(500, "a")
    index.pop_due(1)
    assert len(index) == 2
    index.clear()
    assert len(index) == 0 and index.pop_due(10**6) == []


def test_next_due_is_a_lower_bound_of_the_earliest_deadline() -> None:
    index = DeadlineIndex(100)
    assert index.next_due() is None
    index.arm(1_234, "a")
    assert index.next_due() == 1_200
    index.pop_due(1_201)
    assert index.next_due() == 1_234


def test_a_window_width_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="width_ms: 0 must be a positive number of milliseconds"):
        DeadlineIndex(0)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=1000),
    st.lists(st.tuples(st.integers(min_value=0, max_value=20_000), st.integers(min_value=0, max_value=20_000))),
)
def test_every_deadline_fires_exactly_once_at_the_first_clock_past_it(width: int, arms: list[tuple[int, int]]) -> None:
    """``arms`` are (time the deadline is armed, its due time); the clock steps through time."""
    index = DeadlineIndex(width)
    fired: dict[str, tuple[int, int]] = {}
    expected: dict[str, int] = {}
    pending = sorted((at, due, f"o{k}") for k, (at, due) in enumerate(arms))
    clock = 0
    for at, due, oid in pending:
        if at > clock:
            for d, oids in drain(index, at):
                fired.update({o: (d, at) for o in oids})
            clock = at
        due = max(due, clock)  # the engine arms only what is not yet past
        index.arm(due, oid)
        expected[oid] = due
    for now in range(clock + 1, 20_002):
        for d, oids in drain(index, now):
            fired.update({o: (d, now) for o in oids})
    assert {o: d for o, (d, _) in fired.items()} == expected
    for due, first_clock_past in fired.values():
        assert first_clock_past > due


def test_a_deadline_armed_for_a_time_already_passed_fires_at_the_next_call_in_order() -> None:
    """The engine never arms a passed time; the index still hands such a deadline over at the
    next call, merged in time order with what the wheel has due."""
    index = DeadlineIndex(100)
    index.arm(1_150, "wheel")
    assert drain(index, 1_120) == []  # the clock is inside the window 1100–1199
    index.arm(1_105, "passed")  # in the current window, before the clock
    index.arm(900, "before")  # in a window the clock has left
    index.arm(1_150, "same")
    assert drain(index, 1_160) == [(900, ["before"]), (1_105, ["passed"]), (1_150, ["wheel", "same"])]
    assert len(index) == 0


def test_a_window_the_clock_entered_empty_takes_deadlines_and_fires_them_exactly() -> None:
    index = DeadlineIndex(100)
    index.arm(5_000, "far")
    assert drain(index, 1_050) == []  # no window holds anything here yet
    index.arm(1_070, "a")  # the window the clock is in, not opened: it waits in the windows
    index.arm(1_060, "b")
    assert index.earliest <= 1_060
    assert drain(index, 1_061) == [(1_060, ["b"])]
    assert drain(index, 1_071) == [(1_070, ["a"])]
    assert drain(index, 4_999) == []
    assert drain(index, 5_001) == [(5_000, ["far"])]
