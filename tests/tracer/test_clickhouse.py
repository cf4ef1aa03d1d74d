"""The store contract, over real chDB and over its in-memory fake (the ``store`` fixture runs each
contract test on both), then what only the ClickHouse store does: migrations, the otel_traces view,
TTLs, versions, connection errors, and chDB's one-process-per-directory rule.

chDB runs one engine per process on one directory, so the chDB tests share one directory for the
module (kept open by ``chdb_dir``) and each takes a fresh database in it.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import pytest

from tracer.clickhouse import VERSION_SHIFT, Store, migrations
from tracer.engine import OrderSnapshot, Tracer
from tracer.errors import StoreError
from tracer.journeys import parse_journeys
from tracer.memstore import MemStore
from tracer.model import MISSING, OPEN, RESOLVED, Finding, HopEvent

T0 = 1_795_000_000_000
TRACE = "a" * 32
JOURNEYS = parse_journeys(
    """
journeys:
  web_order:
    start: checkout.placed
    steps:
      payment.authorized: {after: checkout.placed, within: 30s}
      inventory.reserved: {after: payment.authorized, within: 2m}
    complete: [inventory.reserved]
"""
)
_databases = itertools.count()


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One chDB directory for the module, its engine kept running by a store held open."""
    path = tmp_path_factory.mktemp("chdb")
    keeper = Store.open(f"chdb://{path}", database="keeper")
    yield path
    keeper.close()


@pytest.fixture
def chdb(chdb_dir: Path) -> Iterator[Store]:
    store = Store.open(f"chdb://{chdb_dir}", database=f"t{next(_databases)}")
    yield store
    store.close()


