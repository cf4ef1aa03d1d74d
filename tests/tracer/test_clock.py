from tracer.clock import ManualClock, PartitionClock

T0 = 1_795_000_000_000


def make(warmup_ms: int = 0) -> tuple[ManualClock, PartitionClock]:
    wall = ManualClock(T0)
    return wall, PartitionClock(wall, in_flight_ms=250, warmup_ms=warmup_ms)


def test_time_is_the_minimum_of_partition_event_times_while_behind() -> None:
    _, clock = make()
    clock.assign([0, 1])
    clock.observe(0, T0 - 10_000)
    clock.observe(1, T0 - 60_000)
    assert clock.now() == T0 - 60_000


def test_a_partition_behind_with_no_event_yet_holds_the_clock() -> None:
    _, clock = make()
    clock.assign([0, 1])
    clock.observe(0, T0 - 10_000)
    assert clock.now() is None


def test_wall_time_advances_a_caught_up_partition_with_no_traffic() -> None:
    wall, clock = make()
    clock.assign([0])
    clock.set_caught_up(0, True)
    wall.advance(60_000)
    assert clock.now() == T0 + 60_000 - 250


def test_wall_time_does_not_advance_a_partition_that_is_behind() -> None:
    wall, clock = make()
    clock.assign([0, 1])
    clock.observe(0, T0 - 5_000)
    clock.observe(1, T0 - 5_000)
    clock.set_caught_up(0, True)
    wall.advance(600_000)
    assert clock.now() == T0 - 5_000
    assert clock.lag_ms() == 600_000 + 5_000 - 250


def test_no_wall_time_during_warmup() -> None:
    wall, clock = make(warmup_ms=30_000)
    clock.assign([0])
    clock.observe(0, T0 - 1_000)
    clock.set_caught_up(0, True)
    wall.advance(10_000)
    assert clock.now() == T0 - 1_000
    wall.advance(30_000)
    assert clock.now() == T0 + 40_000 - 250


def test_time_never_goes_backwards_when_a_partition_is_assigned() -> None:
    _, clock = make()
    clock.assign([0])
    clock.set_caught_up(0, True)
    first = clock.now()
    clock.assign([1])
    clock.observe(1, T0 - 3_600_000)
    assert clock.now() == first


def test_revoked_partitions_no_longer_hold_the_clock() -> None:
    _, clock = make()
    clock.assign([0, 1])
    clock.observe(0, T0)
    assert clock.now() is None
    clock.revoke([1])
    assert clock.now() == T0
