"""The store's stitching tables (migration 0002), over real chDB and its in-memory fake: key links
(newest wins, found by value for the lookup) and waiting events (kept until done)."""

from __future__ import annotations

import pytest

from tests.tracer.test_clickhouse import T0, chdb, chdb_dir, ev  # noqa: F401 -- chdb fixtures, used by name
from tracer.clickhouse import Store
from tracer.memstore import MemStore
from tracer.stitch import KeyLink, Waiting

TRACE = "ab" * 16


@pytest.fixture(params=["mem", pytest.param("chdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Store | MemStore:
    if request.param == "mem":
        return MemStore()
    chdb_store: Store = request.getfixturevalue("chdb")
    return chdb_store


def test_key_links_are_found_by_key_and_value_and_the_newest_wins(store: Store | MemStore) -> None:
    store.write_stitch([KeyLink("payment_id", "pay-1", "o-1", TRACE, T0)], [], [])
    store.write_stitch(
        [KeyLink("payment_id", "pay-1", "o-2", TRACE, T0 + 5), KeyLink("shipment_id", "sh-1", "o-1", TRACE, T0)], [], []
    )
    found = store.key_links([("payment_id", "pay-1"), ("shipment_id", "sh-1"), ("payment_id", "nope")])
    assert sorted((k.key, k.value, k.order_id) for k in found) == [
        ("payment_id", "pay-1", "o-2"),
        ("shipment_id", "sh-1", "o-1"),
    ]
    link = store.order_for_key("sh-1")
    assert link is not None and (link.order_id, link.key, link.trace_id, link.ts) == ("o-1", "shipment_id", TRACE, T0)
    assert store.order_for_key("unknown") is None


def test_waiting_events_are_kept_until_done(store: Store | MemStore) -> None:
    a = Waiting("payment_id", "pay-1", ev("pay-1", "payment.authorized", T0), 3, 17, T0)
    b = Waiting("payment_id", "pay-2", ev("pay-2", "payment.authorized", T0), 1, 18, T0 + 1)
    store.write_stitch([], [a, b], [])
    assert sorted(w.value for w in store.waiting_events()) == ["pay-1", "pay-2"]
    store.write_stitch([], [], [a])
    assert store.waiting_events() == [b]
