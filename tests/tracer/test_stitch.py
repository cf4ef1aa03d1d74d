"""Stitching re-keyed orders: the journeys file's keys (validated), the stitcher on its own, and
the processor over the in-memory bus and store — a step reported under a payment id joins its
order and trace, whether its link came first or later, across a restart, and an event whose link
never comes is reported as unlinked."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from tracer.bus import DEADLETTER_TOPIC, ERROR_HEADER, HOPS_TOPIC, KeyPartitioner, Message, Record
from tracer.clock import ManualClock, PartitionClock
from tracer.engine import Tracer
from tracer.errors import JourneysError
from tracer.events import validate
from tracer.fakebus import MemoryBus
from tracer.journeys import parse_journeys
from tracer.memstore import MemStore
from tracer.model import HopEvent, derive_trace_id, event_to_wire
from tracer.processor import Processor
from tracer.stitch import Stitcher

JOURNEYS = """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.requested:  {after: checkout.placed,    within: 30s}
      payment.authorized: {after: payment.requested, within: 30s}
      fulfilment.shipped: {after: payment.authorized, within: 1h}
    keys:
      payment_id: {steps: [payment.authorized], linked_by: [payment.requested], within: 2m}
"""
T0 = 1_795_000_000_000


def ev(order: str, hop: str, ts: int, **attrs: str) -> HopEvent:
    return validate({"order_id": order, "hop": hop, "ts": ts, **({"attrs": attrs} if attrs else {})})


# -- the journeys file -----------------------------------------------------------------------------


def test_keys_are_parsed_with_defaults() -> None:
    j = parse_journeys(JOURNEYS).journeys["web_order"]
    (key,) = j.keys
    assert (key.name, key.attr, key.steps, key.linked_by, key.within_ms) == (
        "payment_id",
        "payment_id",
        ("payment.authorized",),
        ("payment.requested",),
        120_000,
    )


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (
            "{steps: [payment.captured]}",
            "key 'payment_id', field 'steps': 'payment.captured' is not the start or a step",
        ),
        ("{steps: [checkout.placed]}", "key 'payment_id', field 'steps': 'checkout.placed' is the start"),
        ("{linked_by: [payment.requested]}", "key 'payment_id', field 'steps': None must be a non-empty list"),
        (
            "{steps: [payment.authorized], linked_by: [payment.authorized]}",
            "key 'payment_id', field 'linked_by': 'payment.authorized' is also in 'steps'",
        ),
        ("{steps: [payment.authorized], within: soon}", "key 'payment_id', field 'within': 'soon' is not a duration"),
        (
            "{steps: [payment.authorized], colour: red}",
            "key 'payment_id': field 'colour' is not known; allowed: steps, linked_by",
        ),
        ("[payment.authorized]", "key 'payment_id': must be a mapping"),
    ],
)
def test_invalid_keys_name_the_file_journey_key_and_field(keys: str, problem: str) -> None:
    text = JOURNEYS.split("    keys:")[0] + f"    keys:\n      payment_id: {keys}\n"
    with pytest.raises(JourneysError) as err:
        parse_journeys(text, "shop.yaml")
    assert f"shop.yaml: journey 'web_order', {problem}" in str(err.value), str(err.value)


def test_a_hop_keyed_differently_in_two_journeys_is_refused() -> None:
    text = (
        JOURNEYS
        + """
  phone_order:
    start: call.taken
    steps:
      payment.authorized: {after: call.taken, within: 5m}
    keys:
      card_ref: {steps: [payment.authorized]}
