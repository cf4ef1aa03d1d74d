"""ordertrail.refresh: cached answers that never make a caller wait once loaded."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from ordertrail.refresh import Refreshed
from tracer.clock import ManualClock


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False

    def __call__(self) -> int:
        if self.fail:
            raise RuntimeError("store down")
        self.calls += 1
        return self.calls


class Deferred:
    """Starts nothing until the test runs what was spawned."""

    def __init__(self) -> None:
        self.spawned: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.spawned.append(fn)

    def run(self) -> None:
        spawned, self.spawned = self.spawned, []
        for fn in spawned:
            fn()


def test_the_first_get_loads_and_later_gets_reuse_the_answer() -> None:
    load, clock, spawn = Loader(), ManualClock(1_000), Deferred()
    cached = Refreshed(load, clock, 5_000, spawn=spawn)
    assert cached.get() == 1
    clock.ms += 4_999
    assert cached.get() == 1
    assert load.calls == 1 and not spawn.spawned


def test_a_stale_answer_is_returned_while_one_refresh_runs_in_the_background() -> None:
    load, clock, spawn = Loader(), ManualClock(1_000), Deferred()
    cached = Refreshed(load, clock, 5_000, spawn=spawn)
    cached.get()
    clock.ms += 5_000
    assert cached.get() == 1
    assert cached.get() == 1
    assert len(spawn.spawned) == 1  # never two refreshes at a time
    spawn.run()
    assert cached.get() == 2


def test_a_failed_refresh_keeps_the_old_answer_and_is_tried_again() -> None:
    load, clock, spawn = Loader(), ManualClock(1_000), Deferred()
    cached = Refreshed(load, clock, 5_000, spawn=spawn)
    cached.get()
    clock.ms += 6_000
    load.fail = True
    cached.get()
    spawn.run()
    assert cached.get() == 1
    load.fail = False
    spawn.run()
    assert cached.get() == 2


def test_the_first_load_failing_raises_to_the_caller() -> None:
    load = Loader()
    load.fail = True
    cached = Refreshed(load, ManualClock(0), 5_000, spawn=Deferred())
    with pytest.raises(RuntimeError, match="store down"):
        cached.get()


def test_the_default_refresh_runs_in_a_thread() -> None:
    load, clock = Loader(), ManualClock(0)
    cached = Refreshed(load, clock, 1)
    cached.get()
    clock.ms += 1
    cached.get()
    for _ in range(1000):
        if load.calls == 2:
            break
        time.sleep(0.005)
    assert load.calls == 2
