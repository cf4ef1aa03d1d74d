"""The tap core and the log tap's cycle, with a fake delivery: bad records go to the dead letters
with their reason and cost no other record; positions move only after delivery."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from collectors.sdk import RetryPolicy, SendResult
from collectors.taps import (
    DeadLetterFile,
    HttpDelivery,
    PositionFile,
    RetryLater,
    SourceRecord,
    Tap,
    open_log_tap,
    parse_mapping,
)
from tracer.events import validate
from tracer.model import HopEvent

MAPPING = parse_mapping("order_id: id\nhop: {field: what}\nts: {field: at}\n")
FAST = RetryPolicy(base=0.001, max_delay=0.001)


class FakeDelivery:
    """Accepts everything except hops named ``refused.*``; the first ``outages`` calls fail."""

    def __init__(self, outages: int = 0, stop_after_outages: threading.Event | None = None) -> None:
        self.outages = outages
        self.delivered: list[HopEvent] = []
        self.calls = 0
        self._stop = stop_after_outages

    def deliver(self, events: Sequence[HopEvent]) -> list[tuple[int, str]]:
        self.calls += 1
        if self.outages > 0:
            self.outages -= 1
            if self.outages == 0 and self._stop is not None:
                self._stop.set()
            raise RetryLater("connection refused")
        rejected = [(i, "hop: not allowed here") for i, ev in enumerate(events) if ev.hop.startswith("refused")]
        bad = {i for i, _ in rejected}
        self.delivered.extend(ev for i, ev in enumerate(events) if i not in bad)
        return rejected


def rec(i: int, text: str) -> SourceRecord:
    return SourceRecord(f"test:{i}", text.encode())


def test_bad_records_go_to_the_dead_letters_with_their_reason_and_cost_no_other(tmp_path: Path) -> None:
    dead = DeadLetterFile(tmp_path / "dead.ndjson")
    delivery = FakeDelivery()
    tap = Tap(MAPPING, delivery, dead, retry=FAST)
    ok = tap.handle(
        [
            rec(0, '{"id": "o-1", "what": "checkout.placed", "at": "2026-11-22T10:00:00.000Z"}'),
            rec(1, "not json at all"),
            rec(2, '{"id": "o-2", "what": "checkout.placed"}'),
            rec(3, '{"id": "o-3", "what": "refused.hop", "at": "2026-11-22T10:00:00.000Z"}'),
            rec(4, "   "),
            SourceRecord("test:5", b"xxxx", problem="the line is longer than 4 bytes (cut here)"),
            rec(6, '{"id": "o-6", "what": "payment.authorized", "at": 1795341723123}'),
        ]
    )
    assert ok
    assert [ev.order_id for ev in delivery.delivered] == ["o-1", "o-6"]
    letters = {d.source: d for d in dead.read()}
    assert set(letters) == {"test:1", "test:2", "test:3", "test:5"}
    assert letters["test:1"].reason.startswith("not JSON") and letters["test:1"].record == "not json at all"
    assert letters["test:2"].reason == "ts (from at): is missing from the record"
    assert letters["test:3"].reason == "ordertrail refused the event: hop: not allowed here"
    assert "longer than 4 bytes" in letters["test:5"].reason
    assert (tap.stats.events, tap.stats.dead_letters, tap.stats.skipped) == (2, 4, 1)


def test_a_batch_too_large_for_the_server_is_sent_in_halves(tmp_path: Path) -> None:
    bodies: list[int] = []

    class Transport:
        def send(self, body: bytes) -> SendResult:
            lines = body.count(b"\n") + 1
            bodies.append(lines)
            if lines > 2:
                return SendResult("fail", detail="HTTP 413: the body is too large")
            return SendResult("ok", accepted=lines, rejected=((0, "nope"),) if b"refused" in body else ())

    delivery = HttpDelivery("http://127.0.0.1:1")
    delivery._transport = Transport()  # type: ignore[assignment]
    events = [
        validate({"order_id": f"o-{i}", "hop": "refused.x" if i == 4 else "a.b", "ts": 1795341723123}) for i in range(6)
    ]
    assert delivery.deliver(events) == [(4, "nope")]
    assert bodies == [6, 3, 1, 2, 3, 1, 2]


def test_delivery_is_retried_until_accepted(tmp_path: Path) -> None:
    delivery = FakeDelivery(outages=3)
    tap = Tap(MAPPING, delivery, DeadLetterFile(tmp_path / "d"), retry=FAST)
    assert tap.handle([rec(0, '{"id": "o-1", "what": "checkout.placed", "at": 1795341723123}')])
    assert delivery.calls == 4 and len(delivery.delivered) == 1 and tap.stats.retries == 3


def test_positions_are_saved_only_after_delivery(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text('{"id": "o-1", "what": "checkout.placed", "at": 1795341723123}\n')
    positions = PositionFile(tmp_path / "positions.json")
    stop = threading.Event()
    delivery = FakeDelivery(outages=2, stop_after_outages=stop)  # ordertrail down, then the tap is stopped
    tap = Tap(MAPPING, delivery, DeadLetterFile(tmp_path / "d"), stop=stop, retry=FAST)
    log_tap = open_log_tap(tap, [str(log)], positions)
    assert log_tap.step() == -1
    log_tap.follower.close()
    assert positions.load() == []  # nothing recorded: the line is read again next time

    delivery = FakeDelivery()
    log_tap = open_log_tap(Tap(MAPPING, delivery, DeadLetterFile(tmp_path / "d")), [str(log)], positions)
    assert log_tap.step() == 1
    log_tap.follower.close()
    assert [p.offset for p in positions.load()] == [log.stat().st_size]
    assert [ev.order_id for ev in delivery.delivered] == ["o-1"]


class FlakyCommits:
    """A Kafka source double whose first commit fails as kafka-python's does after a rebalance."""

    def __init__(self) -> None:
        self.batches = [[rec(0, '{"id": "o-1", "what": "checkout.placed", "at": 1795341723123}')], []]
        self.commits = 0
        self.closed = False

    def poll(self, max_records: int, timeout_s: float) -> list[SourceRecord]:
        return self.batches.pop(0) if self.batches else []

    def commit(self) -> None:
        self.commits += 1
        if self.commits == 1:
            raise RuntimeError("CommitFailedError: the group has already rebalanced")

    def close(self) -> None:
        self.closed = True


def test_a_failed_kafka_commit_does_not_stop_the_tap(tmp_path: Path) -> None:
    from collectors.taps.kafka import KafkaTap

    source = FlakyCommits()
    delivery = FakeDelivery()
    kafka_tap = KafkaTap(Tap(MAPPING, delivery, DeadLetterFile(tmp_path / "d")), source)
    assert kafka_tap.step() == 1 and kafka_tap.commits == 0
    assert kafka_tap.step() == 0
    kafka_tap.tap.stop.set()
    kafka_tap.run()
    assert source.closed and len(delivery.delivered) == 1