"""
    )
    with pytest.raises(JourneysError, match=r"'payment\.authorized' is keyed by 'payment_id' in journey 'web_order'"):
        parse_journeys(text)


# -- the stitcher ----------------------------------------------------------------------------------


def test_a_keyed_event_after_its_link_is_rekeyed_to_the_order_and_its_trace() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    link = ev("o-1", "payment.requested", T0, payment_id="pay-9")
    assert s.stitch(link) is link
    out = s.stitch(ev("pay-9", "payment.authorized", T0 + 100))
    assert out is not None
    assert (out.order_id, out.trace_id, out.attrs) == ("o-1", derive_trace_id("o-1"), {"payment_id": "pay-9"})
    other = ev("o-2", "checkout.placed", T0)
    assert s.stitch(other) is other  # the fast path


def test_a_keyed_event_before_its_link_waits_and_is_released_by_it() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    assert s.stitch(ev("pay-9", "payment.authorized", T0 + 100)) is None
    assert len(s) == 1 and s.expire(T0) == []
    s.stitch(ev("o-1", "payment.requested", T0, payment_id="pay-9"))
    (released,) = s.drain_released()
    assert released.order_id == "o-1" and len(s) == 0
    links, waiting, done = s.drain_changes()
    assert [(k.value, k.order_id) for k in links] == [("pay-9", "o-1")]
    assert waiting == [] and len(done) == 1


def test_an_event_whose_link_never_comes_is_reported_after_within() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    s.stitch(ev("pay-9", "payment.authorized", T0))
    assert s.expire(T0) == []  # stamps the wait
    assert s.expire(T0 + 120_000) == []
    ((w, reason),) = s.expire(T0 + 120_001)
    assert w.value == "pay-9" and reason.startswith(
        "unlinked: no event linked payment_id 'pay-9' to an order within 2m"
    )


def test_waiting_events_are_bounded() -> None:
    s = Stitcher(parse_journeys(JOURNEYS), max_waiting=2)
    for i in range(3):
        s.stitch(ev(f"pay-{i}", "payment.authorized", T0))
    ((w, reason),) = s.expire(T0)
    assert w.value == "pay-0" and "more than 2 events wait" in reason and len(s) == 2


def test_a_link_in_the_store_is_found_on_a_miss() -> None:
    store = MemStore()
    first = Stitcher(parse_journeys(JOURNEYS))
    first.stitch(ev("o-1", "payment.requested", T0, payment_id="pay-9"))
    store.write_stitch(*first.drain_changes())
    later = Stitcher(parse_journeys(JOURNEYS), lookup=store.key_links)  # a restarted process
    out = later.stitch(ev("pay-9", "payment.authorized", T0 + 1))
    assert out is not None and out.order_id == "o-1"


def test_a_redelivered_waiting_event_waits_once() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    keyed = ev("pay-9", "payment.authorized", T0)
    assert s.stitch(keyed) is None and s.stitch(keyed) is None
    assert len(s) == 1
    s.stitch(ev("o-1", "payment.requested", T0, payment_id="pay-9"))
    assert [e.order_id for e in s.drain_released()] == ["o-1"]


def test_events_still_waiting_at_the_end_of_a_cycle_go_to_the_store_stamped() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    s.stitch(ev("pay-1", "payment.authorized", T0))
    s.stitch(ev("pay-2", "payment.authorized", T0))
    s.expire(T0 + 5)  # stamps both
    s.stitch(ev("o-1", "payment.requested", T0, payment_id="pay-1"))
    links, waiting, done = s.drain_changes()
    assert [(k.value, k.order_id) for k in links] == [("pay-1", "o-1")]
    assert [(w.value, w.since) for w in waiting] == [("pay-2", T0 + 5)]
    assert [w.value for w in done] == ["pay-1"]
    assert s.drain_changes() == ([], [], [])


def test_the_latest_link_wins_and_the_link_cache_forgets_the_oldest_first() -> None:
    s = Stitcher(parse_journeys(JOURNEYS), cache_size=2)
    for order, pay in (("o-1", "pay-1"), ("o-2", "pay-2"), ("o-9", "pay-1"), ("o-3", "pay-3")):
        s.stitch(ev(order, "payment.requested", T0, payment_id=pay))
    assert (s.stats.linked, s.stats.relinked) == (4, 1)
    # pay-1 was linked again after pay-2, so pay-2 is the oldest and went when pay-3 came
    moved = [s.stitch(ev(pay, "payment.authorized", T0 + 1)) for pay in ("pay-1", "pay-2", "pay-3")]
    assert [m.order_id if m is not None else None for m in moved] == ["o-9", None, "o-3"]


def test_two_keys_with_the_same_value_stay_apart() -> None:
    journeys = parse_journeys(
        JOURNEYS.replace(
            "    keys:\n", "      fulfilment.packed:  {after: payment.authorized, within: 1h}\n    keys:\n"
        )
        + "      parcel_id: {steps: [fulfilment.packed], linked_by: [fulfilment.shipped]}\n"
    )
    s = Stitcher(journeys)
    s.stitch(ev("o-1", "payment.requested", T0, payment_id="X-1"))
    s.stitch(ev("o-2", "fulfilment.shipped", T0, parcel_id="X-1"))
    paid, packed = s.stitch(ev("X-1", "payment.authorized", T0 + 1)), s.stitch(ev("X-1", "fulfilment.packed", T0 + 1))
    assert paid is not None and packed is not None
    assert (paid.order_id, paid.attrs, packed.order_id, packed.attrs) == (
        "o-1",
        {"payment_id": "X-1"},
        "o-2",
        {"parcel_id": "X-1"},
    )
    # a value holding a NUL is linked under its own key only, whatever its characters spell
    s.stitch(ev("o-3", "payment.requested", T0, payment_id="parcel_id\x00X-2"))
    assert s.stitch(ev("X-2", "fulfilment.packed", T0 + 1)) is None and len(s) == 1


# -- over the processor ----------------------------------------------------------------------------


class Rig:
    """A processor over the in-memory bus and store, as ``ordertrail run`` wires it."""

    def __init__(self, bus: MemoryBus, store: MemStore, wall: ManualClock) -> None:
        journeys = parse_journeys(JOURNEYS)
        self.bus, self.store = bus, store
        self.consumer = bus.consumer(HOPS_TOPIC, "tracer")
        self.consumer.poll(1, 0)  # take the assignment
        self.dead: list[str] = []
        self.proc = Processor(
            self.consumer,
            store,
            Tracer(journeys),
            PartitionClock(wall, in_flight_ms=0, warmup_ms=0),
            range(4),
            dead_letter=self,
            stitcher=Stitcher(journeys, lookup=store.key_links),
            stitch_store=store,
            partitioner=KeyPartitioner(4),
        )
        self.proc.restore()

    def write(self, rejected: object) -> None:  # the dead-letter sink
        for rec, why in rejected:  # type: ignore[attr-defined]
            self.bus.produce_batch(DEADLETTER_TOPIC, [Message(rec.key, rec.value, [(ERROR_HEADER, why.encode())])])
            self.dead.append(why)

    def send(self, *events: HopEvent) -> None:
        self.bus.produce_batch(HOPS_TOPIC, [Message(e.order_id, msgspec.json.encode(event_to_wire(e))) for e in events])
        while self.proc.step():
            pass


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(T0)


def test_out_of_order_link_joins_one_order_and_one_trace_over_the_processor(wall: ManualClock) -> None:
    bus, store = MemoryBus({HOPS_TOPIC: 4, DEADLETTER_TOPIC: 1}), MemStore()
    rig = Rig(bus, store, wall)
    rig.send(ev("o-1", "checkout.placed", T0), ev("pay-9", "payment.authorized", T0 + 200))  # before its link
    assert store.order("pay-9") is None and len(store.waiting_events()) == 1

    rig.send(ev("o-1", "payment.requested", T0 + 100, payment_id="pay-9"))
    record = store.order("o-1")
    assert record is not None and record.snapshot is not None
    assert [e.hop for e in record.events] == ["checkout.placed", "payment.requested", "payment.authorized"]
    assert {e.trace_id for e in record.events} == {derive_trace_id("o-1")}
    assert record.snapshot.next_hop == "fulfilment.shipped"
    assert store.order("pay-9") is None and store.waiting_events() == []
    link = store.order_for_key("pay-9")
    assert link is not None and link.order_id == "o-1"


def test_a_waiting_event_survives_a_restart(wall: ManualClock) -> None:
    bus, store = MemoryBus({HOPS_TOPIC: 4, DEADLETTER_TOPIC: 1}), MemStore()
    first = Rig(bus, store, wall)
    first.send(ev("o-1", "checkout.placed", T0), ev("pay-9", "payment.authorized", T0 + 200))
    first.consumer.close()

    second = Rig(bus, store, wall)  # committed past the waiting event: it comes from the store
    second.send(ev("o-1", "payment.requested", T0 + 100, payment_id="pay-9"))
    record = store.order("o-1")
    assert record is not None and "payment.authorized" in [e.hop for e in record.events]


def test_an_unlinked_event_goes_to_the_dead_letters_and_its_order_is_found_missing(wall: ManualClock) -> None:
    bus, store = MemoryBus({HOPS_TOPIC: 4, DEADLETTER_TOPIC: 1}), MemStore()
    rig = Rig(bus, store, wall)
    rig.send(ev("pay-404", "payment.authorized", T0))
    wall.advance(121_000)
    rig.proc.step()
    assert len(rig.dead) == 1 and rig.dead[0].startswith("unlinked: no event linked payment_id 'pay-404'")
    assert store.waiting_events() == [] and store.order("pay-404") is None
    (letter,) = bus.records(DEADLETTER_TOPIC)
    assert msgspec.json.decode(letter.value)["order_id"] == "pay-404"


class OwnedSource:
    """One tracer's share of the hops topic: the partitions it owns (as a Kafka group assigns)."""

    def __init__(self, bus: MemoryBus, owned: list[int]) -> None:
        self.bus, self.owned = bus, owned
        self.next = dict.fromkeys(owned, 0)

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        out: list[Record] = []
        for p in self.owned:
            taken = self.bus.records(HOPS_TOPIC, p)[self.next[p] :]
            self.next[p] += len(taken)
            out += taken
        return out

    def commit(self, positions: dict[int, int]) -> None:
        pass

    def lag(self) -> dict[int, int]:
        return {p: len(self.bus.records(HOPS_TOPIC, p)) - self.next[p] for p in self.owned}


