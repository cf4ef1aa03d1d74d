"""What only the in-memory fake does: injected write failures and a write count. That it answers
like the ClickHouse store is tested by the shared contract tests in ``test_clickhouse.py``, which run
every store call on both."""

from __future__ import annotations

import pytest

from tracer.errors import StoreError
from tracer.memstore import MemStore
from tracer.model import HopEvent

EVENT = HopEvent("o1", "checkout.placed", 1_795_000_000_000, "e1", "a" * 32)


def test_fail_writes_fails_that_many_writes_then_stores_again() -> None:
    store = MemStore()
    store.fail_writes = 1
    with pytest.raises(StoreError, match="injected failure"):
        store.write([EVENT], [], [])
    assert store.order("o1") is None
    store.write([EVENT], [], [])
    assert store.count_events() == 1
    assert (store.fail_writes, store.writes) == (0, 1)


def test_close_keeps_the_data_readable() -> None:
    with MemStore() as store:
        store.write([EVENT], [], [])
    assert store.count_events() == 1


def test_has_no_migrations() -> None:
    assert MemStore().migrations_applied == []
