"""Scheduled expectations judged against the store: volume, per-key recurrence, late arrivals,
and a job that runs again. Over the in-memory store and real chDB, with the same answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from detectors.schedules import ScheduleWatch
from tracer.clickhouse import Store
from tracer.memstore import MemStore
from tracer.model import HopEvent
from tracer.schedules import Cron, Schedule

HOUR = 3_600_000
DAY = 24 * HOUR


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text + "+00:00").timestamp() * 1000)


NIGHTLY = Schedule("nightly_settlement", "settlement.done", Cron.parse("0 2 * * *"), grace_ms=HOUR, at_least=2)
MONTHLY = Schedule(
    "statement", "statement.sent", Cron.parse("0 6 1 * *"), grace_ms=2 * HOUR, every_key="customer_id", at_least=0
)
BY_ATTR = Schedule("payout", "payout.sent", Cron.parse("0 0 * * *"), every_key="account", at_least=0)


@pytest.fixture(params=["mem", pytest.param("chdb", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store | MemStore]:
    if request.param == "mem":
        yield MemStore()
        return
    s = Store.open(f"chdb://{tmp_path / 'db'}", database="sched")
    yield s
    s.close()


def put(store: Store | MemStore, *events: tuple[str, str, int, dict[str, object]]) -> None:
    store.write(
        [HopEvent(oid, hop, ts, f"{oid}/{hop}/{ts}", "b" * 32, **fields) for oid, hop, ts, fields in events], [], []
    )


def batch(n: int, at: int) -> list[tuple[str, str, int, dict[str, object]]]:
    return [(f"batch-{at}-{i}", "settlement.done", at + i, {}) for i in range(n)]


def test_a_nightly_batch_that_ran_is_ok_and_one_that_did_not_is_missed(store: Store | MemStore) -> None:
    put(store, *batch(2, ms("2026-11-21T02:10:00")))
    watch = ScheduleWatch([NIGHTLY], store)
    (first,) = watch.check(ms("2026-11-21T03:00:00"))  # the window (20th 03:00, 21st 03:00] closed
    assert (first.outcome, first.seen) == ("ok", 2)
    assert watch.check(ms("2026-11-22T02:59:59")) == []  # the next closes at 03:00
    (missed,) = watch.check(ms("2026-11-22T03:00:00"))
    assert (missed.outcome, missed.seen, missed.at_least) == ("missed", 0, 2)
    assert missed.explanation().startswith(
        "nightly_settlement: settlement.done was due 2026-11-22T02:00:00.000Z (grace 1h): 0 of at least 2"
    )
    assert [r.due_at for r in watch.open_misses()] == [ms("2026-11-22T02:00:00")]


def test_the_batch_arriving_late_resolves_the_miss(store: Store | MemStore) -> None:
    watch = ScheduleWatch([NIGHTLY], store)
    (missed,) = watch.check(ms("2026-11-22T03:00:00"))
    assert missed.outcome == "missed"
    put(store, *batch(1, ms("2026-11-22T02:30:00")))
    assert watch.check(ms("2026-11-22T03:10:00")) == []  # still one short
    put(store, *batch(1, ms("2026-11-22T02:40:00")))  # arrived late in our store, but in its window
    (resolved,) = watch.check(ms("2026-11-22T03:20:00"))
    assert (resolved.outcome, resolved.seen) == ("resolved", 2)
    assert watch.open_misses() == []


def test_a_batch_that_runs_again_supersedes_the_old_miss(store: Store | MemStore) -> None:
    watch = ScheduleWatch([NIGHTLY], store)
    watch.check(ms("2026-11-22T03:00:00"))
    put(store, *batch(3, ms("2026-11-23T02:05:00")))
    results = watch.check(ms("2026-11-23T03:00:00"))
    assert sorted(r.outcome for r in results) == ["ok", "superseded"]
    assert watch.open_misses() == []
    status = watch.status(ms("2026-11-23T03:00:00"))[0]
    assert status["status"] == "ok" and status["next_due_at"] == "2026-11-24T02:00:00.000Z"
    assert [r["outcome"] for r in status["recent"]] == ["superseded", "ok", "missed"]


def test_windows_missed_while_down_are_judged_in_order_after(store: Store | MemStore) -> None:
    put(store, *batch(2, ms("2026-11-20T02:00:00")), *batch(2, ms("2026-11-22T02:00:00")))
    watch = ScheduleWatch([NIGHTLY], store)
    assert [r.outcome for r in watch.check(ms("2026-11-20T03:00:00"))] == ["ok"]
    results = watch.check(ms("2026-11-23T03:00:00"))
    assert [(r.due_at, r.outcome) for r in results] == [
        (ms("2026-11-21T02:00:00"), "missed"),
        (ms("2026-11-22T02:00:00"), "ok"),
        (ms("2026-11-21T02:00:00"), "superseded"),
        (ms("2026-11-23T02:00:00"), "missed"),
    ]


def test_every_customer_with_a_statement_last_month_gets_one_this_month(store: Store | MemStore) -> None:
    oct_, nov = ms("2026-10-01T06:30:00"), ms("2026-11-01T06:30:00")
    put(store, *[(f"s-oct-{c}", "statement.sent", oct_, {"customer_id": c}) for c in ("c1", "c2", "c3", "c4")])
    put(store, *[(f"s-nov-{c}", "statement.sent", nov, {"customer_id": c}) for c in ("c1", "c3")])
    watch = ScheduleWatch([MONTHLY], store)
    (r,) = watch.check(ms("2026-11-01T08:00:00"))
    assert (r.outcome, r.expected_keys, r.missing_keys, r.examples) == ("missed", 4, 2, ("c2", "c4"))
    assert "2 of 4 customer_id values seen in the period before have no statement.sent yet (e.g. c2, c4)" in (
        r.explanation()
    )
    put(store, ("s-nov-c2", "statement.sent", nov + 60_000, {"customer_id": "c2"}))
    assert watch.check(ms("2026-11-01T08:05:00")) == []
    put(store, ("s-nov-c4", "statement.sent", nov + 120_000, {"customer_id": "c4"}))
    (done,) = watch.check(ms("2026-11-01T08:10:00"))
    assert (done.outcome, done.missing_keys) == ("resolved", 0)


def test_a_key_may_be_an_attribute(store: Store | MemStore) -> None:
    d1, d2 = ms("2026-11-20T12:00:00"), ms("2026-11-21T12:00:00")
    put(store, ("p1", "payout.sent", d1, {"attrs": {"account": "acc-1"}}))
    put(store, ("p2", "payout.sent", d1, {"attrs": {"account": "acc-2"}}))
    put(store, ("p3", "payout.sent", d2, {"attrs": {"account": "acc-2"}}))
    (r,) = ScheduleWatch([BY_ATTR], store).check(ms("2026-11-22T00:00:00"))
    assert (r.outcome, r.expected_keys, r.examples) == ("missed", 2, ("acc-1",))


def test_nothing_expected_when_no_key_had_the_hop_before(store: Store | MemStore) -> None:
    (r,) = ScheduleWatch([MONTHLY], store).check(ms("2026-11-01T08:00:00"))
    assert (r.outcome, r.expected_keys) == ("ok", 0)


def test_results_have_a_wire_form() -> None:
    (r,) = ScheduleWatch([NIGHTLY], MemStore()).check(ms("2026-11-22T03:00:00"))
    wire = r.to_wire()
    assert wire["window"] == {"start": "2026-11-21T03:00:00.000Z", "end": "2026-11-22T03:00:00.000Z"}
    assert wire["outcome"] == "missed" and wire["explanation"] == r.explanation()