def test_with_two_tracers_a_rekeyed_event_is_forwarded_to_the_owner_of_its_order(wall: ManualClock) -> None:
    journeys = parse_journeys(JOURNEYS)
    bus, store = MemoryBus({HOPS_TOPIC: 4}), MemStore()
    part = KeyPartitioner(4)
    order = "o-1"
    alias = next(f"pay-{i}" for i in range(100) if (part(f"pay-{i}") < 2) != (part(order) < 2))

    def forward(events: Sequence[HopEvent]) -> None:
        bus.produce_batch(HOPS_TOPIC, [Message(e.order_id, msgspec.json.encode(event_to_wire(e))) for e in events])

    tracers = [
        Processor(
            OwnedSource(bus, owned),
            store,
            Tracer(journeys),
            PartitionClock(wall, in_flight_ms=0, warmup_ms=0),
            owned,
            stitcher=Stitcher(journeys, lookup=store.key_links),
            stitch_store=store,
            partitioner=part,
            forward=forward,
        )
        for owned in ([0, 1], [2, 3])
    ]
    bus.produce_batch(
        HOPS_TOPIC,
        [
            Message(order, msgspec.json.encode(event_to_wire(ev(order, "checkout.placed", T0)))),
            Message(
                order, msgspec.json.encode(event_to_wire(ev(order, "payment.requested", T0 + 1, payment_id=alias)))
            ),
            Message(alias, msgspec.json.encode(event_to_wire(ev(alias, "payment.authorized", T0 + 2)))),
        ],
    )
    for _ in range(3):  # the alias's tracer finds the link in the store (rechecked each second), forwards
        for t in tracers:
            t.step()
        wall.advance(1_000)
    owner = tracers[0] if part(order) < 2 else tracers[1]
    state = owner.tracer.order(order)
    assert state is not None
    record = store.order(order)
    assert record is not None and [e.hop for e in record.events] == [
        "checkout.placed",
        "payment.requested",
        "payment.authorized",
    ]
    assert record.snapshot is not None and record.snapshot.next_hop == "fulfilment.shipped"
    assert all(t.tracer.order(alias) is None for t in tracers)