@pytest.fixture(params=["mem", pytest.param("chdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Store | MemStore:
    if request.param == "mem":
        return MemStore()
    chdb_store: Store = request.getfixturevalue("chdb")
    return chdb_store


def ev(order_id: str, hop: str, ts: int, **fields: Any) -> HopEvent:
    return HopEvent(order_id, hop, ts, fields.pop("event_id", f"{order_id}/{hop}/{ts}"), TRACE, **fields)


def snap(order_id: str, **fields: Any) -> OrderSnapshot:
    base = OrderSnapshot(
        order_id,
        0,
        "web_order",
        TRACE,
        "c1",
        "in_progress",
        ["checkout.placed"],
        [T0],
        [False],
        T0,
        T0,
        "payment.authorized",
        T0 + 30_000,
        True,
        1,
        0,
        0,
        [11, 2**64 - 1],
        [("gift.wrapped", T0 - 5, True)],
    )
    return msgspec.structs.replace(base, **fields)


def finding(order_id: str, **fields: Any) -> Finding:
    base = Finding(order_id, "web_order", MISSING, "payment.authorized", "checkout.placed", T0 + 30_000, T0 + 30_100)
    return msgspec.structs.replace(base, trace_id=TRACE, **fields)


def resolved(f: Finding, at: int) -> Finding:
    return msgspec.structs.replace(f, status=RESOLVED, resolved_at=at, late_by_ms=at - f.due_at)


# -- the contract, on both stores ----------------------------------------------------------------


def test_order_returns_what_was_written(store: Store | MemStore) -> None:
    events = [ev("o1", "checkout.placed", T0, service="web", attrs={"k": "v"}), ev("o1", "gift.wrapped", T0 - 5)]
    f = finding("o1")
    store.write(events, [f], [snap("o1")])
    record = store.order("o1")
    assert record is not None
    assert record.snapshot == snap("o1")
    assert [e.hop for e in record.events] == ["gift.wrapped", "checkout.placed"]
    assert record.events[1] == msgspec.structs.replace(events[0], journey="web_order", customer_id="c1")
    assert record.findings == [f]


def test_order_is_none_when_nothing_is_stored(store: Store | MemStore) -> None:
    assert store.order("nope") is None


def test_order_without_snapshot_still_has_its_events(store: Store | MemStore) -> None:
    store.write([ev("o1", "unknown.hop", T0)], [], [])
    record = store.order("o1")
    assert record is not None and record.snapshot is None
    assert [e.hop for e in record.events] == ["unknown.hop"]


def test_redelivered_event_shows_once(store: Store | MemStore) -> None:
    e = ev("o1", "checkout.placed", T0)
    store.write([e, e], [], [])
    store.write([e], [], [])
    record = store.order("o1")
    assert record is not None and record.events == [e]
    assert store.count_events() == 1


def test_trail_is_in_event_time_whatever_the_arrival_order(store: Store | MemStore) -> None:
    store.write([ev("o1", "b.hop", T0 + 2)], [], [])
    store.write([ev("o1", "a.hop", T0 + 1), ev("o1", "c.hop", T0 + 1)], [], [])
    record = store.order("o1")
    assert record is not None
    assert [(e.ts, e.hop) for e in record.events] == [(T0 + 1, "a.hop"), (T0 + 1, "c.hop"), (T0 + 2, "b.hop")]


def test_resolved_version_of_a_finding_replaces_the_open_one(store: Store | MemStore) -> None:
    f = finding("o1")
    store.write([], [f], [])
    store.write([], [resolved(f, T0 + 40_000)], [])
    assert store.findings(status=OPEN) == []
    assert store.findings(status=RESOLVED) == [resolved(f, T0 + 40_000)]
    record = store.order("o1")
    assert record is not None and record.findings == [resolved(f, T0 + 40_000)]


def test_open_then_resolved_in_one_batch_keeps_the_resolved(store: Store | MemStore) -> None:
    f = finding("o1")
    store.write([], [f, resolved(f, T0 + 40_000)], [])
    assert store.findings(status="all") == [resolved(f, T0 + 40_000)]


def test_findings_filter_by_kind_journey_and_order(store: Store | MemStore) -> None:
    a = finding("o1")
    b = finding("o2", kind="stalled", detected_at=T0 + 30_200)
    c = finding("o3", journey="other", detected_at=T0 + 30_300)
    store.write([], [a, b, c], [])
    assert store.findings() == [c, b, a]  # most recently detected first
    assert store.findings(kind="stalled") == [b]
    assert store.findings(journey="other") == [c]
    assert store.findings(order_id="o1") == [a]
    assert store.findings(limit=1) == [c]


def test_findings_refuses_an_unknown_status(store: Store | MemStore) -> None:
    with pytest.raises(ValueError, match="status: 'closed' is not one of open, resolved, all"):
        store.findings(status="closed")


def test_reads_refuse_a_limit_out_of_range(store: Store | MemStore) -> None:
    with pytest.raises(ValueError, match="limit: 0 must be a whole number from 1 to 1000000"):
        store.orders(customer_id="c1", limit=0)
    with pytest.raises(ValueError, match="limit: -1"):
        store.findings(limit=-1)


def test_orders_by_customer_and_by_trace_id_give_the_latest_state(store: Store | MemStore) -> None:
    other = "b" * 32
    store.write([], [], [snap("o1"), snap("o2", customer_id="c2", trace_id=other, last_ts=T0 + 5)])
    store.write([], [], [snap("o1", status="completed", open=False, last_ts=T0 + 9)])
    assert [s.status for s in store.orders(customer_id="c1")] == ["completed"]
    assert [s.order_id for s in store.orders(trace_id=other)] == ["o2"]
    assert [s.order_id for s in store.orders()] == ["o1", "o2"]  # most recently active first
    assert store.orders(customer_id="c1", trace_id=other) == []


def test_open_orders_of_partitions_with_their_open_findings(store: Store | MemStore) -> None:
    f1, f2 = finding("o1"), finding("o2")
    store.write([], [f1, f2, resolved(finding("o1", hop="x"), T0)], [snap("o1", partition=0), snap("o2", partition=1)])
    store.write([], [], [snap("o3", partition=0), snap("o4", partition=0)])
    store.write([], [], [snap("o4", partition=0, open=False)])
    snaps, findings = store.open_orders([0])
    assert sorted(s.order_id for s in snaps) == ["o1", "o3"]
    assert findings == [f1]
    assert store.open_orders([]) == ([], [])
    assert sorted(s.order_id for s in store.open_orders()[0]) == ["o1", "o2", "o3"]


def test_closed_orders_are_those_whose_latest_state_is_closed(store: Store | MemStore) -> None:
    store.write([], [], [snap("open"), snap("closed"), snap("reopened", open=False)])
    store.write([], [], [snap("closed", status="completed", open=False), snap("reopened")])
    assert store.closed_orders(["open", "closed", "reopened", "unknown", "closed"]) == ["closed"]
    assert store.closed_orders([]) == []


def test_waiting_at_counts_open_orders_awaiting_a_hop(store: Store | MemStore) -> None:
    store.write([], [], [snap("o1", last_ts=T0 + 7), snap("o2", last_ts=T0 + 3), snap("o3", next_hop="other")])
    store.write([], [], [snap("o4", open=False)])
    assert store.waiting_at("web_order", "payment.authorized") == (2, T0 + 3)
    assert store.waiting_at("web_order", "nowhere") == (0, None)
    assert store.waiting() == {("web_order", "payment.authorized"): (2, T0 + 3), ("web_order", "other"): (1, T0)}


def _run(tracer: Tracer, events: list[tuple[HopEvent, int]]) -> None:
    for e, partition in events:
        tracer.on_event(e, partition)


def test_restored_tracer_raises_the_same_pending_deadline(store: Store | MemStore) -> None:
    events = [
        (ev("o1", "checkout.placed", T0), 0),
        (ev("o2", "checkout.placed", T0), 1),
        (ev("o3", "checkout.placed", T0), 0),
        (ev("o3", "payment.authorized", T0 + 1000), 0),
    ]
    before = Tracer(JOURNEYS)
    _run(before, events)
    before.advance(T0 + 5000)
    store.write([e for e, _ in events], before.drain_findings(), before.drain_snapshots())

    after = Tracer(JOURNEYS)
    assert after.restore(*store.open_orders([0])) == 2
    after.advance(T0 + 31_000)
    before.advance(T0 + 31_000)
    expected = [f for f in before.drain_findings() if f.order_id != "o2"]
    assert after.drain_findings() == expected
    assert [f.order_id for f in expected] == ["o1"]


def test_restored_tracer_keeps_open_findings_and_resolves_them_late(store: Store | MemStore) -> None:
    before = Tracer(JOURNEYS)
    before.on_event(ev("o1", "checkout.placed", T0), 0)
    before.advance(T0 + 31_000)
    raised = before.drain_findings()
    store.write([ev("o1", "checkout.placed", T0)], raised, before.drain_snapshots())

    after = Tracer(JOURNEYS)
    after.restore(*store.open_orders([0]))
    after.advance(T0 + 40_000)
    assert after.drain_findings() == []  # already raised before the restart: not again
    after.on_event(ev("o1", "payment.authorized", T0 + 41_000), 0)
    [late] = after.drain_findings()
    assert (late.status, late.late_by_ms) == (RESOLVED, 11_000)
    store.write([], [late], after.drain_snapshots())
    assert store.findings(status=OPEN) == []


# -- only the ClickHouse store -------------------------------------------------------------------


@pytest.mark.integration
def test_open_creates_the_schema_and_records_each_migration(chdb: Store) -> None:
    versions = [v for v, _, _ in migrations()]
    assert chdb.migrations_applied == versions
    tables = {r[0] for r in chdb._rows(f"SELECT name FROM system.tables WHERE database = '{chdb._db}'")}
    assert {
        "hops",
        "orders",
        "findings",
        "trail",
        "otel_traces",
        "otel_traces_trace_id_ts",
        "schema_migrations",
    } <= tables


@pytest.mark.integration
def test_reopen_applies_nothing_and_records_versions_once(chdb: Store, chdb_dir: Path) -> None:
    with Store.open(f"chdb://{chdb_dir}", database=chdb._db) as again:
        assert again.migrations_applied == []
    rows = chdb._rows(f"SELECT version FROM {chdb._db}.schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [v for v, _, _ in migrations()]


@pytest.mark.integration
def test_data_survives_reopening(chdb: Store, chdb_dir: Path) -> None:
    chdb.write([ev("o1", "checkout.placed", T0)], [finding("o1")], [snap("o1")])
    with Store.open(f"chdb://{chdb_dir}", database=chdb._db) as again:
        record = again.order("o1")
    assert record is not None and record.snapshot == snap("o1") and len(record.events) == 1


_EXPORTER_COLUMNS = [
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
]


@pytest.mark.integration
def test_otel_traces_has_the_exporter_columns(chdb: Store) -> None:
    rows = chdb._rows(f"SELECT name, type FROM system.columns WHERE database = '{chdb._db}' AND table = 'otel_traces'")
    types = dict(rows)
    assert [name for name, _ in rows if name in _EXPORTER_COLUMNS] == _EXPORTER_COLUMNS
    assert types["Timestamp"] == "DateTime64(9)"
    assert types["SpanAttributes"] == "Map(LowCardinality(String), String)"
    assert types["Duration"] == "UInt64"


@pytest.mark.integration
def test_hops_become_spans_through_the_view(chdb: Store) -> None:
    chdb.write(
        [
            ev("o1", "checkout.placed", T0 + 1, service="web", span_id="1" * 16, attrs={"cart": "3"}),
            ev("o1", "payment.authorized", T0 + 2, status="error", parent_span_id="1" * 16),
        ],
        [],
        [snap("o1")],
    )
    rows = chdb._rows(
        "SELECT toUnixTimestamp64Milli(Timestamp), TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName, "
        "ResourceAttributes, SpanAttributes, Duration, StatusCode "
        f"FROM {chdb._db}.otel_traces ORDER BY Timestamp"
    )
    first, second = rows
    assert first[:7] == (T0 + 1, TRACE, "1" * 16, "", "checkout.placed", "Internal", "web")
    assert first[7] == {"service.name": "web"}
    assert first[8] == {
        "cart": "3",
        "app.order.id": "o1",
        "app.order.hop": "checkout.placed",
        "app.journey": "web_order",
        "app.customer.id": "c1",
        "app.event.id": f"o1/checkout.placed/{T0 + 1}",
    }
    assert first[9:] == (0, "Ok")
    assert len(second[2]) == 16 and second[3] == "1" * 16  # a span id derived from the event id
    assert (second[6], second[10]) == ("unknown_service", "Error")
    [(trace, start)] = chdb._rows(
        f"SELECT TraceId, toUnixTimestamp(min(Start)) FROM {chdb._db}.otel_traces_trace_id_ts GROUP BY TraceId"
    )
    assert (trace, start) == (TRACE, T0 // 1000)


@pytest.mark.integration
def test_spans_are_views_over_hops_found_by_the_trace_id_index(chdb: Store) -> None:
    engines = dict(chdb._rows(f"SELECT name, engine FROM system.tables WHERE database = '{chdb._db}'"))
    assert engines["otel_traces"] == engines["otel_traces_trace_id_ts"] == "View"
    assert not {t for t, e in engines.items() if e == "MaterializedView"}  # a hop is written once
    chdb.write([ev("o1", "checkout.placed", T0)], [], [])
    chdb.write([ev("o1", "checkout.placed", T0)], [], [])  # re-delivered: one span under final = 1
    plan = "\n".join(
        r[0] for r in chdb._rows(f"EXPLAIN indexes = 1 SELECT * FROM {chdb._db}.otel_traces WHERE TraceId = '{TRACE}'")
    )
    assert "idx_trace_id" in plan
    spans = chdb._rows(f"SELECT SpanName FROM {chdb._db}.otel_traces WHERE TraceId = '{TRACE}' SETTINGS final = 1")
    assert spans == [("checkout.placed",)]


@pytest.mark.integration
def test_migration_3_keeps_the_spans_of_a_version_2_store(chdb_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tracer.clickhouse

    every = migrations()
    # A version 2 schema, plus the owner epochs that this code's writes claim from (migration 4).
    monkeypatch.setattr(tracer.clickhouse, "migrations", lambda: [m for m in every if m[0] <= 2 or m[0] == 4])
    with Store.open(f"chdb://{chdb_dir}", database="upgraded") as old:
        old.write([ev("o1", "checkout.placed", T0)], [], [snap("o1")])
        assert old._rows("SELECT engine FROM system.tables WHERE database = 'upgraded' AND name = 'otel_traces'") == [
            ("ReplacingMergeTree",)
        ]
    monkeypatch.setattr(tracer.clickhouse, "migrations", lambda: every)
    with Store.open(f"chdb://{chdb_dir}", database="upgraded") as new:
        assert new.migrations_applied == [3]
        tables = {r[0] for r in new._rows("SELECT name FROM system.tables WHERE database = 'upgraded'")}
        spans = new._rows("SELECT TraceId, SpanName FROM upgraded.otel_traces")
        [(start,)] = new._rows(
            f"SELECT toUnixTimestamp(Start) FROM upgraded.otel_traces_trace_id_ts WHERE TraceId = '{TRACE}'"
        )
    assert spans == [(TRACE, "checkout.placed")] and start == T0 // 1000
    assert not {"otel_traces_from_hops_mv", "otel_traces_trace_id_ts_mv"} & tables


@pytest.mark.integration
def test_ttl_days_sets_and_removes_the_ttl_of_every_table(chdb: Store, chdb_dir: Path) -> None:
    def ttls() -> dict[str, bool]:
        rows = chdb._rows(f"SELECT name, engine_full FROM system.tables WHERE database = '{chdb._db}'")
        return {name: "toIntervalDay(7)" in engine for name, engine in rows if name in ("hops", "orders", "trail")}

    Store.open(f"chdb://{chdb_dir}", database=chdb._db, ttl_days=7).close()
    assert ttls() == {"hops": True, "orders": True, "trail": True}
    Store.open(f"chdb://{chdb_dir}", database=chdb._db).close()
    assert ttls() == {"hops": False, "orders": False, "trail": False}


@pytest.mark.integration
def test_writer_and_reader_threads_share_one_store(chdb: Store) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        for i in range(20):
            chdb.write([ev(f"w{n}-{i}", "checkout.placed", T0 + i)], [finding(f"w{n}-{i}")], [snap(f"w{n}-{i}")])

    def read() -> None:
        for i in range(20):
            chdb.order(f"w0-{i}")
            chdb.findings()

    def guarded(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in (lambda: write(0), lambda: write(1), read, read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert chdb.count_events() == 40 and len(chdb.findings(limit=100)) == 40


@pytest.mark.integration
def test_versions_increase_when_the_clock_stands_still(chdb_dir: Path) -> None:
    with Store.open(f"chdb://{chdb_dir}", database=f"t{next(_databases)}", now_ns=lambda: 5) as store:
        store.write([], [finding("o1")], [snap("o1")])
        store.write([], [resolved(finding("o1"), T0)], [snap("o1", open=False)])
        assert store.findings(status="all")[0].status == RESOLVED
        assert store.open_orders()[0] == []


@pytest.mark.integration
def test_versions_keep_increasing_after_a_restart_with_the_clock_behind(chdb_dir: Path) -> None:
    db = f"t{next(_databases)}"
    with Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: 10**18) as store:
        store.write([], [finding("o1")], [])
    with Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: 1) as store:
        store.write([], [resolved(finding("o1"), T0)], [])
        assert store.findings(status="all")[0].status == RESOLVED


@pytest.mark.integration
def test_a_tracer_taking_over_replaces_what_its_predecessor_wrote_though_its_clock_is_behind(chdb_dir: Path) -> None:
    # Two tracers on two hosts share the store; the first one's clock runs a minute ahead. The
    # second takes the partition over (a restore), then the order completes and its finding
    # resolves there: the store must show that, not the first tracer's older versions.
    db = f"t{next(_databases)}"
    ahead, behind = 10**18 + 60 * 10**9, 10**18
    with (
        Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: ahead) as first,
        Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: behind) as second,
    ):
        first.write([], [finding("o1")], [snap("o1")])
        restored, open_findings = second.open_orders([0])
        assert [s.order_id for s in restored] == ["o1"] and len(open_findings) == 1
        second.write([], [resolved(finding("o1"), T0)], [snap("o1", open=False)])
        for store in (first, second):
            assert store.open_orders() == ([], [])
            assert store.findings(status="all")[0].status == RESOLVED
            record = store.order("o1")
            assert record is not None and record.snapshot is not None and not record.snapshot.open


@pytest.mark.integration
def test_a_stalled_owners_late_write_loses_to_the_new_owner_though_its_clock_is_later(chdb_dir: Path) -> None:
    # The zombie of docs/kafka.md "Fencing": the first tracer restored (claimed its epoch) and
    # wrote the order, then stalled in a store write past the poll interval; the second took the
    # partition over, and the order's finding resolved and the order completed there. Then the
    # first one's held batch lands, from a clock an hour ahead: the store keeps the new owner's.
    db = f"t{next(_databases)}"
    now = 10**18
    with (
        Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: now + 3600 * 10**9) as zombie,
        Store.open(f"chdb://{chdb_dir}", database=db, now_ns=lambda: now) as owner,
    ):
        zombie.open_orders([0])
        zombie.write([], [finding("o1")], [snap("o1")])
        owner.open_orders([0])
        assert owner.epoch > zombie.epoch
        owner.write([], [resolved(finding("o1"), T0)], [snap("o1", open=False)])
        zombie.write([], [finding("o1")], [snap("o1", next_due=T0 + 99_000)])  # late, and newer by its clock
        for store in (zombie, owner):
            assert store.open_orders() == ([], [])
            assert store.closed_orders(["o1"]) == ["o1"]
            assert [f.status for f in store.findings(status="all")] == [RESOLVED]
            record = store.order("o1")
            assert record is not None and record.snapshot is not None and not record.snapshot.open
            assert [f.status for f in record.findings] == [RESOLVED]


@pytest.mark.integration
def test_every_restore_claims_an_epoch_above_every_claim_and_every_stored_version(chdb_dir: Path) -> None:
    db = f"t{next(_databases)}"
    with (
        Store.open(f"chdb://{chdb_dir}", database=db, owner="a:1") as a,
        Store.open(f"chdb://{chdb_dir}", database=db, owner="b:2") as b,
    ):
        assert (a.epoch, b.epoch) == (0, 0)  # claimed by the first restore (or write), not by opening
        a.open_orders([0, 1])
        b.open_orders([2])  # claims above a's though a has written nothing yet
        a.open_orders([1])
        assert a.epoch > b.epoch > 0
        rows = a._rows(f"SELECT epoch, owner, partitions FROM {db}.owner_epochs ORDER BY epoch")
        assert [(o, p) for _, o, p in rows] == [("a:1", [0, 1]), ("b:2", [2]), ("a:1", [1])]
        assert [e for e, _, _ in rows][-1] == a.epoch


@pytest.mark.integration
def test_new_versions_replace_rows_stored_before_epochs_with_clock_versions(chdb_dir: Path) -> None:
    # Before migration 0004 versions were the writer's clock in ns (about 2^60.6 in 2026). Such
    # rows, of an order open with an open finding, must lose to what a tracer writes now.
    db = f"t{next(_databases)}"
    legacy = 1_795_000_000_000_000_000
    with Store.open(f"chdb://{chdb_dir}", database=db) as store:
        store.write([], [finding("o1")], [snap("o1")])
        for table in ("orders", "findings", "trail"):
            store._command(
                f"INSERT INTO {db}.{table} SELECT * REPLACE (version + {legacy} AS version) FROM {db}.{table} "
                "WHERE version > 0"
            )
        store._command(f"TRUNCATE TABLE {db}.owner_epochs")
    with Store.open(f"chdb://{chdb_dir}", database=db) as store:
        snapshots, findings = store.open_orders([0])
        assert [s.order_id for s in snapshots] == ["o1"] and len(findings) == 1
        assert store.epoch << VERSION_SHIFT > legacy
        store.write([], [resolved(finding("o1"), T0)], [snap("o1", open=False)])
        assert store.open_orders() == ([], [])
        assert [f.status for f in store.findings(status="all")] == [RESOLVED]
        record = store.order("o1")
        assert record is not None and record.snapshot is not None and not record.snapshot.open


@pytest.mark.integration
def test_a_claim_skips_the_next_epoch_when_the_newest_version_is_near_its_epochs_end(chdb_dir: Path) -> None:
    # A writer whose counter ran into the next epoch may have a batch in hand (versions taken,
    # not stored) that did: the next claim must be above that batch too.
    db = f"t{next(_databases)}"
    near_end = (5 << VERSION_SHIFT) + (1 << VERSION_SHIFT) - 10
    with Store.open(f"chdb://{chdb_dir}", database=db) as store:
        store.write([], [finding("o1")], [])
        store._command(f"INSERT INTO {db}.findings SELECT * REPLACE ({near_end} AS version) FROM {db}.findings")
        assert store.claim_epoch() == 7
        store._command(
            f"INSERT INTO {db}.findings SELECT * REPLACE ({9 << VERSION_SHIFT} AS version) FROM {db}.findings"
        )
        assert store.claim_epoch() == 10


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/x", "scheme 'ftp' is not supported; use chdb:///ABSOLUTE/DIR"),
        ("/var/lib/x", "scheme '(none)' is not supported"),
        ("chdb://relative/dir", "needs an absolute directory"),
        ("http://:8123", "names no host"),
        ("http://host:99999", "port is not a number"),
        ("http://host:8123/db?x=1", "a query or fragment is not supported"),
        ("http://host:8123/a-b", "database: 'a-b'"),
    ],
)
def test_unusable_url_is_a_store_error(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Store.open(url)


@pytest.mark.parametrize(
    ("options", "message"), [({"database": "a-b"}, "database: 'a-b'"), ({"ttl_days": 0}, "ttl_days: 0")]
)
def test_unusable_option_is_a_store_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Store.open("chdb:///nonexistent", **options)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.integration
def test_unreachable_server_is_a_store_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(StoreError, match=f"store {url}: cannot reach the ClickHouse server"):
        Store.open(url, connect_timeout_s=2)


class _Refusing(BaseHTTPRequestHandler):
    """Answers every request 401 and remembers who asked."""

    seen: ClassVar[list[str]] = []

    def _refuse(self) -> None:
        self.seen.append(f"{self.headers.get('Authorization')} {self.headers.get('X-ClickHouse-User')}")
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _refuse

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _with_refusing_server(check: Callable[[str], None]) -> list[str]:
    server = HTTPServer(("127.0.0.1", 0), _Refusing)
    _Refusing.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check(f"127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    return _Refusing.seen


@pytest.mark.integration
def test_credentials_come_from_the_environ_mapping() -> None:
    import base64

    def check(hostport: str) -> None:
        environ = {"ORDERTRAIL_CLICKHOUSE_USER": "envuser", "ORDERTRAIL_CLICKHOUSE_PASSWORD": "envpass"}
        with pytest.raises(StoreError, match="cannot reach the ClickHouse server") as caught:
            Store.open(f"http://{hostport}", environ=environ, connect_timeout_s=2)
        assert "envpass" not in str(caught.value)

    seen = _with_refusing_server(check)
    assert seen and all(base64.b64encode(b"envuser:envpass").decode() in s for s in seen)


@pytest.mark.integration
def test_url_credentials_win_and_stay_out_of_errors() -> None:
    def check(hostport: str) -> None:
        environ = {"ORDERTRAIL_CLICKHOUSE_USER": "envuser"}
        with pytest.raises(StoreError) as caught:
            Store.open(f"http://urluser:s3cret@{hostport}", environ=environ, connect_timeout_s=2)
        assert "s3cret" not in str(caught.value) and "urluser:***@" in str(caught.value)

    seen = _with_refusing_server(check)
    assert seen and all("envuser" not in s for s in seen)


@pytest.mark.integration
def test_another_directory_in_the_same_process_is_a_store_error(chdb_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=f"this process already runs chDB on {chdb_dir}"):
        Store.open(f"chdb://{tmp_path}")


_HOLDER = """
import sys, time
from tracer.clickhouse import Store
from tracer.model import HopEvent
store = Store.open("chdb://" + sys.argv[1])
if sys.argv[2] == "write":
    store.write([HopEvent("o1", "checkout.placed", 1795000000000, "e1", "a" * 32)], [], [])
print("ready", store.count_events(), flush=True)
time.sleep(60)
"""

_OPENER = """
import sys
from tracer.clickhouse import Store
from tracer.errors import StoreError
try:
    print("opened", Store.open("chdb://" + sys.argv[1]).count_events())
except StoreError as exc:
    print(exc)
"""


def _python(code: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        **kwargs,
    )


def _hold(directory: Path, what: str) -> subprocess.Popen[str]:
    holder = _python(_HOLDER, str(directory), what)
    assert holder.stdout is not None
    assert holder.stdout.readline().startswith("ready")
    return holder


@pytest.mark.integration
def test_second_process_cannot_open_the_same_directory(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "hold")
    try:
        out, _ = _python(_OPENER, str(tmp_path)).communicate(timeout=60)
    finally:
        holder.kill()
        holder.communicate()
    assert "the directory is in use by another process" in out


@pytest.mark.integration
def test_a_written_batch_survives_kill_9(tmp_path: Path) -> None:
    holder = _hold(tmp_path, "write")
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    out, _ = _python(_OPENER, str(tmp_path)).communicate(timeout=60)
    assert out.strip() == "opened 1"


def test_amounts_come_from_the_amount_attribute_and_skip_what_is_not_a_number(store: Store | MemStore) -> None:
    store.write(
        [
            ev("a1", "checkout.placed", T0, attrs={"amount": "42.50", "currency": "EUR"}),
            ev("a1", "payment.authorized", T0 + 1),
            ev("a2", "checkout.placed", T0, attrs={"amount": "lots"}),
            ev("a3", "checkout.placed", T0),
        ],
        [],
        [],
    )
    assert store.amounts(["a1", "a2", "a3", "nope"]) == {"a1": 42.5}
    assert store.amounts([]) == {}