def test_waiting_events_of_revoked_partitions_are_dropped() -> None:
    s = Stitcher(parse_journeys(JOURNEYS))
    s.stitch(ev("pay-1", "payment.authorized", T0), partition=1)
    s.stitch(ev("pay-2", "payment.authorized", T0), partition=2)
    assert s.drop_partitions([1]) == 1 and len(s) == 1
    s.stitch(ev("o-2", "payment.requested", T0, payment_id="pay-2"))
    assert [e.order_id for e in s.drain_released()] == ["o-2"]


def test_a_processor_forwards_by_the_partitions_it_owns_now(wall: ManualClock) -> None:
    journeys = parse_journeys(JOURNEYS)
    bus, store = MemoryBus({HOPS_TOPIC: 4}), MemStore()
    forwarded: list[HopEvent] = []
    part = KeyPartitioner(4)
    proc = Processor(
        OwnedSource(bus, [0, 1, 2, 3]),
        store,
        Tracer(journeys),
        PartitionClock(wall, in_flight_ms=0, warmup_ms=0),
        [0, 1, 2, 3],
        stitcher=Stitcher(journeys),
        stitch_store=store,
        partitioner=part,
        forward=forwarded.extend,
    )
    proc.partitions = [p for p in range(4) if p != part("o-1")]  # a rebalance took the order's partition
    link = ev("o-1", "payment.requested", T0, payment_id="pay-1")
    keyed = ev("pay-1", "payment.authorized", T0 + 1)
    bus.produce_batch(HOPS_TOPIC, [Message(e.order_id, msgspec.json.encode(event_to_wire(e))) for e in (link, keyed)])
    proc.step()
    assert [(e.order_id, e.hop) for e in forwarded] == [("o-1", "payment.authorized")]
